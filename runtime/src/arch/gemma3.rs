//! Gemma 3 (text): embeddings scaled by sqrt(n_embd); RMSNorm before and after both the
//! attention and the FFN; per-head RMSNorm of Q and K; NeoX RoPE; Q scaled by
//! 1/sqrt(head_dim) before attention; a sliding window on five of every six layers (those
//! use RoPE base `rope.freq_base_swa`, 10000 by default); tanh-GELU gated FFN; output tied
//! to the embeddings. Mirrors llama.cpp src/models/gemma3.cpp.

use super::layers::{self, blk, AttnConfig, AttnWeights, GatedFfn, Norm, Scratch};
use super::{ArchError, Architecture, Logits};
use crate::backend::{Backend, WeightId, WeightTable};
use crate::config::{ModelConfig, RopeStyle};

struct Layer {
    attn_norm: Norm, // (n_embd)
    attn: AttnWeights,
    attn_post_norm: Norm, // (n_embd)
    /// Sliding-window layer (local attention) or global.
    swa: bool,
    ffn_norm: Norm, // (n_embd)
    ffn: GatedFfn,
    ffn_post_norm: Norm, // (n_embd)
}

pub struct Gemma3 {
    vocab: usize,
    embd_scale: f32,
    tok_embd: WeightId, // (n_embd, vocab)
    layers: Vec<Layer>,
    attn_global: AttnConfig,
    attn_local: AttnConfig,
    output_norm: Norm, // (n_embd)
    output: WeightId,  // (n_embd, vocab), usually = tok_embd
}

impl Gemma3 {
    pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Gemma3, ArchError> {
        let (e, eps) = (cfg.n_embd, cfg.rms_eps);
        let pattern = cfg.sliding_window_pattern.unwrap_or(6);
        let swa_on = cfg.sliding_window > 0;
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let attn = AttnWeights::load(w, cfg, l)?;
                if attn.q_norm.is_none() || attn.k_norm.is_none() {
                    return Err(ArchError::Hyperparameter(format!(
                        "gemma3 layer {l} lacks attn_q_norm/attn_k_norm"
                    )));
                }
                Ok(Layer {
                    attn_norm: Norm::rms(w, &blk(l, "attn_norm"), e, eps)?,
                    attn,
                    attn_post_norm: Norm::rms(w, &blk(l, "post_attention_norm"), e, eps)?,
                    // llama.cpp's set_swa_pattern: the last layer of each group is global.
                    swa: swa_on && l % pattern < pattern - 1,
                    ffn_norm: Norm::rms(w, &blk(l, "ffn_norm"), e, eps)?,
                    ffn: GatedFfn::load(w, cfg, l)?,
                    ffn_post_norm: Norm::rms(w, &blk(l, "post_ffw_norm"), e, eps)?,
                })
            })
            .collect::<Result<Vec<_>, ArchError>>()?;
        let mut attn_global = AttnConfig::new(cfg, RopeStyle::Neox, None)?;
        attn_global.q_prescale = Some(attn_global.attn.scale);
        let mut attn_local = attn_global;
        if let Some(rope) = &mut attn_local.rope {
            rope.freq_base = cfg.rope_freq_base_swa;
            rope.freq_scale = 1.0;
        }
        attn_local.attn.window = Some(cfg.sliding_window.max(1));
        Ok(Gemma3 {
            vocab: cfg.vocab_size,
            embd_scale: (e as f32).sqrt(),
            tok_embd: w.require("token_embd.weight", &[e, cfg.vocab_size])?,
            layers,
            attn_global,
            attn_local,
            output_norm: Norm::rms(w, "output_norm", e, eps)?,
            output: layers::output_weight(w, cfg)?,
        })
    }
}

impl Architecture for Gemma3 {
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
        b.scale(s.x, self.embd_scale, n);
        for (l, layer) in self.layers.iter().enumerate() {
            let attn = if layer.swa {
                &self.attn_local
            } else {
                &self.attn_global
            };
            layer.attn_norm.apply(b, s.x, s.xn, n);
            layers::attention(b, s, &layer.attn, attn, l, pos0, n);
            layer.attn_post_norm.apply(b, s.out, s.out, n);
            b.add(s.x, s.out, n);
            layer.ffn_norm.apply(b, s.x, s.xn, n);
            layer.ffn.geglu(b, s, n);
            layer.ffn_post_norm.apply(b, s.out, s.out, n);
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
