//! One module per subcommand, each with an `Args` struct and a `run`. Shared flags are in
//! `crate::args`, shared measuring code in `crate::measure`; commands never import each other.

pub mod bench;
pub mod bench_embed;
pub mod chat;
pub mod classify;
pub mod compare;
pub mod convert;
pub mod convert_lora;
pub mod embed;
pub mod export_lora;
pub mod generate;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod rerank;
pub mod serve;
pub mod synth;
pub mod tokenize;
