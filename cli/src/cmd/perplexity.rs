//! `tinyrt perplexity MODEL -f TEXT [-c 256] [-b N] [--chunks N] [-t N] [--json]`: perplexity
//! of a text with llama-perplexity's method (see `tinyrt::tools::perplexity`).

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::args::{KvArgs, LoadArgs};
use crate::error::bad_input;
use crate::measure::{measure_perplexity, read_text, tokenize_text, Settings};
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The text file (one trailing newline is dropped, as llama-perplexity's -f does).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: PathBuf,
    /// Tokens per chunk (llama-perplexity's -c).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 256)]
    pub ctx_size: usize,
    /// Tokens per forward pass (default: the chunk size).
    #[arg(short = 'b', long = "batch-size")]
    pub batch_size: Option<usize>,
    /// Score only the first N chunks (llama-perplexity's --chunks).
    #[arg(long)]
    pub chunks: Option<usize>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub kv: KvArgs,
    #[command(flatten)]
    pub lora: crate::args::LoraArgs,
    /// Print {"ppl","ppl_stderr","chunks","tokens_scored"} instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.ctx_size < 4 {
        return Err(bad_input("-c must be at least 4"));
    }
    if args.batch_size == Some(0) || args.chunks == Some(0) {
        return Err(bad_input("-b and --chunks must be at least 1"));
    }
    let load = args.load.options()?;
    args.kv.choice()?;
    let text = read_text(&args.file)?;

    let model = crate::args::load_model(&args.model, load)?;
    let kv_type = args.kv.for_model(&model)?;
    crate::args::requant::report(&model);
    let adapters = args.lora.load(model.file())?;
    let tokens = tokenize_text(&model, &text)?;
    let result = measure_perplexity(
        &model,
        &tokens,
        &Settings {
            ctx_size: args.ctx_size,
            batch_size: args.batch_size,
            chunks: args.chunks,
            kv_type,
            adapters,
        },
        &args.file,
    )?;
    if args.json {
        output::println(
            &json!({
                "ppl": result.ppl,
                "ppl_stderr": result.ppl_stderr,
                "chunks": result.chunks,
                "tokens_scored": result.tokens_scored,
            })
            .to_string(),
        )
    } else {
        match result.ppl_stderr {
            Some(se) => output::println(&format!("PPL = {:.4} +/- {:.5}", result.ppl, se)),
            None => output::println(&format!("PPL = {:.4}", result.ppl)),
        }
    }
}
