//! `tinyrt perplexity MODEL -f TEXT [-c 256] [-b N] [--chunks N] [-t N] [--json]`: perplexity
//! of a text with llama-perplexity's method (see `tinyrt::perplexity`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::kv_cache::KvType;
use tinyrt::model::Device;
use tinyrt::perplexity::{perplexity, PerplexityError, PerplexityOptions, PerplexityResult};
use tinyrt::{Model, SessionOptions};

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
    let text = read_text(&args.file)?;

    let model = super::load_model(&args.model, device, args.threads, args.requant.format()?)?;
    super::requant::report(&model);
    let tokens = tokenize_text(&model, &text)?;
    let result = measure(
        &model,
        &tokens,
        &Settings {
            ctx_size: args.ctx_size,
            batch_size: args.batch_size,
            chunks: args.chunks,
            kv_type,
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

/// The text of `path` as llama-perplexity's -f reads it: one trailing newline dropped.
pub fn read_text(path: &Path) -> Result<Vec<u8>> {
    let mut text = tinyrt::files::read_input(path)
        .map_err(|e| bad_input(format!("cannot read the text: {e}")))?;
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    Ok(text)
}

/// The tokens llama-perplexity scores: `common_tokenize(ctx, text, add_special = true)`, so
/// BOS where the model adds one, and special tokens in the text stay text.
pub fn tokenize_text(model: &Model, text: &[u8]) -> Result<Vec<u32>> {
    model
        .tokenizer()
        .tokenize(text, true, false)
        .map_err(bad_input)
}

/// The options of one perplexity measurement (the command's -c, -b, --chunks, --kv-type).
pub struct Settings {
    pub ctx_size: usize,
    pub batch_size: Option<usize>,
    pub chunks: Option<usize>,
    pub kv_type: KvType,
}

/// Perplexity of `tokens` (from the text file `source`, named in messages) with
/// llama-perplexity's method, printing each chunk's running value on stderr.
pub fn measure(
    model: &Model,
    tokens: &[u32],
    settings: &Settings,
    source: &Path,
) -> Result<PerplexityResult> {
    let ctx_size = settings.ctx_size;
    let tok = model.tokenizer();
    let options = PerplexityOptions {
        n_ctx: ctx_size,
        max_chunks: settings.chunks,
        bos: if tok.add_bos() { tok.bos() } else { None },
        n_vocab: model.config().vocab_size,
    };
    if tokens.len() < 2 * ctx_size {
        return Err(bad_input(format!(
            "{} tokenizes to only {} tokens; -c {} needs at least {}",
            source.display(),
            tokens.len(),
            ctx_size,
            2 * ctx_size
        )));
    }
    super::warn_above_trained_context(model, ctx_size);
    let mut session = model
        .session(SessionOptions {
            n_ctx: Some(ctx_size),
            kv_type: settings.kv_type,
            n_batch: settings.batch_size.unwrap_or(ctx_size).min(ctx_size),
        })
        .map_err(bad_input)?;
    eprintln!(
        "perplexity: {} tokens, {} chunks of {}, {} threads",
        tokens.len(),
        (tokens.len() / ctx_size).min(settings.chunks.unwrap_or(usize::MAX)),
        ctx_size,
        model.threads()
    );
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    let result = perplexity(
        tokens,
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
    match result {
        Ok(r) => Ok(r),
        Err(e @ (PerplexityError::TooFewTokens { .. } | PerplexityError::BadToken { .. })) => {
            Err(bad_input(e))
        }
        Err(e) => Err(e.into()),
    }
}
