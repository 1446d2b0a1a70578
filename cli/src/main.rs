//! The `tinyrt` command-line interface.
//!
//! Each subcommand is a module in `cmd/` with an `Args` struct (clap derive) and a
//! `run(Args) -> anyhow::Result<()>`; adding one is a variant in [`Command`] and an arm in
//! [`run`]. Errors end as one line on stderr: exit status 2 for bad usage or bad input
//! (see [`error::bad_input`]), 1 for other failures, 0 quietly when stdout was closed.

// A failed write to stderr (closed, full) must not turn a success into a panic: within this
// crate `eprintln!`/`eprint!` are these, which drop the error (std's panic on it).
macro_rules! eprintln {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr());
    }};
    ($($arg:tt)+) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)+);
    }};
}
macro_rules! eprint {
    ($($arg:tt)+) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)+);
    }};
}

mod args;
mod cmd;
mod error;
mod measure;
mod output;
mod signals;

use clap::{Parser, Subcommand};

/// Counts the allocations of a chat-template render against its budget
/// (`tinyrt::kernels::alloc`): a hostile template fails with one error instead of exhausting
/// memory.
#[global_allocator]
static ALLOC: tinyrt::kernels::alloc::BudgetAlloc = tinyrt::kernels::alloc::BudgetAlloc;

#[derive(Parser)]
#[command(
    name = "tinyrt",
    version,
    about = "Run small language models stored as GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, hyperparameters, tokenizer, tensor types and memory needs.
    Info(cmd::info::Args),
    /// Print the token ids of a text (the model's BOS rule, special tokens recognised).
    Tokenize(cmd::tokenize::Args),
    /// Requantize a GGUF file to another weight type (llama-quantize's per-tensor choices).
    Quantize(cmd::quantize::Args),
    /// Merge LoRA adapters into a model's weights, each tensor in its own type again.
    ExportLora(cmd::export_lora::Args),
    /// Write a random-weight model of a real model's shape.
    Synth(cmd::synth::Args),
    /// Write a PEFT LoRA folder as a llama.cpp GGUF adapter (f32).
    ConvertLora(cmd::convert_lora::Args),
    /// Write a Hugging Face model folder as GGUF (llama.cpp's conversion, or quantized).
    Convert(cmd::convert::Args),
    /// Complete a prompt (streams text; --json for ids and logits).
    Generate(cmd::generate::Args),
    /// Classification logits (and labels) from an encoder with a classification head.
    Classify(cmd::classify::Args),
    /// Score documents against a query with a cross-encoder, best first.
    Rerank(cmd::rerank::Args),
    /// Sentence embeddings from an encoder (BERT), one per input.
    Embed(cmd::embed::Args),
    /// Talk with a model: a REPL on a terminal, one user turn per input line otherwise.
    Chat(cmd::chat::Args),
    /// Perplexity of a text, with llama-perplexity's method.
    Perplexity(cmd::perplexity::Args),
    /// An OpenAI-compatible HTTP server (chat, completions, embeddings) with continuous batching.
    Serve(cmd::serve::Args),
    /// Prefill and decode speed (llama-bench's pp and tg).
    Bench(cmd::bench::Args),
    /// One table of size, memory, speed and perplexity for several models (or requantizations).
    Compare(cmd::compare::Args),
}

fn run(command: Command) -> anyhow::Result<()> {
    // Read once, at the edge: a bad value is an error for every command, not a warning.
    tinyrt::kernels::cpu::Isa::from_env().map_err(error::bad_input)?;
    match command {
        Command::Info(args) => cmd::info::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
        Command::ExportLora(args) => cmd::export_lora::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::ConvertLora(args) => cmd::convert_lora::run(args),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Embed(args) => cmd::embed::run(args),
        Command::Classify(args) => cmd::classify::run(args),
        Command::Rerank(args) => cmd::rerank::run(args),
        Command::Perplexity(args) => cmd::perplexity::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Compare(args) => cmd::compare::run(args),
    }
}

fn main() {
    error::install_panic_hook();
    signals::install();
    // llama-server spells the slot count `-np`: a two-letter short flag clap cannot declare.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "serve") {
        for a in argv.iter_mut().skip(2) {
            if a == "-np" {
                *a = "--parallel".into();
            }
        }
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => error::exit_on_usage_error(e),
    };
    if let Err(e) = run(cli.command) {
        error::exit_on_error(&e);
    }
}
