//! The architectures a folder may hold: their GGUF names, the Hugging Face → GGUF tensor names
//! (llama.cpp's `gguf-py/gguf/tensor_mapping.py` for these classes), the shapes `config.json`
//! implies and the tensors each needs.

use super::hparams::Hparams;
use super::HfError;

/// The `architectures` entries [`Arch::from_hf`] accepts.
pub const SUPPORTED: [&str; 11] = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "PhiForCausalLM",
    "StableLmForCausalLM",
    "Gemma3ForCausalLM",
    "BertModel",
    "BertForSequenceClassification",
    "DistilBertModel",
    "DistilBertForSequenceClassification",
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
    Bert,
    DistilBert,
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
    /// Learned absolute positions (BERT).
    PosEmbd,
    /// Token-type embeddings (BERT).
    TokenTypes,
    /// A square dense layer on the `[CLS]` state: DistilBERT's pre-classifier, BERT's pooler.
    ClsDense,
    /// The classifier (one row per label).
    ClsOut,
}

/// A mapped tensor name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// The GGUF name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    pub role: Role,
    /// `.bias` rather than `.weight`.
    pub is_bias: bool,
    /// Kept although llama.cpp's converter drops it (BERT's pooler, as `cls`): not counted in
    /// the converter's parameter count.
    pub extra: bool,
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
    /// `max_position_embeddings` (BERT's position table).
    pub n_ctx: u64,
    /// `type_vocab_size` (BERT's token-type table).
    pub n_types: u64,
    /// The labels of `id2label` the converter keeps (none for the default two).
    pub labels: Vec<String>,
    /// The number of `id2label` entries (the classifier's rows).
    pub n_labels: u64,
    /// A `*ForSequenceClassification` class: the head is required.
    pub classifier: bool,
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

const BERT_LAYER: LayerTable = &[
    ("attention.self.query", "attn_q", Role::Q),
    ("attention.self.key", "attn_k", Role::K),
    ("attention.self.value", "attn_v", Role::V),
    ("attention.output.dense", "attn_output", Role::O),
    ("attention.output.LayerNorm", "attn_output_norm", Role::Norm),
    ("intermediate.dense", "ffn_up", Role::FfnIn),
    ("output.dense", "ffn_down", Role::FfnDown),
    ("output.LayerNorm", "layer_output_norm", Role::Norm),
];

