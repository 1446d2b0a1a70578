//! Qwen2 / Qwen2.5: the llama block with Q/K/V biases and NeoX RoPE (llama.cpp
//! src/models/qwen2.cpp); output tied to the embeddings when `output.weight` is absent.

use super::layers::Qkv;
use super::llama::Llama;
use super::ArchError;
use crate::backend::WeightTable;
use crate::config::{ModelConfig, RopeStyle};

pub fn load(cfg: &ModelConfig, w: &mut WeightTable) -> Result<Llama, ArchError> {
    let m = Llama::load_with(cfg, w, RopeStyle::Neox)?;
    for (l, layer) in m.layers.iter().enumerate() {
        let has_biases = matches!(
            layer.attn.qkv,
            Qkv::Separate {
                bq: Some(_),
                bk: Some(_),
                bv: Some(_),
                ..
            }
        );
        if !has_biases {
            return Err(ArchError::Hyperparameter(format!(
                "qwen2 layer {l} lacks the attn_q/attn_k/attn_v biases"
            )));
        }
    }
    Ok(m)
}
