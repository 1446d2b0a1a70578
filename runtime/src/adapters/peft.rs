//! PEFT LoRA folders (`adapter_config.json` + `adapter_model.safetensors`, as `save_pretrained`
//! writes them) read into the same [`LoraAdapter`] as llama.cpp's GGUF conversion of them
//! (`convert_lora_to_gguf.py`): the same names, the same Q/K row order, and alpha corrected for
//! rsLoRA (which the converter drops), so both compute the same bits.
//!
//! Only what that form can express is accepted; DoRA, trained biases, `modules_to_save`,
//! embedding adapters and per-module rank/alpha patterns are refused, not silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use super::{AdapterError, LoraAdapter, LoraPair};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, Value};

/// PEFT's module names (after `model.layers.N.`) and the base tensors they adapt.
const MODULES: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Adapter folders are small next to their bases; this only stops a wrong path from filling
/// memory.
const MAX_SAFETENSORS_BYTES: u64 = 8 << 30;

/// One pair as llama.cpp's GGUF holds it: `A` (`r × n_in`) and `B` (`n_out × r`, Q/K rows
/// already permuted), row-major f32.
struct RawPair {
    target: String,
    n_in: usize,
    n_out: usize,
    r: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

pub(super) fn load(dir: &Path, base: &GgufFile) -> Result<LoraAdapter, AdapterError> {
    let (alpha, raw) = read(dir, base)?;
    Ok(LoraAdapter {
        path: dir.to_path_buf(),
        alpha,
        pairs: raw
            .into_iter()
            .map(|p| LoraPair::new(p.target, p.n_in, p.n_out, p.r, &p.a, &p.b))
            .collect(),
    })
}

/// llama.cpp's GGUF adapter form of the folder (what `convert_lora_to_gguf.py --outtype f32`
/// writes, with rsLoRA's alpha corrected): `general.architecture` of the base,
/// `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per pair
/// `<target>.lora_a` (ne `[n_in, r]`) / `.lora_b` (ne `[r, n_out]`), f32.
pub(super) fn to_gguf(dir: &Path, base: &GgufFile) -> Result<GgufWriter, AdapterError> {
    let (alpha, raw) = read(dir, base)?;
    let arch = base.architecture().map_err(|e| AdapterError::Invalid {
        path: dir.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.to_string()))
        .set("general.type", Value::String("adapter".into()))
        .set("adapter.type", Value::String("lora".into()))
        .set("adapter.lora.alpha", Value::F32(alpha));
    for p in raw {
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (n_in, n_out, r) = (p.n_in as u64, p.n_out as u64, p.r as u64);
        for (suffix, shape, v) in [("lora_a", [n_in, r], &p.a), ("lora_b", [r, n_out], &p.b)] {
            w.add_tensor(
                &format!("{}.{suffix}", p.target),
                GgmlType::F32,
                &shape,
                bytes(v),
            )
            .map_err(|e| AdapterError::Invalid {
                path: dir.display().to_string(),
                msg: e.to_string(),
            })?;
        }
    }
    Ok(w)
}

/// The folder checked against `base`: alpha as the GGUF's `adapter.lora.alpha` and the pairs,
/// sorted by target.
fn read(dir: &Path, base: &GgufFile) -> Result<(f32, Vec<RawPair>), AdapterError> {
    let bad = |msg: String| AdapterError::Invalid {
        path: dir.display().to_string(),
        msg,
    };
    let cfg_path = dir.join("adapter_config.json");
    let cfg_text =
        std::fs::read_to_string(&cfg_path).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
    let cfg: Json =
        serde_json::from_str(&cfg_text).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
    let cfg = Config::parse(&cfg).map_err(|m| bad(format!("adapter_config.json: {m}")))?;

    let arch = base.architecture().map_err(|e| bad(e.to_string()))?;
    // llama.cpp's converter permutes the Q/K rows (for its RoPE layout) of `llama` models only
    // among the architectures run here; for the others the HF order is the GGUF order.
    let permute = match arch {
        "llama" => true,
        "qwen2" | "qwen3" => false,
        other => {
            return Err(bad(format!(
                "PEFT adapters for {other:?} models are not supported (llama, qwen2, qwen3)"
            )))
        }
    };
    let md = base.metadata();
    let key = |k: &str| format!("{arch}.attention.{k}");
    let n_head = md.opt_u32(&key("head_count")).ok().flatten().unwrap_or(0) as usize;
    let n_head_kv = md
        .opt_u32(&key("head_count_kv"))
        .ok()
        .flatten()
        .map_or(n_head, |v| v as usize);

    let st_path = dir.join("adapter_model.safetensors");
    let bytes = crate::files::read_input_capped(&st_path, MAX_SAFETENSORS_BYTES)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;

    // GGUF target → (A, B) names, sorted like the GGUF reader's pairs.
    let mut halves: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
    for name in st.names() {
        let (target, half) = map_name(name).map_err(&bad)?;
        let slot = &mut halves.entry(target).or_default()[half];
        if slot.is_some() {
            return Err(bad(format!("{name}: given twice")));
        }
        *slot = Some(name.to_string());
    }
    if halves.is_empty() {
        return Err(bad("the adapter adapts no matrix".into()));
    }

    let mut pairs = Vec::new();
    for (target, [a_name, b_name]) in halves {
        let (Some(a_name), Some(b_name)) = (a_name, b_name) else {
            return Err(bad(format!("{target}: lora_A or lora_B is missing")));
        };
        let Some(w) = base.tensor_info(&target) else {
            return Err(bad(format!("{a_name}: the model has no tensor {target}")));
        };
        let (w_in, w_out) = match w.shape[..] {
            [x, y] | [x, y, 1] | [x, y, 1, 1] => (x as usize, y as usize),
            _ => return Err(bad(format!("{target} is not a matrix"))),
        };
        let (av, a_shape) = values(&st, &a_name).map_err(&bad)?;
        let (bv, b_shape) = values(&st, &b_name).map_err(&bad)?;
        let (&[r, n_in], &[n_out, rb]) = (&a_shape[..], &b_shape[..]) else {
            return Err(bad(format!("{a_name}: lora tensors must be matrices")));
        };
        if r != rb || r != cfg.r {
            return Err(bad(format!(
                "{target}: rank {r} in lora_A, {rb} in lora_B, {} in the config",
                cfg.r
            )));
        }
        if (n_in, n_out) != (w_in, w_out) {
            return Err(bad(format!(
                "{a_name}: the pair maps {n_in} → {n_out}, the model's {target} is {w_in} → {w_out}"
            )));
        }
        let heads = if !permute {
            None
        } else if target.ends_with(".attn_q.weight") {
            Some(n_head)
        } else if target.ends_with(".attn_k.weight") {
            Some(n_head_kv)
        } else {
            None
        };
        let bv = match heads {
            Some(h) => permute_rows(&bv, n_out, r, h).ok_or_else(|| {
                bad(format!(
                    "{target}: {n_out} rows do not split into {h} heads"
                ))
            })?,
            None => bv,
        };
        pairs.push(RawPair {
            target,
            n_in,
            n_out,
            r,
            a: av,
            b: bv,
        });
    }
    Ok((cfg.alpha, pairs))
}

struct Config {
    r: usize,
    /// As the GGUF's `adapter.lora.alpha`: `alpha / r` is PEFT's scaling.
    alpha: f32,
}

impl Config {
    fn parse(v: &Json) -> Result<Config, String> {
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        match get("peft_type").and_then(Json::as_str) {
            Some("LORA") => {}
            Some(t) => return Err(format!("peft_type {t:?} is not supported (only LORA)")),
            None => return Err("no peft_type".into()),
        }
        let flag = |k: &str| -> Result<bool, String> {
            match get(k) {
                None => Ok(false),
                Some(Json::Bool(b)) => Ok(*b),
                Some(x) => Err(format!("{k} is {x}, expected true or false")),
            }
        };
        if flag("use_dora")? {
            return Err("DoRA adapters (use_dora) are not supported".into());
        }
        for k in ["lora_bias", "fan_in_fan_out"] {
            if flag(k)? {
                return Err(format!("{k} is not supported"));
            }
        }
        if let Some(b) = get("bias") {
            if b.as_str() != Some("none") {
                return Err(format!(
                    "bias {b} is not supported (only \"none\": no trained biases)"
                ));
            }
        }
        let nonempty = |x: &Json| match x {
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
            Json::String(s) => !s.is_empty(),
            _ => true,
        };
        for k in [
            "modules_to_save",
            "rank_pattern",
            "alpha_pattern",
            "trainable_token_indices",
            "target_parameters",
            "layer_replication",
        ] {
            if get(k).is_some_and(nonempty) {
                return Err(format!("{k} is not supported"));
            }
        }
        let r = get("r")
            .and_then(Json::as_u64)
            .filter(|&r| r > 0)
            .ok_or("r must be a positive integer")? as usize;
        // PEFT's default when the key is absent.
        let lora_alpha = match get("lora_alpha") {
            None => 8.0,
            Some(x) => x
                .as_f64()
                .filter(|a| a.is_finite())
                .ok_or_else(|| format!("lora_alpha is {x}, expected a number"))?,
        };
        let alpha = if flag("use_rslora")? {
            // rsLoRA scales by alpha / √r; stored as alpha·√r so that alpha / r gives it.
            lora_alpha * (r as f64).sqrt()
        } else {
            lora_alpha
        } as f32;
        if !alpha.is_finite() {
            return Err(format!("lora_alpha {lora_alpha} is out of range"));
        }
        Ok(Config { r, alpha })
    }
}

/// `base_model.model.model.layers.N.<module>.lora_{A,B}.weight` → (`blk.N.<kind>.weight`,
/// 0 for A / 1 for B).
fn map_name(name: &str) -> Result<(String, usize), String> {
    if name.contains("lora_embedding_") {
        return Err(format!("{name}: embedding adapters are not supported"));
    }
    if name.contains("lora_magnitude_vector") {
        return Err(format!("{name}: DoRA adapters are not supported"));
    }
    let unknown = || format!("{name}: not a LoRA tensor of a known module");
    let rest = name
        .strip_prefix("base_model.model.model.layers.")
        .ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    let (module, half) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, 0)
    } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        (m, 1)
    } else {
        return Err(unknown());
    };
    let kind = MODULES
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, k)| *k)
        .ok_or_else(|| format!("{name}: unknown module {module:?}"))?;
    Ok((format!("blk.{layer}.{kind}.weight"), half))
}

