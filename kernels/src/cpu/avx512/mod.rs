// AVX-512 intrinsics are stable since Rust 1.89, the workspace's `rust-version`.
pub mod dot;
pub(crate) mod gemm;
pub mod ops;