const DISTILBERT_LAYER: LayerTable = &[
    ("attention.q_lin", "attn_q", Role::Q),
    ("attention.k_lin", "attn_k", Role::K),
    ("attention.v_lin", "attn_v", Role::V),
    ("attention.out_lin", "attn_output", Role::O),
    ("sa_layer_norm", "attn_output_norm", Role::Norm),
    ("ffn.lin1", "ffn_up", Role::FfnIn),
    ("ffn.lin2", "ffn_down", Role::FfnDown),
    ("output_layer_norm", "layer_output_norm", Role::Norm),
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
            "BertModel" | "BertForSequenceClassification" => Arch::Bert,
            "DistilBertModel" | "DistilBertForSequenceClassification" => Arch::DistilBert,
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
            Arch::Bert | Arch::DistilBert => "bert",
        }
    }

    /// BERT or DistilBERT.
    pub fn is_encoder(self) -> bool {
        matches!(self, Arch::Bert | Arch::DistilBert)
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
            Arch::Bert => BERT_LAYER,
            Arch::DistilBert => DISTILBERT_LAYER,
        }
    }

    /// Whether this is BERT's pooler (`pooler.dense`), which the converter drops and tinyrt
    /// keeps for a classification head.
    pub fn is_pooler(self, name: &str) -> bool {
        self == Arch::Bert && self.encoder_name(name).starts_with("pooler.dense.")
    }

    /// Whether the converter drops this tensor.
    pub fn is_dropped(self, name: &str) -> bool {
        if DROPPED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            return true;
        }
        if !self.is_encoder() {
            return false;
        }
        let name = self.encoder_name(name);
        name == "embeddings.position_ids"
            || name.starts_with("cls.predictions")
            || name.starts_with("cls.seq_relationship")
            || (self == Arch::DistilBert && name.starts_with("vocab_"))
    }

    /// An encoder tensor's name as the converter's `filter_tensors` rewrites it: without the
    /// `bert.` / `distilbert.` prefix, `gamma` / `beta` as `weight` / `bias`.
    fn encoder_name(self, name: &str) -> String {
        let prefix = if self == Arch::DistilBert {
            "distilbert."
        } else {
            "bert."
        };
        let name = name.strip_prefix(prefix).unwrap_or(name);
        if let Some(stem) = name.strip_suffix(".gamma") {
            format!("{stem}.weight")
        } else if let Some(stem) = name.strip_suffix(".beta") {
            format!("{stem}.bias")
        } else {
            name.to_owned()
        }
    }

    /// The GGUF name of an encoder tensor.
    fn map_encoder(self, name: &str, dims: &Dims) -> Option<Mapped> {
        let name = self.encoder_name(name);
        let (stem, is_bias) = split_suffix(&name)?;
        let suffix = if is_bias { "bias" } else { "weight" };
        let labels = !dims.labels.is_empty();
        let top = match stem {
            "embeddings.word_embeddings" => Some(("token_embd", Role::TokenEmbd, false)),
            "embeddings.position_embeddings" => Some(("position_embd", Role::PosEmbd, false)),
            "embeddings.token_type_embeddings" if self == Arch::Bert => {
                Some(("token_types", Role::TokenTypes, false))
            }
            "embeddings.LayerNorm" => Some(("token_embd_norm", Role::Norm, false)),
            // Dropped by the converter; kept as `cls`, which tinyrt reads as BERT's pooler
            // (dense + tanh) and llama.cpp's rank pooling applies the same way.
            "pooler.dense" if self == Arch::Bert => Some(("cls", Role::ClsDense, true)),
            "pre_classifier" if self == Arch::DistilBert => Some(("cls", Role::ClsDense, false)),
            "classifier" if labels => Some(("cls.output", Role::ClsOut, false)),
            "classifier" => Some(("cls", Role::ClsOut, false)),
            _ => None,
        };
        if let Some((kind, role, extra)) = top {
            return Some(Mapped {
                name: format!("{kind}.{suffix}"),
                role,
                is_bias,
                extra,
            });
        }
        let prefix = if self == Arch::Bert {
            "encoder.layer."
        } else {
            "transformer.layer."
        };
        let (layer, module) = layer_module(stem.strip_prefix(prefix)?, dims.n_layer)?;
        let &(_, kind, role) = self.layer_table().iter().find(|(m, _, _)| *m == module)?;
        Some(Mapped {
            name: format!("blk.{layer}.{kind}.{suffix}"),
            role,
            is_bias,
            extra: false,
        })
    }

    /// The GGUF name of a Hugging Face tensor, `None` when this architecture has no such
    /// tensor (or the layer is past `n_layer`).
    pub fn map(self, name: &str, dims: &Dims) -> Option<Mapped> {
        if self.is_encoder() {
            return self.map_encoder(name, dims);
        }
        let (stem, is_bias) = split_suffix(name)?;
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
                extra: false,
            });
        }
        let (layer, module) = layer_module(stem.strip_prefix("model.layers.")?, dims.n_layer)?;
        let &(_, kind, role) = self.layer_table().iter().find(|(m, _, _)| *m == module)?;
        Some(Mapped {
            name: format!("blk.{layer}.{kind}.{suffix}"),
            role,
            is_bias,
            extra: false,
        })
    }

    /// The GGUF names every folder of this architecture must have, lazily (a hostile layer
    /// count costs nothing: the first missing name ends the check).
    pub fn required(self, dims: &Dims) -> impl Iterator<Item = String> {
        let mut top = vec!["token_embd.weight".to_string()];
        if self.is_encoder() {
            top.extend([
                "position_embd.weight".into(),
                "token_embd_norm.weight".into(),
            ]);
            if dims.classifier {
                top.extend(["cls.weight".into(), "cls.output.weight".into()]);
            }
        } else {
            top.push("output_norm.weight".into());
            if dims.tied == Some(false) {
                top.push("output.weight".into());
            }
        }
        let biases: &[&str] = if self == Arch::Qwen2 {
            &["attn_q", "attn_k", "attn_v"]
        } else {
            &[]
        };
        let table = self.layer_table();
        let layers = (0..dims.n_layer).flat_map(move |l| {
            let weights = table
                .iter()
                .map(move |&(_, kind, _)| format!("blk.{l}.{kind}.weight"));
            let biases = biases
                .iter()
                .map(move |kind| format!("blk.{l}.{kind}.bias"));
            weights.chain(biases)
        });
        top.into_iter().chain(layers)
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
        let labels = if arch.is_encoder() {
            labels(hp)?
        } else {
            (0, Vec::new())
        };
        let class = hp
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .unwrap_or("");
        Ok(Dims {
            n_ctx: hp
                .find_u32(&["max_position_embeddings"])?
                .unwrap_or(0)
                .into(),
            n_types: hp.find_u32(&["type_vocab_size"])?.unwrap_or(2).into(),
            labels: labels.1,
            n_labels: labels.0,
            classifier: class.ends_with("ForSequenceClassification"),
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
            Role::PosEmbd => (self.n_ctx, self.hidden),
            Role::TokenTypes => (self.n_types, self.hidden),
            Role::ClsDense => (self.hidden, self.hidden),
            Role::ClsOut => (self.n_labels, self.hidden),
        };
        if m.is_bias || cols == 0 {
            vec![rows]
        } else {
            vec![rows, cols]
        }
    }
}