/// A tensor's values as f32 (row-major) and its shape; only finite float tensors.
fn values(st: &SafeTensors<'_>, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    let d = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "{name}: type {other} is not supported (F32, F16, BF16)"
            ))
        }
    };
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(format!("{name}: holds {x}"));
    }
    Ok((v, t.shape().to_vec()))
}

/// `B`'s rows (`n_out × r`) in llama.cpp's Q/K order: GGUF row `h·hd + 2i + t` is PEFT row
/// `h·hd + (hd/2)·t + i` (i < hd/2, t ∈ {0, 1}). `None` if the rows do not split into
/// `n_heads` heads of even size.
fn permute_rows(b: &[f32], n_out: usize, r: usize, n_heads: usize) -> Option<Vec<f32>> {
    if n_heads == 0 || !n_out.is_multiple_of(n_heads) || !(n_out / n_heads).is_multiple_of(2) {
        return None;
    }
    let hd = n_out / n_heads;
    let mut out = vec![0.0f32; b.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for t in 0..2 {
                let dst = h * hd + 2 * i + t;
                let src = h * hd + (hd / 2) * t + i;
                out[dst * r..(dst + 1) * r].copy_from_slice(&b[src * r..(src + 1) * r]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of 4 rows, rank 1: PEFT rows [h0: a b c d | h1: e f g h] → [a c b d | e g f h].
        let b: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let p = permute_rows(&b, 8, 1, 2).unwrap();
        assert_eq!(p, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&b, 8, 1, 3).is_none());
    }

    #[test]
    fn names_map_to_gguf_targets() {
        assert_eq!(
            map_name("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight").unwrap(),
            ("blk.3.ffn_down.weight".to_string(), 1)
        );
        assert!(
            map_name("base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight")
                .unwrap_err()
                .contains("unknown module")
        );
        assert!(map_name("base_model.model.lm_head.lora_A.weight").is_err());
    }
}
