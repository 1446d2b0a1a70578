//! `tinyrt synth SHAPE TYPE OUT.gguf [--tokenizer-from FILE | --vocab N] [--seed S] [-t N]`:
//! writes a random-weight model of a real model's shape (see `tinyrt::tools::synth`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tinyrt::tools::quantize::Target;
use tinyrt::tools::synth::{self, Shape, SynthOptions, TokenizerSource, SHAPE_NAMES};

use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The shape: smollm2-135m, gemma3-270m, tinyllama-1.1b, phi2-2.7b, llama-7b or tiny.
    pub shape: String,
    /// Weight type: q4_0, q4_k_m, q8_0, f16 (or any type `tinyrt quantize` accepts).
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// The GGUF file to write.
    pub out: PathBuf,
    /// Copy the tokenizer (all `tokenizer.*` keys) from this GGUF file.
    #[arg(long, value_name = "FILE", conflicts_with = "vocab")]
    pub tokenizer_from: Option<PathBuf>,
    /// Synthesize a byte-level BPE vocabulary of N tokens (default: the shape's vocabulary size).
    #[arg(long, value_name = "N")]
    pub vocab: Option<u64>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let shape = Shape::by_name(&args.shape).ok_or_else(|| {
        bad_input(format!(
            "unknown shape '{}' (expected one of: {})",
            args.shape,
            SHAPE_NAMES.join(", ")
        ))
    })?;
    let target = Target::parse(&args.ty).map_err(bad_input)?;
    let tokenizer = match (&args.tokenizer_from, args.vocab) {
        (Some(path), _) => {
            TokenizerSource::Copy(synth::tokenizer_keys(&crate::args::open_gguf(path)?))
        }
        (None, Some(n)) => {
            if n < synth::MIN_SYNTHETIC_VOCAB {
                return Err(bad_input(format!(
                    "--vocab {n} is too small: a byte-level vocabulary needs at least {}",
                    synth::MIN_SYNTHETIC_VOCAB
                )));
            }
            if n > synth::MAX_SYNTHETIC_VOCAB {
                return Err(bad_input(format!(
                    "--vocab {n} is too large: at most {}",
                    synth::MAX_SYNTHETIC_VOCAB
                )));
            }
            TokenizerSource::Synthetic(n)
        }
        (None, None) => TokenizerSource::Default,
    };
    if let TokenizerSource::Copy(md) = &tokenizer {
        if !md.contains_key("tokenizer.ggml.tokens") {
            return Err(bad_input(format!(
                "{} has no tokenizer (tokenizer.ggml.tokens)",
                args.tokenizer_from.unwrap_or_default().display()
            )));
        }
    }
    if let Some(path) = &args.tokenizer_from {
        // The output replaces its file only when complete (tinyrt::files), so even the
        // tokenizer's own file would survive; it is still refused, as quantize's input is.
        tinyrt::files::check_not_same(path, &args.out).map_err(bad_input)?;
    }
    let pool = crate::args::rayon_pool(args.threads)?;
    let options = SynthOptions {
        shape,
        target,
        tokenizer,
        seed: args.seed,
    };
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    let report = pool
        .install(|| {
            synth::synthesize(&args.out, &options, &mut |i, n, t| {
                let _ = writeln!(
                    stderr,
                    "[{:>4}/{n}] {:<32} {:<6} {:?}",
                    i + 1,
                    t.name,
                    t.ty.name(),
                    t.shape
                );
            })
        })
        .map_err(|e| match e {
            e @ tinyrt::tools::quantize::QuantizeError::File(
                tinyrt::files::FileError::NotRegular { .. },
            ) => bad_input(e),
            e => e.into(),
        })?;
    for (name, wanted, got) in &report.fallbacks {
        eprintln!("fallback: {name}: rows of {wanted} do not fit, used {got}");
    }
    eprintln!(
        "wrote {}: {} {} ({} parameters, vocab {}, {:.1} MiB) in {:.1} s",
        args.out.display(),
        options.shape.name,
        options.target,
        report.n_params,
        report.n_vocab,
        report.bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
