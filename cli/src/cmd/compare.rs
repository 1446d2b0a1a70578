//! `tinyrt compare MODEL... [-f TEXT] [-p PROMPT] [--requant none,nf4] [-n N] [-r N] [-c N]
//! [--chunks N] [-t N] [--json]`: one row per model (or per model × requantization) with
//! parameters, file size, resident memory, load time, prefill tokens/s, decode latency and
//! perplexity on TEXT — the size/latency/quality table to pick a model by.
//!
//! The measurements are those of `tinyrt bench` and `tinyrt perplexity` (`crate::measure`: llama-bench's `pp` and `tg` tests: median
//! of `-r` timed runs after one warm-up, and llama-perplexity's method);
//! this module only loads each model in turn and lays the numbers out. Prefill feeds the
//! tokenized PROMPT; decode feeds `-n` tokens one at a time from an empty cache. Rows run one
//! after another in this process: each model is dropped before the next loads, and the peak
//! resident size is restarted before each load (Linux `clear_refs`), so each row's memory is
//! its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value as Json};
use tinyrt::gguf::GgufFile;
use tinyrt::kernels::quant::QuantFormat;
use tinyrt::kv_cache::KvType;
use tinyrt::tools::perplexity::PerplexityResult;
use tinyrt::tools::quantize::Target;
use tinyrt::{LoadOptions, Session, SessionOptions};

use crate::args::{open_gguf, CpuArgs};
use crate::error::bad_input;
use crate::measure::{self, Settings, Speed, TokenRng};
use crate::output;

/// The prefill prompt when `-p` is not given: plain English prose of about 100 tokens.
const DEFAULT_PROMPT: &str = "The history of computing is a story of making machines smaller, \
cheaper and faster. Early computers filled whole rooms and needed teams of engineers to keep \
them running. Today a phone in a pocket holds more memory than all of them together, and a small \
language model can answer questions on a laptop without a network. Choosing such a model means \
weighing its size against its speed and the quality of what it writes.";

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model files, one row each (per --requant entry).
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Text file for the perplexity column (llama-perplexity's -f); without it, no perplexity.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Prompt text of the prefill measurement (default: a built-in paragraph of ~100 tokens).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Tokens of the decode measurement.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    /// Timed repetitions of the prefill and decode measurements.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Comma-separated in-memory conversions, one row per model each: `none` (as stored) or
    /// a `--requant` format (nf4).
    #[arg(long, value_name = "LIST", default_value = "none")]
    pub requant: String,
    /// Tokens per perplexity chunk (llama-perplexity's -c).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 256)]
    pub ctx_size: usize,
    /// Score only the first N perplexity chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    #[command(flatten)]
    pub cpu: CpuArgs,
    // The adapters apply to every model (each must have the adapter's shapes).
    #[command(flatten)]
    pub lora: crate::args::LoraArgs,
    /// Print one JSON object {"threads", "text", "ctx_size", "prompt", "rows": [...]} instead of
    /// a Markdown table.
    #[arg(long)]
    pub json: bool,
}

/// One measured row.
struct Row {
    path: PathBuf,
    /// The stored type (`general.file_type`'s name, else the type holding most bytes).
    stored: String,
    requant: Option<QuantFormat>,
    params: u64,
    file_bytes: u64,
    /// Bytes of the matrices as the kernels read them (after requantization).
    matmul_bytes: Option<u64>,
    rss_after_load: Option<u64>,
    peak_rss: Option<u64>,
    load_s: f64,
    threads: usize,
    prefill: Speed,
    decode: Speed,
    ppl: Option<PerplexityResult>,
}

impl Row {
    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    fn type_label(&self) -> String {
        match self.requant {
            None => self.stored.clone(),
            Some(f) => format!("{} → {}", self.stored, f.name()),
        }
    }

    fn decode_ms(&self) -> f64 {
        1000.0 / self.decode.median().max(1e-9)
    }

