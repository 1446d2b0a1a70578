//! The architectures a folder may hold: their GGUF names, the Hugging Face → GGUF tensor names
//! (llama.cpp's `gguf-py/gguf/tensor_mapping.py` for these classes), the shapes `config.json`
//! implies and the tensors each needs.

use super::hparams::Hparams;
use super::HfError;

/// The `architectures` entries [`Arch::from_hf`] accepts.
pub const SUPPORTED: [&str; 7] = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "PhiForCausalLM",
    "StableLmForCausalLM",
    "Gemma3ForCausalLM",
];

/// A supported architecture (llama.cpp's model class of the converter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Phi2,
    StableLm,
    Gemma3,
}

/// What a tensor is, which decides the shape it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    TokenEmbd,
    Output,
    /// A norm over the hidden state.
    Norm,
    /// A per-head norm over one head (Qwen3's and Gemma-3's q_norm / k_norm).
    HeadNorm,
    Q,
    K,
    V,
    O,
    /// ffn_gate and ffn_up.
    FfnIn,
    FfnDown,
}

/// A mapped tensor name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// The GGUF name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    pub role: Role,
    /// `.bias` rather than `.weight`.
    pub is_bias: bool,
}

/// The sizes `config.json` gives, which tensor shapes are checked against.
#[derive(Clone, Debug)]
pub(crate) struct Dims {
    pub vocab: u64,
    pub hidden: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub n_ff: u64,
    /// `tie_word_embeddings`, when given.
    pub tied: Option<bool>,
}

/// Per-layer tensors: Hugging Face module (after `model.layers.N.`) → GGUF kind and role.
type LayerTable = &'static [(&'static str, &'static str, Role)];

const LLAMA_LAYER: LayerTable = &[
    ("input_layernorm", "attn_norm", Role::Norm),
    ("self_attn.q_proj", "attn_q", Role::Q),
    ("self_attn.k_proj", "attn_k", Role::K),
    ("self_attn.v_proj", "attn_v", Role::V),
    ("self_attn.o_proj", "attn_output", Role::O),
    ("post_attention_layernorm", "ffn_norm", Role::Norm),
    ("mlp.gate_proj", "ffn_gate", Role::FfnIn),
    ("mlp.up_proj", "ffn_up", Role::FfnIn),
    ("mlp.down_proj", "ffn_down", Role::FfnDown),
];

const QWEN3_LAYER: LayerTable = &[
    ("input_layernorm", "attn_norm", Role::Norm),
    ("self_attn.q_proj", "attn_q", Role::Q),
    ("self_attn.k_proj", "attn_k", Role::K),
    ("self_attn.v_proj", "attn_v", Role::V),
    ("self_attn.o_proj", "attn_output", Role::O),
    ("self_attn.q_norm", "attn_q_norm", Role::HeadNorm),
    ("self_attn.k_norm", "attn_k_norm", Role::HeadNorm),
    ("post_attention_layernorm", "ffn_norm", Role::Norm),
    ("mlp.gate_proj", "ffn_gate", Role::FfnIn),
    ("mlp.up_proj", "ffn_up", Role::FfnIn),
    ("mlp.down_proj", "ffn_down", Role::FfnDown),
];

const GEMMA3_LAYER: LayerTable = &[
    ("input_layernorm", "attn_norm", Role::Norm),
    ("self_attn.q_proj", "attn_q", Role::Q),
    ("self_attn.k_proj", "attn_k", Role::K),
    ("self_attn.v_proj", "attn_v", Role::V),
    ("self_attn.o_proj", "attn_output", Role::O),
    ("self_attn.q_norm", "attn_q_norm", Role::HeadNorm),
    ("self_attn.k_norm", "attn_k_norm", Role::HeadNorm),
    (
        "post_attention_layernorm",
        "post_attention_norm",
        Role::Norm,
    ),
    ("pre_feedforward_layernorm", "ffn_norm", Role::Norm),
    ("post_feedforward_layernorm", "post_ffw_norm", Role::Norm),
    ("mlp.gate_proj", "ffn_gate", Role::FfnIn),
    ("mlp.up_proj", "ffn_up", Role::FfnIn),
    ("mlp.down_proj", "ffn_down", Role::FfnDown),
];

