//! `tinyrt perplexity MODEL -f TEXT [-c 256] [-b N] [--chunks N] [-t N] [--json]`: perplexity
//! of a text with llama-perplexity's method (see `tinyrt::perplexity`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::kv_cache::KvType;
use tinyrt::model::Device;
use tinyrt::perplexity::{perplexity, PerplexityError, PerplexityOptions};
use tinyrt::{LoadOptions, Model, SessionOptions};

use crate::error::bad_input;
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
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print {"ppl","ppl_stderr","chunks","tokens_scored"} instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub requant: super::requant::RequantArgs,
}

pub fn run(args: Args) -> Result<()> {
    if args.threads == Some(0) {
        return Err(bad_input("-t must be at least 1"));
    }
    if args.ctx_size < 4 {
        return Err(bad_input("-c must be at least 4"));
    }
    if args.batch_size == Some(0) || args.chunks == Some(0) {
        return Err(bad_input("-b and --chunks must be at least 1"));
    }
    let kv_type: KvType = args.kv_type.parse().map_err(bad_input)?;
    let device: Device = args.device.parse().map_err(bad_input)?;
    let mut text = std::fs::read(&args.file)
        .map_err(|e| bad_input(format!("cannot read {}: {e}", args.file.display())))?;
    if text.last() == Some(&b'\n') {
        text.pop();
    }

    let model = Model::load(
        &args.model,
        LoadOptions {
            device,
            threads: args.threads,
            isa: None,
            requant: args.requant.format()?,
        },
    )
    .map_err(|e| bad_input(format!("{}: {e}", args.model.display())))?;
    super::requant::report(&model);
    let tok = model.tokenizer();
    // common_tokenize(ctx, text, add_special = true): special tokens in the text stay text.
    let tokens = tok.tokenize(&text, true, false).map_err(bad_input)?;
    let options = PerplexityOptions {
        n_ctx: args.ctx_size,
        max_chunks: args.chunks,
        bos: if tok.add_bos() { tok.bos() } else { None },
        n_vocab: model.config().vocab_size,
    };
    let mut session = model
        .session(SessionOptions {
            n_ctx: Some(args.ctx_size),
            kv_type,
            n_batch: args.batch_size.unwrap_or(args.ctx_size).min(args.ctx_size),
        })
        .map_err(bad_input)?;
    if tokens.len() < 2 * args.ctx_size {
        return Err(bad_input(format!(
            "{} tokenizes to only {} tokens; -c {} needs at least {}",
            args.file.display(),
            tokens.len(),
            args.ctx_size,
            2 * args.ctx_size
        )));
    }
    eprintln!(
        "perplexity: {} tokens, {} chunks of {}, {} threads",
        tokens.len(),
        (tokens.len() / args.ctx_size).min(args.chunks.unwrap_or(usize::MAX)),
        args.ctx_size,
        model.threads()
    );
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    let result = perplexity(
        &tokens,
        &options,
        |chunk| {
            session.reset();
            session.feed_all(chunk)
        },
        |i, n, ppl| {
            let per_chunk = start.elapsed().as_secs_f64() / (i + 1) as f64;
            let _ = writeln!(
                stderr,
                "[{}/{n}] {ppl:.4} ({per_chunk:.2} s per chunk)",
                i + 1
            );
        },
    );
    let result = match result {
        Ok(r) => r,
        Err(e @ (PerplexityError::TooFewTokens { .. } | PerplexityError::BadToken { .. })) => {
            return Err(bad_input(e))
        }
        Err(e) => return Err(e.into()),
    };
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
