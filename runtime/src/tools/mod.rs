//! Tools beside the inference core (llama.cpp keeps its equivalents under `tools/`): they use
//! the core (GGUF reader and writer, kernels, sessions) but nothing in the core uses them.
//!
//! - [`quantize`]: requantizing GGUF files, with llama-quantize's per-tensor type choice.
//! - [`export_lora`]: LoRA adapters merged into the weights (llama-export-lora).
//! - [`synth`]: random-weight models of real shapes (tests and benchmarks).
//! - [`perplexity`]: perplexity of a text with llama-perplexity's method.

pub mod export_lora;
pub mod perplexity;
pub mod quantize;
pub mod synth;
