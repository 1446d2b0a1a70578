//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod compare;
pub mod generate;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod requant;
pub mod sampling;
pub mod synth;
pub mod tokenize;

use std::path::Path;

use anyhow::Context;
use tinyrt::gguf::{GgufError, GgufFile};
use tinyrt::kernels::quant::QuantFormat;
use tinyrt::{Device, LoadOptions, Model};

use crate::error::bad_input;

/// Opens a GGUF file named on the command line. Every failure (missing, unreadable, not a
/// file, malformed) is bad input: exit status 2, one line naming the path.
pub fn open_gguf(path: &Path) -> anyhow::Result<GgufFile> {
    if path.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    match GgufFile::open(path) {
        Ok(f) => Ok(f),
        // These variants already name the path.
        Err(e @ (GgufError::Io { .. } | GgufError::NotAFile { .. })) => Err(e.into()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Warns (stderr) when a context is longer than the one the model was trained with: it runs,
/// but quality past the trained length is not what the model was made for.
pub fn warn_above_trained_context(model: &Model, n_ctx: usize) {
    let trained = model.config().n_ctx_train;
    if n_ctx > trained {
        eprintln!(
            "warning: the context of {n_ctx} tokens is longer than the {trained} the model was trained with"
        );
    }
}

/// Loads the model named on the command line on `device` (every failure is bad input: exit
/// status 2, one line naming the path), with `requant` applied to its matmul weights.
pub fn load_model(
    path: &Path,
    device: Device,
    threads: Option<usize>,
    requant: Option<QuantFormat>,
) -> anyhow::Result<Model> {
    Model::load(
        path,
        LoadOptions {
            device,
            threads,
            isa: None,
            requant,
        },
    )
    .map_err(|e| bad_input(format!("{}: {e}", path.display())))
}
