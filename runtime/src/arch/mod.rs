//! Architectures, chosen by `general.architecture`.
//!
//! One architecture = one file: it reads its hyperparameters from [`ModelConfig`], registers
//! its tensors (shape-checked) in the [`WeightTable`], and describes its forward pass with the
//! shared layers of [`layers`] as [`Backend`] calls.

pub mod bert;
mod gemma3;
pub mod layers;
mod llama;
mod phi2;
mod qwen2;
mod qwen3;
mod stablelm;

use crate::backend::{Backend, BufId, WeightError, WeightTable};
use crate::config::ModelConfig;
pub use layers::Scratch;

/// Errors building an architecture from a file.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("unsupported architecture {0:?} (supported: {list})", list = SUPPORTED.join(", "))]
    Unsupported(String),
    #[error(transparent)]
    Weight(#[from] WeightError),
    #[error("{0}")]
    Hyperparameter(String),
}

/// Every value of `general.architecture` tinyrt runs.
pub const SUPPORTED: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi2", "stablelm", "gemma3", "bert",
];

/// Which rows of the batch produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits<'a> {
    /// Only the last token of the batch (generation).
    Last,
    /// Every token of the batch (tests, perplexity).
    All,
    /// Only the last token, left on the backend in row 0 of `Scratch::logits` instead of read
    /// back (greedy decoding takes `Backend::argmax` of it); the logits vector stays empty.
    KeepLast,
    /// No logits: every token's final hidden state after the output norm (`n × n_embd`), the
    /// decoder embeddings llama.cpp pools.
    Hidden,
    /// The given rows, in this order (a multi-sequence batch: the last row of each sequence
    /// that samples a token).
    Rows(&'a [usize]),
}

/// A loaded architecture: weight handles plus hyperparameters.
pub trait Architecture: Send + Sync {
    /// Run `tokens` at positions `pos0..`, writing into `logits` the rows that `which` asks
    /// for (`vocab_size` values each).
    fn forward(
        &self,
        b: &mut dyn Backend,
        s: &Scratch,
        tokens: &[u32],
        pos0: usize,
        which: Logits<'_>,
        logits: &mut Vec<f32>,
    );

    /// Whether this is an encoder (bidirectional: a sequence runs whole through
    /// [`Architecture::encode`], there are no next-token logits).
    fn is_encoder(&self) -> bool {
        false
    }

    /// Positions an encoder has embeddings for (its longest sequence); decoders: unbounded.
    fn max_positions(&self) -> usize {
        usize::MAX
    }

    /// Token types an encoder embeds (0: none).
    fn n_token_types(&self) -> usize {
        0
    }

    /// An encoder's sequence-classification head: `None` without one, `Err` with a message
    /// when the file lacks part of it.
    fn classifier(&self) -> Option<Result<&bert::ClassifierHead, &str>> {
        None
    }

    /// An encoder's forward pass over packed sequences: `tokens` holds the sequences back to
    /// back, `seqs` their boundaries (as [`Backend::attention_packed`] takes them), `types` one
    /// token type per token (empty: all 0). Every sequence starts at position 0 and attends only
    /// itself. Returns the buffer holding every token's final hidden state (`tokens.len() ×
    /// n_embd`); decoders have none.
    fn encode(
        &self,
        _b: &mut dyn Backend,
        _s: &Scratch,
        _tokens: &[u32],
        _types: &[u32],
        _seqs: &[u32],
    ) -> Option<BufId> {
        None
    }
}

/// Build the architecture named by `cfg.arch`, registering its weights in `w`.
pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Box<dyn Architecture>, ArchError> {
    match cfg.arch.as_str() {
        "llama" => Ok(Box::new(llama::Llama::load(cfg, w)?)),
        "qwen2" => Ok(Box::new(qwen2::load(cfg, w)?)),
        "qwen3" => Ok(Box::new(qwen3::load(cfg, w)?)),
        "phi2" => Ok(Box::new(phi2::Phi2::load(cfg, w)?)),
        "stablelm" => Ok(Box::new(stablelm::StableLm::load(cfg, w)?)),
        "gemma3" => Ok(Box::new(gemma3::Gemma3::load(cfg, w)?)),
        "bert" => Ok(Box::new(bert::Bert::load(cfg, w)?)),
        other => Err(ArchError::Unsupported(other.to_string())),
    }
}
