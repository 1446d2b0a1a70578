//! Every CUDA kernel against its CPU reference (tinyrt_kernels' scalar code, or an f64
//! evaluation of the formula), on random inputs at several sizes.
//!
//! Needs a GPU: each test skips with a notice when there is no driver or device, unless
//! `TINYRT_REQUIRE_GPU=1`, where that is a failure.
#![cfg(feature = "cuda")]

mod attention;
mod common;
mod elementwise;
mod encoder;
mod graph;
mod lora;
mod norm_rope;
mod products;
mod quantize;
