//! `tinyrt-kernels`: the compute kernels of tinyrt.
//!
//! - [`quant`]: the ggml type table and one module per quant format family (block structs
//!   bit-exact with GGUF, scalar reference quantize / dequantize / dot).
//! - [`cpu`]: kernels per ISA (scalar, AVX2, AVX-512), gathered into tables, plus the
//!   matrix products and the transformer ops (norms, RoPE, activations, attention).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod cpu;
pub mod quant;
pub mod rng;
