//! `--requant FORMAT`, shared by `generate`, `bench`, `perplexity` and `chat`: convert the
//! matmul weights in memory at load (like bitsandbytes' `load_in_4bit`).

use anyhow::Result;
use tinyrt::kernels::quant::QuantFormat;
use tinyrt::Model;

use crate::error::bad_input;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RequantArgs {
    /// Convert every matmul weight to this format in memory at load: nf4.
    #[arg(long, value_name = "FORMAT")]
    pub requant: Option<String>,
}

impl RequantArgs {
    /// The format asked for, after checking the name (exit 2 on an unknown one).
    pub fn format(&self) -> Result<Option<QuantFormat>> {
        match self.requant.as_deref() {
            None => Ok(None),
            Some(s) => parse_format(s).map(Some),
        }
    }
}

/// A `--requant` format name.
pub fn parse_format(s: &str) -> Result<QuantFormat> {
    match s.to_ascii_lowercase().as_str() {
        "nf4" => Ok(QuantFormat::Nf4),
        other => Err(bad_input(format!(
            "--requant {other:?}: unknown format (expected nf4)"
        ))),
    }
}

/// Print what the conversion did (stderr), when there was one.
pub fn report(model: &Model) {
    if let Some(r) = model.requant_report() {
        eprintln!("{r}");
    }
}
