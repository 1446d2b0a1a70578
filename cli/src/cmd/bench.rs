//! `tinyrt bench MODEL [-p 512] [-n 128] [-t N] [-r 3] [--device cpu|cuda] [--json]`
//! (`--embed`, the default for encoders: the embeddings test of `bench_embed`): prefill
//! and decode speed, measured as llama-bench measures `pp` and `tg` (tools/llama-bench,
//! build 11434): `pp` feeds N random tokens to an empty cache in one go; `tg` decodes N tokens
//! one at a time from an empty cache, starting from BOS (or a random token) and feeding random
//! tokens; one untimed warm-up run of each, then R timed runs. Reports tokens/s (median, min,
//! max over the runs) and the process's peak resident memory.
//!
//! Before those tests it measures the time to first token (`ttft_ms`): from the start of the
//! command, before the model file is opened, through loading, a session as `generate` makes
//! one (the model's context, at most 4096), tokenizing a 16-token prompt and prefilling it, to
//! the greedy first token. Only argument parsing precedes it in the process. With
//! `--read-bandwidth` it also measures the memory read bandwidth of the benchmark's threads
//! (`read_gbps`), after the peak RSS has been read, so the probe's buffer does not count.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::kv_cache::KvType;
use tinyrt::sampler::argmax;
use tinyrt::{Model, Session, SessionOptions};

use crate::args::{KvArgs, LoadArgs};
use crate::error::bad_input;
use crate::measure::{
    measure_pp, measure_tg, peak_rss_bytes, read_bandwidth_gbps, Speed, TokenRng,
};
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Prompt tokens of the prefill test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Tokens per forward pass of the prefill test.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    #[command(flatten)]
    pub kv: KvArgs,
    #[command(flatten)]
    pub lora: crate::args::LoraArgs,
    /// Context size of the pp/tg session (default: the larger of -p and -n); at least that.
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Also measure the memory read bandwidth of the -t threads (adds "read_gbps").
    #[arg(long)]
    pub read_bandwidth: bool,
    /// Print one JSON object instead of a table: {"model", "threads", "pp": {"tokens",
    /// "tps_median", "tps_min", "tps_max", "runs", "avg_ts", "stddev_ts"}, "tg": {...}, "rss_bytes",
    /// "n_ctx", "ttft_ms", "ttft_tokens", "decode_bytes_per_token", "read_gbps" (with
    /// --read-bandwidth)}.
    #[arg(long)]
    pub json: bool,
    /// The embeddings test instead of pp/tg (the default for an encoder; a decoder needs
    /// its pooling from the file): sentences/s and tokens/s at each batch size.
    #[arg(long)]
    pub embed: bool,
    /// Texts per forward pass of the embeddings test, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub embed_batches: Vec<usize>,
    /// Texts of the embeddings test, one per line (default: a built-in mix).
    #[arg(long)]
    pub texts: Option<PathBuf>,
}

/// Text of the time-to-first-token prompt (its first [`TTFT_TOKENS`] tokens are used).
const TTFT_TEXT: &str =
    "The history of the printing press begins in the fifteenth century, when a goldsmith \
in Mainz combined movable metal type, oil-based ink and a wooden screw press into one system.";

/// Prompt tokens of the time-to-first-token test (the BOS token, if any, included).
pub const TTFT_TOKENS: usize = 16;

/// The first [`TTFT_TOKENS`] tokens of [`TTFT_TEXT`] (repeated if a tokenizer makes fewer).
fn ttft_prompt(model: &Model) -> Result<Vec<u32>> {
    let ids = model
        .tokenizer()
        .encode(TTFT_TEXT.as_bytes())
        .map_err(bad_input)?;
    if ids.is_empty() {
        return Err(bad_input(
            "the tokenizer makes no tokens of the TTFT prompt",
        ));
    }
    Ok(ids.iter().copied().cycle().take(TTFT_TOKENS).collect())
}

/// Feeds the TTFT prompt to a fresh session with `generate`'s defaults and picks the greedy
/// first token; returns the prompt length.
fn first_token(model: &Model, kv_type: KvType) -> Result<usize> {
    let prompt = ttft_prompt(model)?;
    let mut session = Session::new(
        model,
        SessionOptions {
            kv_type,
            ..SessionOptions::default()
        },
    )
    .map_err(bad_input)?;
    let first = argmax(session.feed(&prompt)?);
    std::hint::black_box(first);
    Ok(prompt.len())
}

/// Bytes of weights one decode step reads: every tensor, except the token embedding when a
/// separate `output.weight` exists (then only one row of it is read per token).
fn decode_bytes_per_token(model: &Model) -> u64 {
    let file = model.file();
    let tied = file.tensor_info("output.weight").is_none();
    file.tensors()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.data.len() as u64)
        .sum()
}

