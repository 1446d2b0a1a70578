//! Llama (Llama 1/2/3, Mistral, TinyLlama, SmolLM): pre-RMSNorm blocks, RoPE in the
//! adjacent-pair ("normal") convention the GGUF llama files store Q/K for, grouped-query
//! attention, SwiGLU FFN, output tied to the embeddings when `output.weight` is absent,
//! Llama-3 frequency factors from `rope_freqs.weight`. Mirrors llama.cpp src/models/llama.cpp.

use super::layers::{self, blk, AttnConfig, AttnWeights, GatedFfn, Norm, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{Backend, WeightId, WeightTable};
use crate::config::{ModelConfig, RopeStyle};

pub(super) struct Layer {
    attn_norm: Norm, // (n_embd)
    pub(super) attn: AttnWeights,
    ffn_norm: Norm, // (n_embd)
    ffn: GatedFfn,
}

pub struct Llama {
    vocab: usize,
    tok_embd: WeightId, // (n_embd, vocab)
    pub(super) layers: Vec<Layer>,
    attn: AttnConfig,
    output_norm: Norm, // (n_embd)
    output: WeightId,  // (n_embd, vocab), maybe = tok_embd
}

impl Llama {
    pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Llama, ArchError> {
        Llama::load_with(cfg, w, RopeStyle::Normal)
    }

    /// The llama block with another RoPE convention (the qwen family uses NeoX halves).
    pub fn load_with(
        cfg: &ModelConfig,
        w: &mut WeightTable,
        rope: RopeStyle,
    ) -> Result<Llama, ArchError> {
        let e = cfg.n_embd;
        let eps = cfg.rms_eps;
        let rope_freqs = w.optional("rope_freqs.weight", &[cfg.n_rot / 2])?;
        let layers = (0..cfg.n_layer)
            .map(|l| {
                Ok(Layer {
                    attn_norm: Norm::rms(w, &blk(l, "attn_norm"), e, eps)?,
                    attn: AttnWeights::load(w, cfg, l)?,
                    ffn_norm: Norm::rms(w, &blk(l, "ffn_norm"), e, eps)?,
                    ffn: GatedFfn::load(w, cfg, l)?,
                })
            })
            .collect::<Result<Vec<_>, ArchError>>()?;
        Ok(Llama {
            vocab: cfg.vocab_size,
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            layers,
            attn: AttnConfig::new(cfg, rope, rope_freqs)?,
            output_norm: Norm::rms(w, "output_norm", e, eps)?,
            output: layers::output_weight(w, cfg)?,
        })
    }
}

impl Architecture for Llama {
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
            layer.ffn_norm.apply(b, s.x, s.xn, n);
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
