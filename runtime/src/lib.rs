//! `tinyrt`: a from-scratch GGUF inference runtime for small language models.
//!
//! Load a model once ([`Model::load`]), open a [`Session`] (its own KV cache), then feed
//! tokens and read logits, or generate:
//!
//! ```
//! use tinyrt::{GenerateOptions, LoadOptions, Model, SamplerOptions, Session, SessionOptions};
//!
//! let model = Model::load("../tests/fixtures/llama-tiny-q8_0.gguf", LoadOptions::default())?;
//! let mut session = Session::new(&model, SessionOptions::default())?;
//!
//! // Logits of the next token after a prompt.
//! let prompt = [504, 1408, 1201, 282, 426, 98, 524, 314];
//! let logits = session.feed(&prompt)?;
//! assert_eq!(logits.len(), model.config().vocab_size);
//!
//! // Greedy generation of up to 8 tokens after the same prompt.
//! session.reset();
//! let opts = GenerateOptions {
//!     max_tokens: 8,
//!     sampler: SamplerOptions::greedy(),
//!     ..GenerateOptions::default()
//! };
//! let ids: Vec<u32> = session
//!     .generate(&prompt, &opts)?
//!     .map(|step| step.map(|s| s.id))
//!     .collect::<Result<_, _>>()?;
//! assert!(!ids.is_empty() && ids.len() <= 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules, from the file up: [`files`] (atomic writes, bounded reads), [`gguf`] (the file
//! format: reader, writer, mapped storage), [`hf`] (Hugging Face folders as llama.cpp's GGUF),
//! [`config`] (hyperparameters), [`tokenizer`], [`arch`] (one file per architecture, written
//! against the [`backend::Backend`] trait), [`backend`] (the CPU, CUDA and dump
//! implementations of the ops and their weights), [`kv_cache`], [`sampler`], [`model`]
//! (loading) and [`session`] (feeding tokens and generating); [`chat`] (templates, turns, stop
//! strings) on top, and [`tools`] (quantize, synth, perplexity) beside the core.
//! `docs/ARCHITECTURE.md` has the map.
#![deny(unsafe_op_in_unsafe_fn)]

pub use tinyrt_kernels as kernels;

pub mod adapters;
pub mod arch;
pub mod backend;
pub mod batch;
pub mod chat;
pub mod config;
pub mod constraint;
pub mod embed;
pub mod files;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
pub mod model;
pub mod sampler;
pub mod session;
pub mod tokenizer;
pub mod tools;

pub use model::{load_tokenizer, open_file, Device, LoadOptions, LoadProgress, Model, ModelError};
pub use sampler::{Sampler, SamplerOptions};
pub use session::{
    EncoderInput, GenerateOptions, Generation, Session, SessionError, SessionOptions, Step,
    StopReason,
};
