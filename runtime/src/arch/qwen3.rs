//! Qwen3 (dense): the llama block with a per-head RMSNorm of Q and K before RoPE
//! (`attn_q_norm`, `attn_k_norm`), NeoX RoPE, no biases (llama.cpp src/models/qwen3.cpp).

use super::llama::Llama;
use super::ArchError;
use crate::backend::WeightTable;
use crate::config::{ModelConfig, RopeStyle};

pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Llama, ArchError> {
    let m = Llama::load_with(cfg, w, RopeStyle::Neox)?;
    for (l, layer) in m.layers.iter().enumerate() {
        if layer.attn.q_norm.is_none() || layer.attn.k_norm.is_none() {
            return Err(ArchError::Hyperparameter(format!(
                "qwen3 layer {l} lacks attn_q_norm/attn_k_norm"
            )));
        }
    }
    Ok(m)
}
