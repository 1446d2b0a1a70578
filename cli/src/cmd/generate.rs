//! `tinyrt generate MODEL (-p TEXT | --file PATH) [options]`: complete a prompt.
//!
//! Text streams to stdout as it is generated (the prompt is not echoed); load time and
//! prompt / generation speed go to stderr. `--json` prints one object instead (the schema of
//! `tests/golden/*.jsonl`). The contract is in `docs/CONTRACTS.md`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::chat::StopMatcher;
use tinyrt::session::{Session, Step};
use tinyrt::GenerateOptions;

use crate::args::{warn_above_trained_context, LoadArgs, SamplingArgs, SessionArgs};
use crate::error::bad_input;
use crate::output;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "file"])))]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The prompt text.
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// Read the prompt from a file (bytes verbatim; a trailing newline is kept).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Tokens to generate: 0 = process the prompt only, -1 = until end of generation or a full context.
    #[arg(
        short = 'n',
        long = "max-tokens",
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    pub max_tokens: i64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop before this text (repeatable; matched on the generated text across tokens).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Never end at an end-of-generation token (generate until -n or a full context).
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub lora: crate::args::LoraArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Raw logits to report per step in --json (default 8).
    #[arg(long)]
    pub top_logits: Option<usize>,
    /// The batch-invariant numerics of `tinyrt serve` (the same bits however the prompt is
    /// cut; llama.cpp's decode path is not used).
    #[arg(long)]
    pub batch_invariant: bool,
}

/// The prompt's bytes: `-p` as given, `--file` verbatim.
fn prompt_bytes(args: &Args) -> Result<Vec<u8>> {
    match (&args.prompt, &args.file) {
        (Some(p), _) => Ok(p.as_bytes().to_vec()),
        (None, Some(f)) => tinyrt::files::read_input(f)
            .map_err(|e| bad_input(format!("cannot read the prompt: {e}"))),
        (None, None) => Err(bad_input("give a prompt with -p TEXT or --file PATH")),
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.model.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    if args.max_tokens < -1 {
        return Err(bad_input("-n must be -1, 0 or a positive count"));
    }
    if args.stop.iter().any(String::is_empty) {
        return Err(bad_input("--stop needs a non-empty string"));
    }
    let load = args.load.options()?;
    let session_options = tinyrt::SessionOptions {
        batch_invariant: args.batch_invariant,
        ..args.session.options()?
    };
    let sampler = args.sampling.options()?;
    let text = prompt_bytes(&args)?;

    let t0 = Instant::now();
    let model = crate::args::load_model(&args.model, load)?;
    crate::args::requant::report(&model);
    let load_s = t0.elapsed().as_secs_f64();

    let tok = model.tokenizer();
    let session_options = args.session.for_model(&model, session_options)?;
    let mut session = Session::new(&model, session_options).map_err(bad_input)?;
    args.lora.apply(&model, &mut session)?;
    warn_above_trained_context(&model, session.n_ctx());
    // A prompt with more bytes than the context's tokens could ever cover is refused before
    // the (linear, but not free) tokenization.
    let least = tok.min_tokens(text.len());
    if least > session.n_ctx() {
        return Err(bad_input(format!(
            "the prompt ({} bytes, at least {least} tokens) does not fit in the context of {} (raise -c)",
            text.len(),
            session.n_ctx()
        )));
    }
    let prompt_ids = tok.encode(&text).map_err(bad_input)?;
    let top_k = args.top_logits.unwrap_or(if args.json { 8 } else { 0 });
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampler,
        top_logits: top_k,
    };

    let t1 = Instant::now();
    let mut generation = session.generate(&prompt_ids, &opts).map_err(bad_input)?;
    let prompt_s = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    let mut stream = tok.stream_decoder();
    if args.ignore_eos {
        generation.ignore_eog();
    }
    // Stop strings are matched on the decoded text; what could still be the start of one is
    // held back. `kept` is the text let through (gen_text of --json when a stop string hit).
    let mut stops = StopMatcher::new(&args.stop);
    let mut kept = String::new();
    while let Some(step) = generation.next() {
        let step = step?;
        let mut hit = false;
        if !step.is_eog && (!args.json || !stops.is_empty()) {
            let out = stops.push(&stream.push(step.id));
            hit = out.stopped;
            if args.json {
                kept.push_str(&out.text);
            } else if !out.text.is_empty() {
                output::print(&out.text)?;
            }
        }
        steps.push(step);
        if hit {
            generation.stop();
        }
    }
    let stop = generation.stop_reason().map_or("length", |r| r.as_str());
    // Under a constraint: whether the output is a complete value (false: -n cut it off).
    let satisfied = generation.constraint_satisfied();
    drop(generation);
    if satisfied == Some(false) {
        eprintln!(
            "note: -n {} cut the output before the constrained value was complete",
            args.max_tokens
        );
    }
    let gen_s = t2.elapsed().as_secs_f64();

    if args.json {
        let text_ids: Vec<u32> = steps.iter().filter(|s| !s.is_eog).map(|s| s.id).collect();
        let mut obj = json!({
            "prompt_ids": prompt_ids,
            "gen_ids": steps.iter().map(|s| s.id).collect::<Vec<_>>(),
            "gen_text": if stops.stopped() { kept } else { tok.decode(&text_ids)? },
            "steps": steps.iter().map(|s| json!({"top": s.top.iter().map(|&(id, l)| json!([id, l])).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "stop_reason": stop,
        });
        if let Some(ok) = satisfied {
            obj["constraint_satisfied"] = json!(ok);
        }
        output::println(&obj.to_string())?;
    } else {
        let mut rest = String::new();
        if !stops.stopped() {
            rest = stops.push(&stream.finish()).text;
            if !stops.stopped() {
                rest.push_str(&stops.finish());
            }
        }
        output::println(&rest)?;
    }
    let n_gen = steps.len();
    eprintln!(
        "load {:.0} ms | prompt {} tokens, {:.1} tok/s | generation {} tokens, {:.1} tok/s | {} threads, {}",
        load_s * 1e3,
        prompt_ids.len(),
        prompt_ids.len() as f64 / prompt_s.max(1e-9),
        n_gen,
        // The first step samples from the prompt's logits: n_gen - 1 forward passes.
        n_gen.saturating_sub(1) as f64 / gen_s.max(1e-9),
        model.threads(),
        session.backend_name(),
    );
    Ok(())
}
