//! `tinyrt bench MODEL [-p 512] [-n 128] [-t N] [-r 3] [--device cpu|cuda] [--json]`: prefill
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
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value as Json};
use tinyrt::kernels::cpu::Kernels;
use tinyrt::kv_cache::KvType;
use tinyrt::model::Device;
use tinyrt::sampler::argmax;
use tinyrt::{Model, Session, SessionOptions};

use crate::error::bad_input;
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
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Tokens per forward pass of the prefill test.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Context size of the pp/tg session (default: the larger of -p and -n); at least that.
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Also measure the memory read bandwidth of the -t threads (adds "read_gbps").
    #[arg(long)]
    pub read_bandwidth: bool,
    /// Device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object instead of a table: {"model", "threads", "pp": {"tokens",
    /// "tps_median", "tps_min", "tps_max", "runs", "avg_ts", "stddev_ts"}, "tg": {...}, "rss_bytes",
    /// "n_ctx", "ttft_ms", "ttft_tokens", "decode_bytes_per_token", "read_gbps" (with
    /// --read-bandwidth)}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub requant: super::requant::RequantArgs,
}

/// Tokens/s of one test over its runs.
#[derive(Clone, Debug)]
pub struct Speed {
    pub tokens: usize,
    pub runs: Vec<f64>,
}

impl Speed {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }
    /// Mean and standard deviation, as llama-bench reports them.
    pub fn mean_stddev(&self) -> (f64, f64) {
        let n = self.runs.len().max(1) as f64;
        let mean = self.runs.iter().sum::<f64>() / n;
        let var = self
            .runs
            .iter()
            .map(|r| (r - mean) * (r - mean))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }
    fn to_json(&self) -> Json {
        let (mean, sd) = self.mean_stddev();
        json!({
            "tokens": self.tokens,
            "n": self.tokens,
            "avg_ts": mean,
            "stddev_ts": sd,
            "tps_median": self.median(),
            "tps_min": self.min(),
            "tps_max": self.max(),
            "runs": self.runs,
        })
    }
}

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`), if known.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's peak resident set size (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

/// The process's resident set size now (Linux `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS")
}

/// Restart the peak resident set size from the current one (Linux: writing 5 to
/// `/proc/self/clear_refs`, see proc(5)), so that [`peak_rss_bytes`] covers what follows.
/// Returns false where that is not possible; the peak then covers the whole process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// xorshift64*: the random token ids of the tests (llama-bench uses `std::rand()`).
pub struct TokenRng(u64);

impl TokenRng {
    /// The fixed seed every run starts from, so runs feed the same tokens.
    pub fn new() -> TokenRng {
        TokenRng(0x5eed_1234_abcd_0001)
    }

    pub fn next(&mut self, n_vocab: usize) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % n_vocab.max(1) as u32
    }
}

fn run_pp(session: &mut Session, tokens: &[u32]) -> Result<f64> {
    session.reset();
    let t = Instant::now();
    session.feed(tokens)?;
    Ok(tokens.len() as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

fn run_tg(
    session: &mut Session,
    first: u32,
    n: usize,
    rng: &mut TokenRng,
    n_vocab: usize,
) -> Result<f64> {
    session.reset();
    let mut token = first;
    let t = Instant::now();
    for _ in 0..n {
        session.feed(&[token])?;
        token = rng.next(n_vocab);
    }
    Ok(n as f64 / t.elapsed().as_secs_f64().max(1e-9))
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
    let mut session = model
        .session(SessionOptions {
            kv_type,
            ..SessionOptions::default()
        })
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

/// Read bandwidth in GB/s (1e9 bytes/s) of `threads` threads each reading its part of a
/// 1 GiB buffer (best of 3 passes), with the widest vector loads this CPU has.
pub fn read_bandwidth_gbps(threads: usize) -> f64 {
    const BYTES: usize = 1 << 30;
    let threads = threads.max(1);
    let k = Kernels::best();
    // Non-zero, so every page is really backed (not the shared zero page).
    let buf = vec![1u8; BYTES];
    let part = buf.len().div_ceil(threads);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(part)
                .map(|c| s.spawn(move || k.read_probe(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        best = best.min(t.elapsed());
        std::hint::black_box(sum);
    }
    BYTES as f64 / best.as_secs_f64().max(1e-9) / 1e9
}

/// llama-bench's `pp` test: `tokens` fed to an empty cache in one go, one untimed warm-up run
/// then `reps` timed runs.
pub fn measure_pp(session: &mut Session, tokens: &[u32], reps: usize) -> Result<Speed> {
    run_pp(session, tokens)?; // warm-up
    let runs = (0..reps)
        .map(|_| run_pp(session, tokens))
        .collect::<Result<Vec<_>>>()?;
    Ok(Speed {
        tokens: tokens.len(),
        runs,
    })
}

/// llama-bench's `tg` test: `n` tokens decoded one at a time from an empty cache, starting
/// with `first` and feeding random tokens; one untimed warm-up step, then `reps` timed runs.
pub fn measure_tg(
    session: &mut Session,
    first: u32,
    n: usize,
    reps: usize,
    rng: &mut TokenRng,
    n_vocab: usize,
) -> Result<Speed> {
    run_tg(session, first, 1, rng, n_vocab)?; // warm-up
    let runs = (0..reps)
        .map(|_| run_tg(session, first, n, rng, n_vocab))
        .collect::<Result<Vec<_>>>()?;
    Ok(Speed { tokens: n, runs })
}

pub fn run(args: Args) -> Result<()> {
    let t_start = Instant::now();
    if args.threads == Some(0) {
        return Err(bad_input("-t must be at least 1"));
    }
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
    let kv_type: KvType = args.kv_type.parse().map_err(bad_input)?;
    let device: Device = args.device.parse().map_err(bad_input)?;
    let model = super::load_model(&args.model, device, args.threads, args.requant.format()?)?;
    let ttft_tokens = first_token(&model, kv_type)?;
    let ttft_ms = t_start.elapsed().as_secs_f64() * 1e3;
    super::requant::report(&model);
    let n_vocab = model.config().vocab_size;
    let tok = model.tokenizer();
    let first = if tok.add_bos() { tok.bos() } else { None };
    let mut session = model
        .session(SessionOptions {
            n_ctx: Some(n_ctx),
            kv_type,
            n_batch: args.batch_size,
        })
        .map_err(bad_input)?;
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
        .then(|| read_bandwidth_gbps(model.threads()));
    let name = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

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