/// `name` without `.weight` / `.bias`, and whether it was a bias.
fn split_suffix(name: &str) -> Option<(&str, bool)> {
    if let Some(s) = name.strip_suffix(".weight") {
        Some((s, false))
    } else {
        name.strip_suffix(".bias").map(|s| (s, true))
    }
}

/// `N.module` → (N, module), N plain decimal digits as the converter formats them (no sign,
/// no leading zero) below `n_layer`.
fn layer_module(rest: &str, n_layer: u64) -> Option<(u64, &str)> {
    let (digits, module) = rest.split_once('.')?;
    let plain = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if !plain {
        return None;
    }
    let layer: u64 = digits.parse().ok()?;
    (layer < n_layer).then_some((layer, module))
}

/// The number of `id2label` entries (transformers' default 2 when absent) and the labels in
/// id order as the converter keeps them: none for the default `LABEL_0`, `LABEL_1`.
fn labels(hp: &Hparams) -> Result<(u64, Vec<String>), HfError> {
    let Some(map) = hp.get("id2label") else {
        return Ok((2, Vec::new()));
    };
    let map = map
        .as_object()
        .ok_or_else(|| hp.bad("id2label is not an object"))?;
    let mut labels = Vec::with_capacity(map.len());
    for (k, v) in map {
        let id: u64 = k
            .parse()
            .map_err(|_| hp.bad(format!("id2label key {k:?} is not a label id")))?;
        let v = v
            .as_str()
            .ok_or_else(|| hp.bad(format!("id2label[{k}] is {v}, not a string")))?;
        labels.push((id, v.to_owned()));
    }
    labels.sort();
    let n = labels.len() as u64;
    if n == 2 && labels[0].1 == "LABEL_0" {
        return Ok((n, Vec::new()));
    }
    Ok((n, labels.into_iter().map(|(_, v)| v).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(n_layer: u64) -> Dims {
        Dims {
            vocab: 8,
            hidden: 4,
            n_layer,
            n_head: 2,
            n_head_kv: 2,
            head_dim: 2,
            n_ff: 8,
            tied: None,
            n_ctx: 16,
            n_types: 2,
            labels: vec!["a".into(), "b".into(), "c".into()],
            n_labels: 3,
            classifier: true,
        }
    }

    #[test]
    fn names_map_per_architecture() {
        let d = dims(2);
        let name = |arch: Arch, n: &str| arch.map(n, &d).map(|m| m.name);
        assert_eq!(
            name(
                Arch::Gemma3,
                "model.layers.1.pre_feedforward_layernorm.weight"
            )
            .as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            name(
                Arch::Llama,
                "model.layers.1.post_attention_layernorm.weight"
            )
            .as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            name(Arch::Phi2, "lm_head.bias").as_deref(),
            Some("output.bias")
        );
        assert_eq!(
            name(Arch::Phi2, "model.final_layernorm.weight").as_deref(),
            Some("output_norm.weight")
        );
        assert_eq!(
            name(Arch::Bert, "bert.encoder.layer.1.output.LayerNorm.gamma").as_deref(),
            Some("blk.1.layer_output_norm.weight")
        );
        assert_eq!(
            name(
                Arch::DistilBert,
                "distilbert.transformer.layer.0.sa_layer_norm.bias"
            )
            .as_deref(),
            Some("blk.0.attn_output_norm.bias")
        );
        assert_eq!(
            name(Arch::Bert, "classifier.weight").as_deref(),
            Some("cls.output.weight")
        );
        assert!(Arch::Bert.map("bert.pooler.dense.bias", &d).unwrap().extra);
        assert!(Arch::Bert.is_dropped("bert.embeddings.position_ids"));
        // Past the layer count, a leading zero, a module of another architecture.
        assert!(name(Arch::Llama, "model.layers.2.mlp.up_proj.weight").is_none());
        assert!(name(Arch::Llama, "model.layers.01.mlp.up_proj.weight").is_none());
        assert!(name(Arch::Qwen2, "model.layers.0.self_attn.q_norm.weight").is_none());
        assert!(name(Arch::Llama, "model.layers.0.mlp.up_proj").is_none());
        assert!(name(
            Arch::DistilBert,
            "distilbert.embeddings.token_type_embeddings.weight"
        )
        .is_none());
    }
}
