//! Model hyperparameters read from GGUF metadata (`general.architecture` + `<arch>.*` keys).
//!
//! Key names and defaults follow llama.cpp's `LLM_KV_*` table (src/llama-arch.cpp) and its
//! hyperparameter loader (src/llama-model.cpp): `head_count_kv` defaults to `head_count`,
//! `key_length`/`value_length` to `embedding_length / head_count`, `rope.dimension_count` to the
//! key length, `rope.freq_base` to 10000.

use crate::gguf::{GgufError, Metadata};

/// Errors in the hyperparameters of a model file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("bad hyperparameter {key}: {why}")]
    Bad { key: String, why: String },
    #[error("unsupported rope scaling type {0:?}")]
    RopeScaling(String),
}

/// How positions are rotated into Q and K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama-arch GGUF files store Q/K permuted for this.
    Normal,
    /// Halves `(i, i + n_rot/2)`: GPT-NeoX, phi2, qwen, gemma, stablelm.
    Neox,
}

/// RoPE scaling declared by `<arch>.rope.scaling.*`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions multiplied by `1 / factor`.
    Linear {
        factor: f32,
    },
    /// YaRN (Peng et al., 2023), with the original training context
    /// (`rope.scaling.original_context_length`, else `context_length`).
    Yarn {
        factor: f32,
        orig_ctx: u32,
    },
}

/// Hyperparameters of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture`, e.g. `llama`.
    pub arch: String,
    /// Training context (`context_length`).
    pub n_ctx_train: usize,
    /// Width of the residual stream (`embedding_length`).
    pub n_embd: usize,
    pub n_layer: usize,
    /// Hidden width of the feed-forward block (`feed_forward_length`).
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of keys/queries (`attention.key_length`).
    pub head_dim_k: usize,
    /// Per-head width of values (`attention.value_length`).
    pub head_dim_v: usize,
    /// `attention.layer_norm_rms_epsilon` (RMSNorm models).
    pub rms_eps: f32,
    /// `attention.layer_norm_epsilon` (LayerNorm models).
    pub norm_eps: f32,
    /// Dimensions of each head that are rotated (`rope.dimension_count`).
    pub n_rot: usize,
    pub rope_freq_base: f32,
    pub rope_scaling: RopeScaling,
    /// `rope.scaling.attn_factor`: multiplies RoPE's cos and sin (llama.cpp's
    /// `rope_attn_factor`, any scaling type); 1 by default.
    pub rope_attn_factor: f32,
    /// `attention.sliding_window` (0 when absent).
    pub sliding_window: usize,
    /// `attention.sliding_window_pattern`: every n-th layer attends globally (gemma3: 6).
    pub sliding_window_pattern: Option<usize>,
    /// `rope.freq_base_swa`: RoPE base of the sliding-window layers (llama.cpp's default 10000).
    pub rope_freq_base_swa: f32,
    /// Number of tokens (`tokenizer.ggml.tokens`).
    pub vocab_size: usize,
    /// `attention.causal`: false for encoders (BERT); true when absent.
    pub causal: bool,
    /// `pooling_type`: how an encoder's token states become one vector; `None` when absent or
    /// 0 (no pooling: a decoder, or per-token output).
    pub pooling: Option<Pooling>,
}

/// How per-token hidden states become one vector (llama.cpp's `llama_pooling_type`, the values
/// of `<arch>.pooling_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the sequence's tokens (sentence-transformers' default).
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// The last token.
    Last,
    /// A cross-encoder's relevance score (the classifier head on `[CLS]`).
    Rank,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::Rank => "rank",
        }
    }

    /// A name as `--pooling` takes it; `Ok(None)` for `none`.
    pub fn parse(s: &str) -> Result<Option<Pooling>, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(None),
            "mean" => Ok(Some(Pooling::Mean)),
            "cls" => Ok(Some(Pooling::Cls)),
            "last" => Ok(Some(Pooling::Last)),
            "rank" => Ok(Some(Pooling::Rank)),
            other => Err(format!(
                "unknown pooling {other:?} (expected none, mean, cls, last or rank)"
            )),
        }
    }
}

fn bad(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Bad {
        key: key.to_string(),
        why: why.into(),
    }
}

/// A count read from the metadata, checked to be positive and sane.
fn count(md: &Metadata, key: &str, max: u32) -> Result<usize, ConfigError> {
    let v = md.get_u32(key)?;
    check_count(key, v, max)
}

fn check_count(key: &str, v: u32, max: u32) -> Result<usize, ConfigError> {
    if v == 0 || v > max {
        return Err(bad(key, format!("{v} is outside 1..={max}")));
    }
    Ok(v as usize)
}

fn opt_count(md: &Metadata, key: &str, max: u32) -> Result<Option<usize>, ConfigError> {
    match md.opt_u32(key)? {
        Some(v) => check_count(key, v, max).map(Some),
        None => Ok(None),
    }
}

fn positive_f32(key: &str, v: f32) -> Result<f32, ConfigError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(bad(key, format!("{v} is not a positive number")));
    }
    Ok(v)
}

