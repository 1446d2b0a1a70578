//! `tinyrt quantize IN.gguf OUT.gguf TYPE [--keep-output TYPE] [-t N]`: requantizes a GGUF file
//! (see `tinyrt::tools::quantize`), with llama-quantize's per-tensor type choice.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tinyrt::tools::quantize::{self, QuantizeOptions, Target};

use crate::args::{open_gguf, rayon_pool};
use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to read.
    pub input: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// Target: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q4_k_m, q5_k, q5_k_m, q6_k, iq4_nl.
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// Type of output.weight (and of a tied token_embd.weight), e.g. f16 or q8_0.
    #[arg(long, value_name = "TYPE")]
    pub keep_output: Option<String>,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let target = Target::parse(&args.ty).map_err(bad_input)?;
    let output_type = match &args.keep_output {
        None => None,
        Some(s) => Some(quantize::parse_tensor_type(s).ok_or_else(|| {
            bad_input(format!("--keep-output: unknown or unsupported type '{s}'"))
        })?),
    };
    // Files, not spellings: `in.gguf` and `./in.gguf`, a symlink or a hard link are one file,
    // and writing it would destroy the mapped input.
    if args.input == args.output {
        return Err(bad_input("the output file must differ from the input file"));
    }
    tinyrt::files::check_not_same(&args.input, &args.output).map_err(bad_input)?;
    let input = open_gguf(&args.input)?;
    let pool = rayon_pool(args.threads)?;
    let options = QuantizeOptions {
        target,
        output_type,
    };
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    let result = pool.install(|| {
        quantize::quantize_file(&input, &args.output, &options, &mut |i, n, t| {
            let _ = writeln!(
                stderr,
                "[{:>4}/{n}] {:<32} {:>6} -> {:<6} {:?}",
                i + 1,
                crate::output::escape_controls(&t.name),
                t.from.name(),
                t.to.name(),
                t.shape
            );
        })
    });
    let report = match result {
        Ok(r) => r,
        // The output is written to a temporary file that a failure removes: the output path
        // keeps what it held before (see tinyrt::files::AtomicFile).
        Err(
            e @ (quantize::QuantizeError::UnsupportedSource { .. }
            | quantize::QuantizeError::File(tinyrt::files::FileError::NotRegular { .. })),
        ) => {
            return Err(bad_input(e));
        }
        Err(e) => return Err(e.into()),
    };
    for (name, wanted, got) in &report.fallbacks {
        let name = crate::output::escape_controls(name);
        eprintln!("fallback: {name}: rows not a multiple of {wanted}'s block, used {got}");
    }
    eprintln!(
        "wrote {} ({}): {:.1} MiB -> {:.1} MiB in {:.1} s",
        args.output.display(),
        target,
        report.input_bytes as f64 / (1024.0 * 1024.0),
        report.output_bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