const PHI2_LAYER: LayerTable = &[
    ("input_layernorm", "attn_norm", Role::Norm),
    ("self_attn.q_proj", "attn_q", Role::Q),
    ("self_attn.k_proj", "attn_k", Role::K),
    ("self_attn.v_proj", "attn_v", Role::V),
    ("self_attn.dense", "attn_output", Role::O),
    ("mlp.fc1", "ffn_up", Role::FfnIn),
    ("mlp.fc2", "ffn_down", Role::FfnDown),
];

/// Names the converter drops (`prepare_tensors`).
const DROPPED_SUFFIXES: [&str; 3] = [
    ".attention.masked_bias",
    ".attention.bias",
    ".rotary_emb.inv_freq",
];

impl Arch {
    /// The architecture of an `architectures` entry.
    pub fn from_hf(name: &str) -> Option<Arch> {
        Some(match name {
            "LlamaForCausalLM" | "MistralForCausalLM" => Arch::Llama,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            "PhiForCausalLM" => Arch::Phi2,
            "StableLmForCausalLM" => Arch::StableLm,
            "Gemma3ForCausalLM" => Arch::Gemma3,
            _ => return None,
        })
    }

    /// The architecture of `config.json` (its first `architectures` entry).
    pub fn of(hp: &Hparams) -> Result<Arch, HfError> {
        let found = hp
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str());
        let Some(found) = found else {
            return Err(HfError::UnknownArchitecture {
                path: hp.path().to_owned(),
                found: "none".into(),
            });
        };
        Arch::from_hf(found).ok_or_else(|| HfError::UnknownArchitecture {
            path: hp.path().to_owned(),
            found: format!("{found:?}"),
        })
    }

    /// `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi2 => "phi2",
            Arch::StableLm => "stablelm",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// The converter rearranges Q/K rows for GGUF's rope layout (`LlamaModel.undo_permute`).
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }

    /// Norm weights are stored as 1 + w (Gemma3RMSNorm computes `x · (1 + w)`).
    pub fn shifts_norms(self) -> bool {
        self == Arch::Gemma3
    }

    fn layer_table(self) -> LayerTable {
        match self {
            Arch::Llama | Arch::Qwen2 | Arch::StableLm => LLAMA_LAYER,
            Arch::Qwen3 => QWEN3_LAYER,
            Arch::Gemma3 => GEMMA3_LAYER,
            Arch::Phi2 => PHI2_LAYER,
        }
    }

    /// Whether the converter drops this tensor.
    pub fn is_dropped(name: &str) -> bool {
        DROPPED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }

    /// The GGUF name of a Hugging Face tensor, `None` when this architecture has no such
    /// tensor (or the layer is past `n_layer`).
    pub fn map(self, name: &str, n_layer: u64) -> Option<Mapped> {
        let (stem, is_bias) = if let Some(s) = name.strip_suffix(".weight") {
            (s, false)
        } else {
            (name.strip_suffix(".bias")?, true)
        };
        let suffix = if is_bias { "bias" } else { "weight" };
        let output_norm = if self == Arch::Phi2 {
            "model.final_layernorm"
        } else {
            "model.norm"
        };
        let top = match stem {
            "model.embed_tokens" if !is_bias => Some(("token_embd", Role::TokenEmbd)),
            "lm_head" => Some(("output", Role::Output)),
            s if s == output_norm => Some(("output_norm", Role::Norm)),
            _ => None,
        };
        if let Some((kind, role)) = top {
            return Some(Mapped {
                name: format!("{kind}.{suffix}"),
                role,
                is_bias,
            });
        }
        let rest = stem.strip_prefix("model.layers.")?;
        let (digits, module) = rest.split_once('.')?;
        // Plain decimal digits as the converter formats them: no sign, no leading zero.
        let plain = !digits.is_empty()
            && digits.len() <= 9
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits.len() == 1 || !digits.starts_with('0'));
        if !plain {
            return None;
        }
        let layer: u64 = digits.parse().ok()?;
        if layer >= n_layer {
            return None;
        }
        let &(_, kind, role) = self.layer_table().iter().find(|(m, _, _)| *m == module)?;
        Some(Mapped {
            name: format!("blk.{layer}.{kind}.{suffix}"),
            role,
            is_bias,
        })
    }

    /// The GGUF names every folder of this architecture must have.
    pub fn required(self, dims: &Dims) -> Vec<String> {
        let mut names = vec!["token_embd.weight".to_string(), "output_norm.weight".into()];
        if dims.tied == Some(false) {
            names.push("output.weight".into());
        }
        for l in 0..dims.n_layer {
            for &(_, kind, _) in self.layer_table() {
                names.push(format!("blk.{l}.{kind}.weight"));
            }
            if self == Arch::Qwen2 {
                for kind in ["attn_q", "attn_k", "attn_v"] {
                    names.push(format!("blk.{l}.{kind}.bias"));
                }
            }
        }
        names
    }
}