pub fn run(args: Args) -> Result<()> {
    let t_start = Instant::now();
    if args.reps == 0 || args.batch_size == 0 {
        return Err(bad_input("-r and -b must be at least 1"));
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        return Err(bad_input("nothing to measure: -p and -n are both 0"));
    }
    let n_ctx = args
        .ctx_size
        .unwrap_or(args.n_prompt.max(args.n_gen).max(1));
    if n_ctx < args.n_prompt.max(args.n_gen).max(1) {
        return Err(bad_input(format!(
            "-c {n_ctx} is smaller than -p {} / -n {}",
            args.n_prompt, args.n_gen
        )));
    }
    args.kv.choice()?;
    let model = crate::args::load_model(&args.model, args.load.options()?)?;
    let kv_type = args.kv.for_model(&model)?;
    if args.embed || model.is_encoder() {
        let texts = match &args.texts {
            Some(f) => Some(crate::args::read_texts(None, Some(f))?),
            None => None,
        };
        let name = crate::args::file_label(&args.model);
        return super::bench_embed::run(super::bench_embed::EmbedBench {
            model: &model,
            name: &name,
            texts,
            batches: &args.embed_batches,
            reps: args.reps,
            json: args.json,
        });
    }
    let ttft_tokens = first_token(&model, kv_type)?;
    let ttft_ms = t_start.elapsed().as_secs_f64() * 1e3;
    crate::args::requant::report(&model);
    let n_vocab = model.config().vocab_size;
    let tok = model.tokenizer();
    let first = if tok.add_bos() { tok.bos() } else { None };
    let mut session = Session::new(
        &model,
        SessionOptions {
            n_ctx: Some(n_ctx),
            kv_type,
            n_batch: args.batch_size,
            batch_invariant: false,
        },
    )
    .map_err(bad_input)?;
    args.lora.apply(&model, &mut session)?;
    let mut rng = TokenRng::new();

    let pp = if args.n_prompt > 0 {
        let tokens: Vec<u32> = (0..args.n_prompt).map(|_| rng.next(n_vocab)).collect();
        Some(measure_pp(&mut session, &tokens, args.reps)?)
    } else {
        None
    };
    let tg = if args.n_gen > 0 {
        let start = first.unwrap_or_else(|| rng.next(n_vocab));
        Some(measure_tg(
            &mut session,
            start,
            args.n_gen,
            args.reps,
            &mut rng,
            n_vocab,
        )?)
    } else {
        None
    };
    let rss = peak_rss_bytes();
    drop(session);
    let read_gbps = args
        .read_bandwidth
        .then(|| read_bandwidth_gbps(model.isa(), model.threads()));
    let name = crate::args::file_label(&args.model);

    if args.json {
        let obj = json!({
            "model": name,
            "threads": model.threads(),
            "pp": pp.as_ref().map(Speed::to_json),
            "tg": tg.as_ref().map(Speed::to_json),
            "rss_bytes": rss,
            "n_ctx": n_ctx,
            "ttft_ms": ttft_ms,
            "ttft_tokens": ttft_tokens,
            "decode_bytes_per_token": decode_bytes_per_token(&model),
        });
        let mut obj = obj;
        if let Some(bw) = read_gbps {
            obj["read_gbps"] = json!(bw);
        }
        return output::println(&obj.to_string());
    }
    let mut text = String::new();
    text.push_str("| model | size | threads | test | t/s (median) | min | max |\n");
    text.push_str("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    let size = model.file().file_size() as f64 / (1024.0 * 1024.0);
    for (label, speed) in [("pp", &pp), ("tg", &tg)] {
        if let Some(s) = speed {
            text.push_str(&format!(
                "| {name} | {size:.2} MiB | {} | {label}{} | {:.2} | {:.2} | {:.2} |\n",
                model.threads(),
                s.tokens,
                s.median(),
                s.min(),
                s.max()
            ));
        }
    }
    text.push_str(&format!(
        "\ntime to first token ({ttft_tokens}-token prompt, from the start of the command) {ttft_ms:.1} ms\n"
    ));
    if let Some(rss) = rss {
        text.push_str(&format!(
            "peak RSS {:.1} MiB (context {n_ctx})\n",
            rss as f64 / (1024.0 * 1024.0)
        ));
    }
    if let Some(bw) = read_gbps {
        let bytes = decode_bytes_per_token(&model) as f64;
        text.push_str(&format!(
            "memory read bandwidth, {} threads: {bw:.1} GB/s; decode bound {:.1} t/s ({:.1} MB read per token)\n",
            model.threads(),
            bw * 1e9 / bytes.max(1.0),
            bytes / 1e6
        ));
    }
    output::print(&text)
}
