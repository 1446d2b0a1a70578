//! `tinyrt export-lora BASE.gguf OUT.gguf --lora A [--lora-scaled B S]... [-t N]`: merges LoRA
//! adapters into the weights (see `tinyrt::tools::export_lora`), each merged tensor in its own
//! type again; a progress bar on stderr when stderr is a terminal.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tinyrt::tools::export_lora;
use tinyrt::tools::quantize::QuantizeError;

use crate::args::{open_gguf, rayon_pool, LoraArgs};
use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The base model (GGUF).
    pub input: PathBuf,
    /// The merged model to write.
    pub output: PathBuf,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    if args.lora.lora.is_empty() && args.lora.lora_scaled.is_empty() {
        return Err(bad_input(
            "no adapter given: name one with --lora FILE or --lora-scaled FILE SCALE",
        ));
    }
    // Writing the mapped input would destroy it (see `tinyrt quantize`).
    if args.input == args.output {
        return Err(bad_input("the output file must differ from the input file"));
    }
    tinyrt::files::check_not_same(&args.input, &args.output).map_err(bad_input)?;
    let base = open_gguf(&args.input)?;
    let adapters = args.lora.load(&base)?;
    for (a, _) in &adapters {
        tinyrt::files::check_not_same(&a.path, &args.output).map_err(bad_input)?;
    }
    let set: Vec<_> = adapters.iter().map(|(a, s)| (&**a, *s)).collect();
    let pool = rayon_pool(args.threads)?;
    let bar = crate::output::Bar::new();
    let start = Instant::now();
    let result = pool.install(|| {
        export_lora::export_lora(&base, &set, &args.output, &mut |i, n, t| {
            bar.show(i + 1, n, &t.name)
        })
    });
    bar.clear();
    let report = match result {
        Ok(r) => r,
        // The output is written to a temporary file that a failure removes: the output path
        // keeps what it held before.
        Err(e @ (QuantizeError::UnsupportedSource { .. } | QuantizeError::File(_))) => {
            return Err(bad_input(e));
        }
        Err(e) => return Err(e.into()),
    };
    let merged = report.tensors.iter().filter(|t| t.merged > 0).count();
    eprintln!(
        "wrote {}: {} adapter(s) merged into {merged} of {} tensors, {:.1} MiB in {:.1} s",
        args.output.display(),
        set.len(),
        report.tensors.len(),
        report.output_bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