impl Dims {
    /// The sizes of `config.json`, with the defaults the converter's model classes use.
    pub fn read(arch: Arch, hp: &Hparams) -> Result<Dims, HfError> {
        let n_layer = hp.req_u32(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
        let hidden = hp.req_u32(&["hidden_size", "n_embd", "dim"])?;
        let n_head = match arch {
            Arch::Gemma3 => hp.find_u32(&["num_attention_heads"])?.unwrap_or(8),
            _ => hp.req_u32(&["num_attention_heads", "n_head", "n_heads"])?,
        };
        let n_head_kv = match arch {
            Arch::Gemma3 => hp.find_u32(&["num_key_value_heads"])?.unwrap_or(4),
            _ => hp
                .find_u32(&["num_key_value_heads", "n_kv_heads"])?
                .unwrap_or(n_head),
        };
        if n_head == 0 || n_head_kv == 0 || n_layer == 0 || hidden == 0 {
            return Err(hp.bad("a layer, head or hidden size of 0"));
        }
        let head_dim = match hp.find_u32(&["head_dim"])? {
            Some(d) => d,
            None if arch == Arch::Gemma3 => 256,
            None => hidden / n_head,
        };
        let n_ff = hp.req_u32(&[
            "prefix_dense_intermediate_size",
            "dense_intermediate_size",
            "intermediate_size",
            "n_inner",
            "hidden_dim",
        ])?;
        let vocab = hp.req_u32(&["vocab_size"])?;
        if head_dim == 0 || n_ff == 0 || vocab == 0 {
            return Err(hp.bad("a head width, feed-forward size or vocabulary of 0"));
        }
        Ok(Dims {
            vocab: vocab.into(),
            hidden: hidden.into(),
            n_layer: n_layer.into(),
            n_head: n_head.into(),
            n_head_kv: n_head_kv.into(),
            head_dim: head_dim.into(),
            n_ff: n_ff.into(),
            tied: hp.bool("tie_word_embeddings")?,
        })
    }

    /// The shape (row-major, as stored) `config.json` implies for a tensor.
    pub fn expected_shape(&self, m: &Mapped) -> Vec<u64> {
        let (rows, cols) = match m.role {
            Role::TokenEmbd | Role::Output => (self.vocab, self.hidden),
            Role::Norm => (self.hidden, 0),
            Role::HeadNorm => (self.head_dim, 0),
            Role::Q => (self.n_head * self.head_dim, self.hidden),
            Role::K | Role::V => (self.n_head_kv * self.head_dim, self.hidden),
            Role::O => (self.hidden, self.n_head * self.head_dim),
            Role::FfnIn => (self.n_ff, self.hidden),
            Role::FfnDown => (self.hidden, self.n_ff),
        };
        if m.is_bias || cols == 0 {
            vec![rows]
        } else {
            vec![rows, cols]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_per_architecture() {
        let m = Arch::Gemma3
            .map("model.layers.1.pre_feedforward_layernorm.weight", 2)
            .unwrap();
        assert_eq!(m.name, "blk.1.ffn_norm.weight");
        let m = Arch::Llama
            .map("model.layers.1.post_attention_layernorm.weight", 2)
            .unwrap();
        assert_eq!(m.name, "blk.1.ffn_norm.weight");
        assert_eq!(
            Arch::Phi2.map("lm_head.bias", 2).unwrap().name,
            "output.bias"
        );
        assert_eq!(
            Arch::Phi2
                .map("model.final_layernorm.weight", 2)
                .unwrap()
                .name,
            "output_norm.weight"
        );
        // Past the layer count, a leading zero, a module of another architecture.
        assert!(Arch::Llama
            .map("model.layers.2.mlp.up_proj.weight", 2)
            .is_none());
        assert!(Arch::Llama
            .map("model.layers.01.mlp.up_proj.weight", 2)
            .is_none());
        assert!(Arch::Qwen2
            .map("model.layers.0.self_attn.q_norm.weight", 2)
            .is_none());
        assert!(Arch::Llama.map("model.layers.0.mlp.up_proj", 2).is_none());
    }
}
