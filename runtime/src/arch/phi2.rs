//! Phi-2: LayerNorm with bias, fused QKV with bias (or separate Q/K/V), NeoX RoPE on the
//! first `rope.dimension_count` dims of each head, attention and a GELU MLP in parallel on the
//! same normed input, output projection with bias. Mirrors llama.cpp src/models/phi2.cpp.

use super::layers::{self, blk, AttnConfig, AttnWeights, Ffn, Norm, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{Backend, WeightId, WeightTable};
use crate::config::{ModelConfig, RopeStyle};

struct Layer {
    attn_norm: Norm, // (n_embd) weight + bias
    attn: AttnWeights,
    ffn: Ffn,
}

pub struct Phi2 {
    vocab: usize,
    tok_embd: WeightId, // (n_embd, vocab)
    layers: Vec<Layer>,
    attn: AttnConfig,
    output_norm: Norm,          // (n_embd) weight + bias
    output: WeightId,           // (n_embd, vocab)
    output_b: Option<WeightId>, // (vocab)
}

impl Phi2 {
    pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Phi2, ArchError> {
        let (e, eps) = (cfg.n_embd, cfg.norm_eps);
        let layers = (0..cfg.n_layer)
            .map(|l| {
                Ok(Layer {
                    attn_norm: Norm::layer(w, &blk(l, "attn_norm"), e, eps)?,
                    attn: AttnWeights::load(w, cfg, l)?,
                    ffn: Ffn::load(w, cfg, l)?,
                })
            })
            .collect::<Result<Vec<_>, ArchError>>()?;
        let mut attn = AttnConfig::new(cfg, RopeStyle::Neox, None)?;
        // llama.cpp scales Q before attention "to avoid precision issues" and attends with 1.
        attn.q_prescale = Some(attn.attn.scale);
        Ok(Phi2 {
            vocab: cfg.vocab_size,
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            layers,
            attn,
            output_norm: Norm::layer(w, "output_norm", e, eps)?,
            output: layers::output_weight(w, cfg)?,
            output_b: w.optional("output.bias", &[cfg.vocab_size])?,
        })
    }
}

impl Architecture for Phi2 {
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
            // Parallel block: x += attn(xn) + ffn(xn).
            layers::attention(b, s, &layer.attn, &self.attn, l, pos0, n);
            b.add(s.x, s.out, n);
            layer.ffn.gelu(b, s, n);
            b.add(s.x, s.out, n);
        }
        layers::output_logits(
            b,
            s,
            &self.output_norm,
            self.output,
            self.output_b,
            self.vocab,
            n,
            which,
            logits,
        );
    }
}