impl ModelConfig {
    /// Read the hyperparameters of the architecture named by `general.architecture`.
    pub fn from_metadata(md: &Metadata) -> Result<ModelConfig, ConfigError> {
        let arch = md.get_str("general.architecture")?.to_string();
        let k = |name: &str| format!("{arch}.{name}");
        const BIG: u32 = 1 << 20;

        let n_embd = count(md, &k("embedding_length"), BIG)?;
        let n_layer = count(md, &k("block_count"), 4096)?;
        let n_ff = count(md, &k("feed_forward_length"), BIG)?;
        let n_head = count(md, &k("attention.head_count"), 4096)?;
        let n_head_kv = opt_count(md, &k("attention.head_count_kv"), 4096)?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(bad(
                &k("attention.head_count_kv"),
                format!("{n_head} query heads are not a multiple of {n_head_kv} kv heads"),
            ));
        }
        let default_head = n_embd / n_head;
        let head_dim_k = opt_count(md, &k("attention.key_length"), 65536)?.unwrap_or(default_head);
        let head_dim_v =
            opt_count(md, &k("attention.value_length"), 65536)?.unwrap_or(default_head);
        if head_dim_k == 0 || head_dim_v == 0 {
            return Err(bad(&k("attention.key_length"), "head width of 0"));
        }
        let n_rot = opt_count(md, &k("rope.dimension_count"), 65536)?.unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(bad(
                &k("rope.dimension_count"),
                format!("{n_rot} is odd or wider than the head ({head_dim_k})"),
            ));
        }
        let n_ctx_train = opt_count(md, &k("context_length"), u32::MAX)?.unwrap_or(2048);

        let rms_eps = match md.opt_f32(&k("attention.layer_norm_rms_epsilon"))? {
            Some(v) => positive_f32(&k("attention.layer_norm_rms_epsilon"), v)?,
            None => 1e-5,
        };
        let norm_eps = match md.opt_f32(&k("attention.layer_norm_epsilon"))? {
            Some(v) => positive_f32(&k("attention.layer_norm_epsilon"), v)?,
            None => 1e-5,
        };
        let rope_freq_base = match md.opt_f32(&k("rope.freq_base"))? {
            Some(v) => positive_f32(&k("rope.freq_base"), v)?,
            None => 10000.0,
        };

        let scaling_type = md.opt_str(&k("rope.scaling.type"))?.map(str::to_string);
        let factor = match md.opt_f32(&k("rope.scaling.factor"))? {
            Some(f) => Some(positive_f32(&k("rope.scaling.factor"), f)?),
            // Older files: `rope.scale_linear`.
            None => match md.opt_f32(&k("rope.scale_linear"))? {
                Some(f) => Some(positive_f32(&k("rope.scale_linear"), f)?),
                None => None,
            },
        };
        let rope_scaling = match (scaling_type.as_deref(), factor) {
            (None | Some("none"), None) => RopeScaling::None,
            (None | Some("linear"), Some(1.0)) => RopeScaling::None,
            (None | Some("linear"), Some(f)) => RopeScaling::Linear { factor: f },
            (Some("linear"), None) => RopeScaling::None,
            (Some("none"), Some(_)) => RopeScaling::None,
            (Some("yarn"), f) => RopeScaling::Yarn {
                factor: f.unwrap_or(1.0),
                orig_ctx: md
                    .opt_u32(&k("rope.scaling.original_context_length"))?
                    .unwrap_or(n_ctx_train as u32),
            },
            (Some(other), _) => return Err(ConfigError::RopeScaling(other.to_string())),
        };

        let rope_attn_factor = match md.opt_f32(&k("rope.scaling.attn_factor"))? {
            Some(v) => positive_f32(&k("rope.scaling.attn_factor"), v)?,
            None => 1.0,
        };

        let sliding_window = opt_count(md, &k("attention.sliding_window"), u32::MAX)?.unwrap_or(0);
        let sliding_window_pattern = match md.get(&k("attention.sliding_window_pattern")) {
            // A per-layer boolean array is not supported yet; a count is.
            Some(_) => opt_count(md, &k("attention.sliding_window_pattern"), 4096)?,
            None => None,
        };
        let rope_freq_base_swa = match md.opt_f32(&k("rope.freq_base_swa"))? {
            Some(v) => positive_f32(&k("rope.freq_base_swa"), v)?,
            None => 10000.0,
        };

        let vocab_size = match md.opt_u32(&k("vocab_size"))? {
            Some(v) => check_count(&k("vocab_size"), v, 1 << 24)?,
            None => {
                let n = md.get_str_array("tokenizer.ggml.tokens")?.len();
                if n == 0 {
                    return Err(bad("tokenizer.ggml.tokens", "empty vocabulary"));
                }
                n
            }
        };

        let causal = md.opt_bool(&k("attention.causal"))?.unwrap_or(true);
        let pooling = match md.opt_u32(&k("pooling_type"))? {
            None | Some(0) => None,
            Some(1) => Some(Pooling::Mean),
            Some(2) => Some(Pooling::Cls),
            Some(3) => Some(Pooling::Last),
            Some(4) => Some(Pooling::Rank),
            Some(v) => return Err(bad(&k("pooling_type"), format!("unknown pooling type {v}"))),
        };

        Ok(ModelConfig {
            arch,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            rms_eps,
            norm_eps,
            n_rot,
            rope_freq_base,
            rope_scaling,
            rope_attn_factor,
            sliding_window,
            sliding_window_pattern,
            rope_freq_base_swa,
            vocab_size,
            causal,
            pooling,
        })
    }

    /// Width of all query heads together.
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim_k
    }
    /// Width of all key heads together.
    pub fn k_width(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }
    /// Width of all value heads together.
    pub fn v_width(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
