//! `tinyrt-cuda`: hand-written CUDA kernels for tinyrt, compiled with NVRTC and launched
//! through cudarc (feature `cuda`). Without the feature this crate is empty.
