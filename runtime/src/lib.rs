//! `tinyrt`: a from-scratch GGUF inference runtime for small language models.
#![deny(unsafe_op_in_unsafe_fn)]

pub use tinyrt_kernels as kernels;

pub mod chat;
pub mod gguf;
pub mod perplexity;
pub mod quantize;
pub mod synth;
pub mod tokenizer;
