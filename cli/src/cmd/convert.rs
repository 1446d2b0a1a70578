//! `tinyrt convert DIR OUT.gguf [--outtype TYPE] [-t N]`: a Hugging Face folder written as the
//! GGUF llama.cpp's `convert_hf_to_gguf.py` writes (see `tinyrt::hf`): f32, f16 and bf16 give
//! its file, `auto` (the default, as in the converter) bf16 for bf16 weights and f16 otherwise,
//! any other `tinyrt quantize` target quantizes the converted model. A progress bar on stderr
//! when stderr is a terminal; the file appears only when complete.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tinyrt::hf::{self, OutType};

use crate::args::rayon_pool;
use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The Hugging Face model folder (config.json and safetensors weights).
    pub dir: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// auto, f32, f16, bf16, or a quantize target (q8_0, q4_0, q4_k_m, ...).
    #[arg(long, value_name = "TYPE", default_value = "auto")]
    pub outtype: String,
    /// Threads for quantizing (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let outtype = OutType::parse(&args.outtype).map_err(bad_input)?;
    let pool = rayon_pool(args.threads)?;
    let bar = crate::output::Bar::new();
    let start = Instant::now();
    let result = pool.install(|| {
        hf::convert(&args.dir, &args.output, outtype, &mut |i, n, name| {
            bar.show(i + 1, n, name)
        })
    });
    bar.clear();
    let report = match result {
        Ok(r) => r,
        Err(e) if e.is_bad_input() => return Err(bad_input(e)),
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "wrote {}: {} tensors, {}, {:.1} MiB in {:.1} s",
        args.output.display(),
        report.tensors,
        report.target,
        report.output_bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