    fn to_json(&self) -> Json {
        json!({
            "model": self.name(),
            "path": self.path.display().to_string(),
            "type": self.stored,
            "requant": self.requant.map(|f| f.name()),
            "params": self.params,
            "file_bytes": self.file_bytes,
            "matmul_bytes": self.matmul_bytes,
            "rss_after_load_bytes": self.rss_after_load,
            "peak_rss_bytes": self.peak_rss,
            "load_s": self.load_s,
            "threads": self.threads,
            "prefill_tokens": self.prefill.tokens,
            "prefill_tps": self.prefill.median(),
            "prefill_runs": self.prefill.runs,
            "decode_tokens": self.decode.tokens,
            "decode_tps": self.decode.median(),
            "decode_ms_per_token": self.decode_ms(),
            "decode_runs": self.decode.runs,
            "ppl": self.ppl.as_ref().map(|p| p.ppl),
            "ppl_stderr": self.ppl.as_ref().and_then(|p| p.ppl_stderr),
            "ppl_chunks": self.ppl.as_ref().map(|p| p.chunks),
            "ppl_tokens_scored": self.ppl.as_ref().map(|p| p.tokens_scored),
        })
    }
}

/// `--requant`'s list: `None` for `none`, else a format.
fn parse_requant_list(list: &str) -> Result<Vec<Option<QuantFormat>>> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let fmt = match item.to_ascii_lowercase().as_str() {
            "none" | "stored" => None,
            "" => return Err(bad_input(format!("--requant {list:?}: empty entry"))),
            _ => Some(crate::args::requant::parse_format(item)?),
        };
        if !out.contains(&fmt) {
            out.push(fmt);
        }
    }
    Ok(out)
}

/// The name of the file's `general.file_type`, else of the type holding most tensor bytes.
fn stored_type(file: &GgufFile) -> String {
    let ftype = file
        .metadata()
        .get("general.file_type")
        .and_then(|v| v.as_integer());
    if let Some(ft) = ftype {
        if let Some(t) = Target::NAMES
            .iter()
            .filter_map(|n| Target::parse(n).ok())
            .find(|t| i128::from(t.ftype()) == ft)
        {
            return t.name().to_owned();
        }
    }
    let mut bytes: Vec<(String, u64)> = Vec::new();
    for t in file.tensor_infos() {
        let name = t.ty.name().to_owned();
        match bytes.iter_mut().find(|(n, _)| *n == name) {
            Some((_, b)) => *b += t.size,
            None => bytes.push((name, t.size)),
        }
    }
    bytes
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map(|(n, _)| n)
        .unwrap_or_else(|| "?".to_owned())
}

fn measure_row(
    args: &Args,
    path: &Path,
    requant: Option<QuantFormat>,
    text: Option<&[u8]>,
    prompt: &str,
) -> Result<Row> {
    let options = LoadOptions {
        threads: args.cpu.threads()?,
        isa: args.cpu.isa()?,
        requant,
        ..LoadOptions::default()
    };
    let peak_reset = measure::reset_peak_rss();
    let start = Instant::now();
    let model = crate::args::load_model(path, options)?;
    let load_s = start.elapsed().as_secs_f64();
    let rss_after_load = measure::rss_bytes();
    crate::args::requant::report(&model);

    let file = model.file();
    let params = file
        .tensor_infos()
        .iter()
        .fold(0u64, |n, t| n.saturating_add(t.n_elements()));
    let matmul_bytes = model.requant_report().map(|r| r.bytes_after);

    let tok = model.tokenizer();
    let prompt_tokens = tok
        .tokenize(prompt.as_bytes(), true, false)
        .map_err(bad_input)?;
    if prompt_tokens.is_empty() {
        return Err(bad_input("the prompt tokenizes to no tokens"));
    }
    let n_vocab = model.config().vocab_size;
    let mut session = Session::new(
        &model,
        SessionOptions {
            n_ctx: Some(prompt_tokens.len().max(args.n_gen).max(1)),
            kv_type: KvType::F16,
            n_batch: prompt_tokens.len(),
            batch_invariant: false,
        },
    )
    .map_err(bad_input)?;
    let adapters = args.lora.load(file)?;
    if !adapters.is_empty() {
        session.set_adapters(&adapters).map_err(bad_input)?;
    }
    let prefill = measure::measure_pp(&mut session, &prompt_tokens, args.reps)?;
    let mut rng = TokenRng::new();
    let decode = measure::measure_tg(
        &mut session,
        prompt_tokens[0],
        args.n_gen,
        args.reps,
        &mut rng,
        n_vocab,
    )?;
    drop(session);

    let ppl = match (text, &args.file) {
        (Some(text), Some(source)) => {
            let tokens = measure::tokenize_text(&model, text)?;
            let settings = Settings {
                ctx_size: args.ctx_size,
                batch_size: None,
                chunks: args.chunks,
                kv_type: KvType::F16,
                adapters,
            };
            Some(measure::measure_perplexity(
                &model, &tokens, &settings, source,
            )?)
        }
        _ => None,
    };
    Ok(Row {
        path: path.to_owned(),
        stored: stored_type(file),
        requant,
        params,
        file_bytes: file.file_size(),
        matmul_bytes,
        rss_after_load,
        peak_rss: if peak_reset {
            measure::peak_rss_bytes()
        } else {
            None
        },
        load_s,
        threads: model.threads(),
        prefill,
        decode,
        ppl,
    })
}

