//! `tinyrt convert-lora PEFT_DIR BASE.gguf OUT.gguf`: a PEFT LoRA folder in llama.cpp's GGUF
//! adapter form (see `tinyrt::adapters::LoraAdapter::peft_to_gguf`), f32, for tools that only
//! read GGUF adapters; tinyrt itself also takes the folder directly.

use std::path::PathBuf;

use anyhow::Result;
use tinyrt::adapters::LoraAdapter;

use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The PEFT folder (adapter_config.json + adapter_model.safetensors).
    pub peft_dir: PathBuf,
    /// The base model the adapter is for (checked: names and shapes; it decides the Q/K row
    /// order and the architecture written).
    pub base: PathBuf,
    /// The GGUF adapter to write.
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let base = crate::args::open_gguf(&args.base).map_err(bad_input)?;
    tinyrt::files::check_not_same(&args.base, &args.out).map_err(bad_input)?;
    let writer = LoraAdapter::peft_to_gguf(&args.peft_dir, &base).map_err(bad_input)?;
    let bytes = writer.to_bytes()?;
    tinyrt::files::write_atomic(&args.out, &bytes).map_err(|e| match e {
        e @ tinyrt::files::FileError::NotRegular { .. } => bad_input(e),
        e => e.into(),
    })?;
    eprintln!(
        "wrote {} ({:.1} KiB)",
        args.out.display(),
        bytes.len() as f64 / 1024.0
    );
    Ok(())
}
