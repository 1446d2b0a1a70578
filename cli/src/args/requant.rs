//! `--requant FORMAT`, shared by `generate`, `bench`, `perplexity` and `chat`: convert the
//! matmul weights in memory at load (like bitsandbytes' `load_in_4bit`).

use anyhow::Result;
use tinyrt::kernels::quant::QuantFormat;
use tinyrt::Model;

use crate::error::bad_input;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RequantArgs {
    /// Convert every matmul weight to this format in memory at load: nf4, or a block type
    /// (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k, iq4_nl, ...).
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

/// A `--requant` format name: `nf4`, or a block-quantized GGUF type the kernels multiply
/// (`q4_0`, `q8_0`, `q4_k`, ...; f16/bf16/f32 are not quantizations).
pub fn parse_format(s: &str) -> Result<QuantFormat> {
    let lower = s.to_ascii_lowercase();
    if lower == "nf4" {
        return Ok(QuantFormat::Nf4);
    }
    match tinyrt::tools::quantize::parse_tensor_type(&lower) {
        Some(t) if t.block_size() > 1 => {
            let fmt = QuantFormat::Ggml(t);
            if fmt.is_supported() {
                Ok(fmt)
            } else {
                Err(bad_input(format!(
                    "--requant {lower}: this type cannot be written (expected nf4, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k, ...)"
                )))
            }
        }
        _ => Err(bad_input(format!(
            "--requant {lower:?}: unknown format (expected nf4, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k, ...)"
        ))),
    }
}

/// A bar on stderr while `--requant` converts the matrices at load (on a terminal only; the
/// line is cleared when the last matrix is done, before the report).
pub fn progress_bar() -> tinyrt::LoadProgress {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return tinyrt::LoadProgress::default();
    }
    let bar = crate::output::Bar::new();
    tinyrt::LoadProgress(Some(std::sync::Arc::new(move |done: usize, n: usize| {
        if done >= n {
            bar.clear();
        } else {
            bar.show(done, n, "matrices converted (--requant)");
        }
    })))
}

/// Print what the conversion did (stderr), when there was one.
pub fn report(model: &Model) {
    if let Some(r) = model.requant_report() {
        eprintln!("{r}");
    }
}
