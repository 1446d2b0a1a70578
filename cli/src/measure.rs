//! Measuring code shared by `bench`, `perplexity` and `compare`: speed as llama-bench measures
//! it (`pp`, `tg`), the process's memory, the memory read bandwidth, and perplexity with
//! llama-perplexity's method over a session.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value as Json};
use tinyrt::kernels::cpu::{Isa, Kernels};
use tinyrt::kernels::rng::SplitMix64;
use tinyrt::kv_cache::KvType;
use tinyrt::tools::perplexity::{perplexity, PerplexityError, PerplexityOptions, PerplexityResult};
use tinyrt::{Model, Session, SessionOptions};

use crate::args::warn_above_trained_context;
use crate::error::bad_input;

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
    pub fn to_json(&self) -> Json {
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

/// The random token ids of the tests (llama-bench uses `std::rand()`), from the workspace's
/// seeded generator.
pub struct TokenRng(SplitMix64);

impl TokenRng {
    /// The fixed seed every run starts from, so runs feed the same tokens.
    pub fn new() -> TokenRng {
        TokenRng(SplitMix64::new(0x5eed_1234_abcd_0001))
    }

    pub fn next(&mut self, n_vocab: usize) -> u32 {
        self.0.below(n_vocab as u64) as u32
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

/// Read bandwidth in GB/s (1e9 bytes/s) of `threads` threads each reading its part of a
/// 1 GiB buffer (best of 3 passes), with the widest vector loads of `isa` (the kernels' one
/// read probe, `Kernels::read_probe`).
pub fn read_bandwidth_gbps(isa: Isa, threads: usize) -> f64 {
    const BYTES: usize = 1 << 30;
    let threads = threads.max(1);
    // The model's ISA, which the CPU was checked to support when the model was loaded.
    let Some(k) = Kernels::get(isa) else {
        return 0.0;
    };
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
    /// LoRA adapters with their scales (`--lora`), empty for the base alone.
    pub adapters: Vec<(std::sync::Arc<tinyrt::adapters::LoraAdapter>, f32)>,
}

/// Perplexity of `tokens` (from the text file `source`, named in messages) with
/// llama-perplexity's method, printing each chunk's running value on stderr.
pub fn measure_perplexity(
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
    warn_above_trained_context(model, ctx_size);
    let mut session = Session::new(
        model,
        SessionOptions {
            n_ctx: Some(ctx_size),
            kv_type: settings.kv_type,
            n_batch: settings.batch_size.unwrap_or(ctx_size).min(ctx_size),
            batch_invariant: false,
        },
    )
    .map_err(bad_input)?;
    if !settings.adapters.is_empty() {
        session
            .set_adapters(&settings.adapters)
            .map_err(bad_input)?;
    }
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