pub fn run(args: Args) -> Result<()> {
    args.cpu.threads()?;
    args.cpu.isa()?;
    if args.reps == 0 || args.n_gen == 0 {
        return Err(bad_input("-r and -n must be at least 1"));
    }
    if args.ctx_size < 4 {
        return Err(bad_input("-c must be at least 4"));
    }
    if args.chunks == Some(0) {
        return Err(bad_input("--chunks must be at least 1"));
    }
    let requants = parse_requant_list(&args.requant)?;
    let text = match &args.file {
        Some(f) => Some(measure::read_text(f)?),
        None => None,
    };
    // Fail on a missing or malformed file before spending minutes on the others.
    for m in &args.models {
        open_gguf(m)?;
    }
    let prompt = args.prompt.as_deref().unwrap_or(DEFAULT_PROMPT);
    if prompt.is_empty() {
        return Err(bad_input("-p: the prompt is empty"));
    }

    let total = args.models.len() * requants.len();
    let mut rows = Vec::with_capacity(total);
    for m in &args.models {
        for &rq in &requants {
            eprintln!(
                "compare [{}/{total}]: {}{}",
                rows.len() + 1,
                m.display(),
                rq.map(|f| format!(" --requant {}", f.name()))
                    .unwrap_or_default()
            );
            rows.push(measure_row(&args, m, rq, text.as_deref(), prompt)?);
        }
    }

    if args.json {
        let obj = json!({
            "threads": rows.first().map(|r| r.threads),
            "text": args.file.as_ref().map(|f| f.display().to_string()),
            "ctx_size": args.ctx_size,
            "prompt": prompt,
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        return output::println(&obj.to_string());
    }
    output::print(&markdown(&rows))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn opt_mib(b: Option<u64>) -> String {
    b.map(mib).unwrap_or_else(|| "?".to_owned())
}

/// Parameter counts as `134.5M`.
fn human_count(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        n.to_string()
    }
}

/// The Markdown table: a header, a separator and one line per row.
fn markdown(rows: &[Row]) -> String {
    let mut t = String::from(
        "| model | type | params | file size | RSS load / peak | load s | prefill t/s | decode ms/tok | PPL |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let ppl = match &r.ppl {
            Some(p) => match p.ppl_stderr {
                Some(se) => format!("{:.4} ± {:.4} ({} chunks)", p.ppl, se, p.chunks),
                None => format!("{:.4} ({} chunks)", p.ppl, p.chunks),
            },
            None => "-".to_owned(),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {:.2} | {:.1} | {:.2} | {} |\n",
            r.name(),
            r.type_label(),
            human_count(r.params),
            mib(r.file_bytes),
            opt_mib(r.rss_after_load),
            opt_mib(r.peak_rss),
            r.load_s,
            r.prefill.median(),
            r.decode_ms(),
            ppl
        ));
    }
    t
}
