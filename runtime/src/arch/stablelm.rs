//! StableLM (2): LayerNorm with bias, Q/K/V biases, NeoX RoPE on the first
//! `rope.dimension_count` dims of each head, SwiGLU FFN after its own LayerNorm (or, when a
//! layer has no `ffn_norm`, in parallel on the attention's normed input). Mirrors llama.cpp
//! src/models/stablelm.cpp.

use super::layers::{self, blk, AttnConfig, AttnWeights, GatedFfn, Norm, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{Backend, WeightId, WeightTable};
use crate::config::{ModelConfig, RopeStyle};

struct Layer {
    attn_norm: Norm, // (n_embd) weight + bias
    attn: AttnWeights,
    ffn_norm: Option<Norm>, // (n_embd) weight + bias
    ffn: GatedFfn,
}

pub struct StableLm {
    vocab: usize,
    tok_embd: WeightId, // (n_embd, vocab)
    layers: Vec<Layer>,
    attn: AttnConfig,
    output_norm: Norm, // (n_embd) weight + bias
    output: WeightId,  // (n_embd, vocab)
}

impl StableLm {
    pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<StableLm, ArchError> {
        let (e, eps) = (cfg.n_embd, cfg.norm_eps);
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let attn = AttnWeights::load(w, cfg, l)?;
                if attn.q_norm.is_some() || attn.k_norm.is_some() {
                    return Err(ArchError::Hyperparameter(
                        "stablelm per-head Q/K LayerNorm is not supported yet".into(),
                    ));
                }
                let ffn_norm = match w.optional(&blk(l, "ffn_norm.weight"), &[e])? {
                    Some(_) => Some(Norm::layer(w, &blk(l, "ffn_norm"), e, eps)?),
                    None => None,
                };
                Ok(Layer {
                    attn_norm: Norm::layer(w, &blk(l, "attn_norm"), e, eps)?,
                    attn,
                    ffn_norm,
                    ffn: GatedFfn::load(w, cfg, l)?,
                })
            })
            .collect::<Result<Vec<_>, ArchError>>()?;
        Ok(StableLm {
            vocab: cfg.vocab_size,
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            layers,
            attn: AttnConfig::new(cfg, RopeStyle::Neox, None)?,
            output_norm: Norm::layer(w, "output_norm", e, eps)?,
            output: layers::output_weight(w, cfg)?,
        })
    }
}

impl Architecture for StableLm {
    fn forward(
        &self,
        b: &mut dyn Backend,
        s: &Scratch,
        tokens: &[u32],
        pos0: usize,
        which: Logits,
        logits: &mut Vec<f32>,
    ) {
        let n = tokens.len();
        b.embed(self.tok_embd, tokens, s.x);
        for (l, layer) in self.layers.iter().enumerate() {
            layer.attn_norm.apply(b, s.x, s.xn, n);
            layers::attention(b, s, &layer.attn, &self.attn, l, pos0, n);
            b.add(s.x, s.out, n);
            if let Some(norm) = &layer.ffn_norm {
                norm.apply(b, s.x, s.xn, n);
            } // else: parallel residual, the FFN reads the attention's normed input.
            layer.ffn.swiglu(b, s, n);
            b.add(s.x, s.out, n);
        }
        layers::output_logits(
            b,
            s,
            &self.output_norm,
            self.output,
            None,
            self.vocab,
            n,
            which,
            logits,
        );
    }
}
