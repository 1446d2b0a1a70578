//! BERT encoders as llama.cpp's converter writes them (`general.architecture = bert`; DistilBERT
//! files too): token + token-type + learned absolute position embeddings, an embedding
//! LayerNorm, then post-LayerNorm blocks (bidirectional attention with biases, residual,
//! `attn_output_norm`; erf-GELU FFN with biases, residual, `layer_output_norm`). The output is
//! every token's final hidden state; pooling is the caller's (`crate::embed`). Mirrors
//! Hugging Face's `BertModel` (modeling_bert.py) with the exact erf GELU it is trained with.

use super::layers::{blk, AttnWeights, Ffn, Norm, Qkv, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{AttnParams, Backend, WeightId, WeightTable};
use crate::config::ModelConfig;

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
    attn: AttnParams,
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
        Ok(Bert {
            n_embd: e,
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            position_embd,
            token_types,
            n_positions: cfg.n_ctx_train,
            n_types,
            embd_norm: Norm::layer(w, "token_embd_norm", e, eps)?,
            layers,
            attn: AttnParams {
                n_head: cfg.n_head,
                n_head_kv: cfg.n_head_kv,
                head_dim_k: cfg.head_dim_k,
                head_dim_v: cfg.head_dim_v,
                scale: 1.0 / (cfg.head_dim_k as f32).sqrt(),
                window: None,
                causal: false,
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
        pos0: usize,
        _which: Logits,
        out: &mut Vec<f32>,
    ) {
        // An encoder has no next-token logits; the session routes it through `encode`.
        self.encode(b, s, tokens, &[], pos0, out);
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

    fn encode(
        &self,
        b: &mut dyn Backend,
        s: &Scratch,
        tokens: &[u32],
        types: &[u32],
        pos0: usize,
        out: &mut Vec<f32>,
    ) {
        let n = tokens.len();
        // x = token + position (+ type) embeddings, then LayerNorm.
        b.embed(self.tok_embd, tokens, s.x);
        let positions: Vec<u32> = (pos0..pos0 + n).map(|p| p as u32).collect();
        b.embed(self.position_embd, &positions, s.out);
        b.add(s.x, s.out, n);
        if let Some(tt) = self.token_types {
            // The session checked the types against the table; none given = type 0 for all.
            let ty: Vec<u32> = (0..n).map(|i| types.get(i).copied().unwrap_or(0)).collect();
            b.embed(tt, &ty, s.out);
            b.add(s.x, s.out, n);
        }
        self.embd_norm.apply(b, s.x, s.xn, n);
        for (l, layer) in self.layers.iter().enumerate() {
            // The block's input is s.xn (post-norm blocks: the normed residual stream).
            let Qkv::Separate {
                wq,
                wk,
                wv,
                bq,
                bk,
                bv,
            } = layer.attn.qkv
            else {
                unreachable!("checked at load");
            };
            b.matmul(s.xn, &[(wq, s.q), (wk, s.k), (wv, s.v)], n);
            for (bias, buf) in [(bq, s.q), (bk, s.k), (bv, s.v)] {
                if let Some(bias) = bias {
                    b.add_bias(buf, bias, n);
                }
            }
            b.attention(l, s.q, s.k, s.v, pos0, n, &self.attn, s.att);
            b.matmul(s.att, &[(layer.attn.wo, s.out)], n);
            if let Some(bo) = layer.attn.bo {
                b.add_bias(s.out, bo, n);
            }
            b.add(s.xn, s.out, n);
            layer.attn_output_norm.apply(b, s.xn, s.x, n);
            // FFN on s.x (the attention block's normed output), residual into s.x.
            let f = &layer.ffn;
            b.matmul(s.x, &[(f.up, s.gate)], n);
            if let Some(bias) = f.up_b {
                b.add_bias(s.gate, bias, n);
            }
            b.gelu_erf(s.gate, n);
            b.matmul(s.gate, &[(f.down, s.out)], n);
            if let Some(bias) = f.down_b {
                b.add_bias(s.out, bias, n);
            }
            b.add(s.x, s.out, n);
            layer.layer_output_norm.apply(b, s.x, s.xn, n);
        }
        out.clear();
        out.resize(n * self.n_embd, 0.0);
        b.read(s.xn, 0, out);
    }
}
