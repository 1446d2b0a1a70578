//! `tinyrt bench MODEL [-p 512] [-n 128] [-t THREADS] [-r REPS] [--device cpu|cuda] [--json]`:
//! prompt processing (pp: one batch of `-p` tokens) and text generation (tg: `-n` tokens one
//! at a time) in tokens/s, measured like llama-bench (a warm-up run, then `-r` repetitions
//! from an empty context, synthetic token ids).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::kv_cache::KvType;
use tinyrt::model::Device;
use tinyrt::{LoadOptions, Model, Session, SessionOptions};

use crate::error::bad_input;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Prompt tokens for the pp test (0 = skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0 = skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object: {"pp": {"n", "runs", "avg_ts"}, "tg": {...}, "rss_bytes", ...}.
    #[arg(long)]
    pub json: bool,
}

/// Deterministic token ids spread over the vocabulary.
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 17) % vocab) as u32).collect()
}

fn run_pp(s: &mut Session, toks: &[u32]) -> Result<f64> {
    s.reset();
    let t = Instant::now();
    s.feed(toks).map_err(bad_input)?;
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

fn run_tg(s: &mut Session, toks: &[u32]) -> Result<f64> {
    s.reset();
    let t = Instant::now();
    for &tok in toks {
        s.feed(&[tok]).map_err(bad_input)?;
    }
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

/// Peak resident memory of this process (`VmHWM`), when the OS tells.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn stats(runs: &[f64]) -> (f64, f64) {
    let avg = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let var = runs.iter().map(|r| (r - avg) * (r - avg)).sum::<f64>() / runs.len().max(1) as f64;
    (avg, var.sqrt())
}

/// One timed test: runs the tokens through the session and returns tokens per second.
type BenchFn = fn(&mut Session, &[u32]) -> Result<f64>;
pub fn run(args: Args) -> Result<()> {
    if args.model.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    if args.reps == 0 {
        return Err(bad_input("-r must be at least 1"));
    }
    if args.threads == Some(0) {
        return Err(bad_input("-t must be at least 1"));
    }
    let kv_type: KvType = args.kv_type.parse().map_err(bad_input)?;
    let device: Device = args.device.parse().map_err(bad_input)?;
    let model = Model::load(
        &args.model,
        LoadOptions {
            device,
            threads: args.threads,
            isa: None,
        },
    )
    .map_err(|e| bad_input(format!("{}: {e}", args.model.display())))?;
    let vocab = model.config().vocab_size;
    let n_ctx = args.n_prompt.max(args.n_gen).max(1);
    let mut session = model
        .session(SessionOptions {
            n_ctx: Some(n_ctx),
            kv_type,
            n_batch: args.n_prompt.max(1),
        })
        .map_err(bad_input)?;
    let mut results = serde_json::Map::new();
    let mut lines = Vec::new();
    let tests: [(&str, usize, BenchFn); 2] =
        [("pp", args.n_prompt, run_pp), ("tg", args.n_gen, run_tg)];
    for (name, n, f) in tests {
        if n == 0 {
            continue;
        }
        let toks = tokens(n, vocab);
        f(&mut session, &toks)?; // warm-up
        let runs = (0..args.reps)
            .map(|_| f(&mut session, &toks))
            .collect::<Result<Vec<f64>>>()?;
        let (avg, sd) = stats(&runs);
        results.insert(
            name.into(),
            json!({"n": n, "runs": runs, "avg_ts": avg, "stddev_ts": sd}),
        );
        lines.push(format!("| {name}{n} | {avg:.2} ± {sd:.2} |"));
    }
    let arch = model.config().arch.clone();
    let threads = model.threads();
    let backend = session.backend_name();
    if args.json {
        results.insert("model".into(), args.model.display().to_string().into());
        results.insert("arch".into(), arch.into());
        results.insert("threads".into(), threads.into());
        results.insert("backend".into(), backend.into());
        results.insert("rss_bytes".into(), peak_rss_bytes().into());
        output::println(&serde_json::Value::Object(results).to_string())
    } else {
        let mut text = format!(
            "{} ({arch}, {backend}, {threads} threads)\n| test | t/s |\n| --- | ---: |\n",
            args.model.display()
        );
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        output::print(&text)
    }
}
