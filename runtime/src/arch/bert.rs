//! BERT encoders as llama.cpp's converter writes them (`general.architecture = bert`; DistilBERT
//! files too): token + token-type + learned absolute position embeddings, an embedding
//! LayerNorm, then post-LayerNorm blocks (bidirectional attention with biases, residual,
//! `attn_output_norm`; erf-GELU FFN with biases, residual, `layer_output_norm`). The output is
//! every token's final hidden state; pooling is the caller's (`crate::embed`). Mirrors
//! Hugging Face's `BertModel` (modeling_bert.py) with the exact erf GELU it is trained with.

use super::layers::{self, blk, AttnConfig, AttnWeights, Ffn, Gelu, Norm, Qkv, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{AttnParams, Backend, BufId, WeightId, WeightTable};
use crate::config::ModelConfig;

/// A sequence-classification head on the `[CLS]` state, as llama.cpp's converter stores it:
/// `cls.output` (the classifier) after, where present, `cls` (DistilBERT's pre-classifier, or a
/// BERT pooler kept by another converter), with the activation Hugging Face uses between them.
#[derive(Clone, Debug)]
pub struct ClassifierHead {
    /// `cls` weight (`e × e`, row per output) and bias, and its activation.
    pre: Option<(Vec<f32>, Vec<f32>, Activation)>,
    /// `cls.output` weight (`labels × e`) and bias.
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    n_embd: usize,
    /// `classifier.output_labels`, one per logit (empty when the file has none).
    pub labels: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activation {
    /// DistilBERT's `pre_classifier` (`DistilBertForSequenceClassification`).
    Relu,
    /// BERT's pooler (`BertPooler`).
    Tanh,
}

impl ClassifierHead {
    /// The logits of one `[CLS]` state (f32, as Hugging Face computes them).
    pub fn logits(&self, cls: &[f32]) -> Vec<f32> {
        let e = self.n_embd;
        let linear = |w: &[f32], b: &[f32], x: &[f32]| -> Vec<f32> {
            w.chunks_exact(e)
                .zip(b)
                .map(|(row, &bias)| row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + bias)
                .collect()
        };
        let h = match &self.pre {
            Some((w, b, act)) => linear(w, b, cls)
                .into_iter()
                .map(|v| match act {
                    Activation::Relu => v.max(0.0),
                    Activation::Tanh => v.tanh(),
                })
                .collect(),
            None => cls.to_vec(),
        };
        linear(&self.out_w, &self.out_b, &h)
    }

    pub fn n_labels(&self) -> usize {
        self.out_b.len()
    }
}

/// A registered tensor's values as f32 (the head is tiny and computed on the host).
fn values(w: &WeightTable, id: WeightId) -> Result<Vec<f32>, ArchError> {
    let e = w.entry(id);
    let mut v = vec![0.0f32; e.numel()];
    crate::kernels::quant::dequantize(e.ty, w.data(id), &mut v)
        .map_err(|err| ArchError::Hyperparameter(format!("{}: {err}", e.name)))?;
    Ok(v)
}

/// The classifier head of the file, `Ok(None)` without one, `Err` (a message for the user)
/// when the file lacks part of the head the model needs.
fn load_head(
    cfg: &ModelConfig,
    w: &mut WeightTable,
    has_token_types: bool,
) -> Result<Option<Result<ClassifierHead, String>>, ArchError> {
    let e = cfg.n_embd;
    let Some(n_labels) = w
        .file()
        .tensor_info("cls.output.weight")
        .and_then(|t| (t.shape.len() == 2).then(|| t.shape[1] as usize))
    else {
        return Ok(None);
    };
    if n_labels == 0 || n_labels > 1 << 16 {
        return Err(ArchError::Hyperparameter(format!(
            "cls.output.weight has {n_labels} labels"
        )));
    }
    let out = w.require("cls.output.weight", &[e, n_labels])?;
    let out_bias = w.optional("cls.output.bias", &[n_labels])?;
    let pre = w.optional("cls.weight", &[e, e])?;
    let pre_bias = w.optional("cls.bias", &[e])?;
    let labels = match w
        .file()
        .metadata()
        .opt_str_array(&format!("{}.classifier.output_labels", cfg.arch))
    {
        Ok(Some(l)) if l.len() == n_labels => l.to_vec(),
        _ => Vec::new(),
    };
    let out_w = values(w, out)?;
    let out_b = match out_bias {
        Some(b) => values(w, b)?,
        None => vec![0.0; n_labels],
    };
    let pre = match pre {
        Some(pw) => {
            let pb = match pre_bias {
                Some(b) => values(w, b)?,
                None => vec![0.0; e],
            };
            // DistilBERT files (no token-type table) hold its pre-classifier, followed by ReLU;
            // with token types, `cls` is a BERT pooler, followed by tanh.
            let act = if has_token_types {
                Activation::Tanh
            } else {
                Activation::Relu
            };
            Some((values(w, pw)?, pb, act))
        }
        None if has_token_types => {
            // BERT's classifier reads the pooler's output (dense + tanh over [CLS]), which
            // llama.cpp's converter drops: logits without it would be wrong.
            return Ok(Some(Err(
                "this BERT classifier lacks its pooler (bert.pooler.dense, dropped by llama.cpp's converter), so its logits cannot be computed from this file".into(),
            )));
        }
        None => None,
    };
    Ok(Some(Ok(ClassifierHead {
        pre,
        out_w,
        out_b,
        n_embd: e,
        labels,
    })))
}

struct Layer {
    attn: AttnWeights,
    attn_output_norm: Norm,
    ffn: Ffn,
    layer_output_norm: Norm,
}

pub struct Bert {
    n_embd: usize,
    tok_embd: WeightId,      // (n_embd, vocab)
    position_embd: WeightId, // (n_embd, n_ctx_train)
    /// (n_embd, n_types); DistilBERT has none.
    token_types: Option<WeightId>,
    n_positions: usize,
    n_types: usize,
    embd_norm: Norm,
    layers: Vec<Layer>,
    attn: AttnConfig,
    head: Option<Result<ClassifierHead, String>>,
}

impl Bert {
    pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Bert, ArchError> {
        if cfg.causal {
            return Err(ArchError::Hyperparameter(
                "a bert model must set attention.causal = false".into(),
            ));
        }
        let (e, eps) = (cfg.n_embd, cfg.norm_eps);
        let position_embd = w.require("position_embd.weight", &[e, cfg.n_ctx_train])?;
        // The number of token types is the table's own (2 for BERT).
        let n_types = w
            .file()
            .tensor_info("token_types.weight")
            .and_then(|t| t.shape.get(1).copied())
            .unwrap_or(0) as usize;
        let token_types = match n_types {
            0 => None,
            n if n <= 16 => w.optional("token_types.weight", &[e, n])?,
            n => {
                return Err(ArchError::Hyperparameter(format!(
                    "token_types.weight has {n} types (at most 16)"
                )))
            }
        };
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let attn = AttnWeights::load(w, cfg, l)?;
                if !matches!(attn.qkv, Qkv::Separate { .. }) || attn.q_norm.is_some() {
                    return Err(ArchError::Hyperparameter(format!(
                        "bert layer {l}: expected separate Q/K/V projections"
                    )));
                }
                Ok(Layer {
                    attn,
                    attn_output_norm: Norm::layer(w, &blk(l, "attn_output_norm"), e, eps)?,
                    ffn: Ffn::load(w, cfg, l)?,
                    layer_output_norm: Norm::layer(w, &blk(l, "layer_output_norm"), e, eps)?,
                })
            })
            .collect::<Result<Vec<_>, ArchError>>()?;
        let head = load_head(cfg, w, token_types.is_some())?;
        Ok(Bert {
            head,
            n_embd: e,
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            position_embd,
            token_types,
            n_positions: cfg.n_ctx_train,
            n_types,
            embd_norm: Norm::layer(w, "token_embd_norm", e, eps)?,
            layers,
            attn: AttnConfig {
                attn: AttnParams {
                    n_head: cfg.n_head,
                    n_head_kv: cfg.n_head_kv,
                    head_dim_k: cfg.head_dim_k,
                    head_dim_v: cfg.head_dim_v,
                    scale: 1.0 / (cfg.head_dim_k as f32).sqrt(),
                    window: None,
                    causal: false,
                },
                // Learned absolute positions, added to the embeddings.
                rope: None,
                qk_norm_eps: cfg.norm_eps,
                q_prescale: None,
            },
        })
    }
}

impl Architecture for Bert {
    fn forward(
        &self,
        b: &mut dyn Backend,
        s: &Scratch,
        tokens: &[u32],
        _pos0: usize,
        _which: Logits,
        out: &mut Vec<f32>,
    ) {
        // An encoder has no next-token logits; the session routes it through `encode`. Here:
        // the hidden states of `tokens` as one sequence.
        let n = tokens.len();
        let x = self.encode(b, s, tokens, &[], &[0, n as u32]);
        out.clear();
        out.resize(n * self.n_embd, 0.0);
        if let Some(x) = x {
            b.read(x, 0, out);
        }
    }

    fn is_encoder(&self) -> bool {
        true
    }

    fn max_positions(&self) -> usize {
        self.n_positions
    }

    fn n_token_types(&self) -> usize {
        self.n_types
    }

    fn classifier(&self) -> Option<Result<&ClassifierHead, &str>> {
        self.head
            .as_ref()
            .map(|h| h.as_ref().map_err(String::as_str))
    }

    fn encode(
        &self,
        b: &mut dyn Backend,
        s: &Scratch,
        tokens: &[u32],
        types: &[u32],
        seqs: &[u32],
    ) -> Option<BufId> {
        let n = tokens.len();
        // x = token + position (+ type) embeddings, then LayerNorm. Positions restart at 0 in
        // every sequence (the session checked each against the position table).
        b.embed(self.tok_embd, tokens, s.x);
        let positions: Vec<u32> = seqs.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
        debug_assert_eq!(positions.len(), n);
        b.embed(self.position_embd, &positions, s.out);
        b.add(s.x, s.out, n);
        if let Some(tt) = self.token_types {
            // The session checked the types against the table; none given = type 0 for all.
            let ty: Vec<u32> = (0..n).map(|i| types.get(i).copied().unwrap_or(0)).collect();
            b.embed(tt, &ty, s.out);
            b.add(s.x, s.out, n);
        }
        self.embd_norm.apply(b, s.x, s.xn, n);
        for layer in &self.layers {
            // Post-norm blocks: the block's input is the normed residual stream in s.xn.
            layers::attention_packed(b, s, &layer.attn, &self.attn, seqs);
            b.add(s.xn, s.out, n);
            layer.attn_output_norm.apply(b, s.xn, s.x, n);
            layer.ffn.forward(b, s, s.x, Gelu::Erf, n);
            b.add(s.x, s.out, n);
            layer.layer_output_norm.apply(b, s.x, s.xn, n);
        }
        Some(s.xn)
    }
}
