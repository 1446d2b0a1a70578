//! The tensors of the converter's GGUF at the stored type: names, order, shapes and the few
//! values it changes (Q/K rows of the llama family, Gemma norms as 1 + w, 1-D tensors as F32,
//! `rope_freqs.weight` for llama3 rope scaling); everything else in place in the mapped shards.
//! Also the f32 / f16 / bf16 conversions of its writer (`gguf-py/gguf/quants.py`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{Map, Value as Json};

use super::arch::{Arch, Dims, Role};
use super::hparams::{read_json, Hparams};
use super::weights::{SourceTensor, Weights};
use super::HfError;
use crate::gguf::{GgmlType, PartTensor, Segment};

/// The planned tensors and the segments their data lies in (the shards first, then the owned
/// buffers of converted tensors).
pub(crate) struct Plan {
    pub tensors: Vec<PartTensor>,
    pub segments: Vec<Segment>,
    /// Converted tensors' buffers, segments `segments.len()..` once appended.
    owned: Vec<Segment>,
    /// The converter's parameter count (for `general.size_label`).
    pub total_params: u64,
    /// The type of the first tensor of two or more dimensions as stored (the converter's
    /// `auto` outtype looks at it); `None` when there is none.
    pub first_matrix_type: Option<GgmlType>,
}

/// Whether the converter stores a tensor as F32 whatever the outtype (`prepare_tensors`):
/// 1-D tensors, norms, and anything not named `*.weight`.
pub(crate) fn forced_f32(name: &str, n_dims: usize) -> bool {
    n_dims <= 1
        || name.ends_with("_norm.weight")
        || !name.ends_with(".weight")
        || name == "position_embd.weight"
        || name == "token_types.weight"
}

/// What happens to one source tensor.
struct Change {
    /// Q/K rows rearranged for this many heads.
    permute_heads: Option<u64>,
    /// Norm weights stored as 1 + w.
    shift: bool,
    /// Rows kept (Gemma-3's embedding cut to the tokenizer's size).
    keep_rows: Option<u64>,
}

/// Plans the tensors of a folder.
pub(crate) fn plan(
    dir: &Path,
    arch: Arch,
    hp: &Hparams,
    rope: &Map<String, Json>,
    weights: Weights,
) -> Result<Plan, HfError> {
    let dims = Dims::read(arch, hp)?;
    let Weights {
        shards,
        segments,
        tensors,
    } = weights;
    let mut plan = Plan {
        tensors: Vec::new(),
        segments: Vec::new(),
        owned: Vec::new(),
        total_params: 0,
        first_matrix_type: None,
    };
    let n_shards = segments.len();
    if let Some(factors) = llama3_rope_factors(arch, hp, rope)? {
        push_owned(
            &mut plan,
            n_shards,
            "rope_freqs.weight",
            GgmlType::F32,
            vec![factors.len() as u64],
            bytemuck::cast_slice(&factors).to_vec(),
        );
    }
    let mut names = HashSet::new();
    // BERT's pooler serves its classification head only: a plain encoder (BertModel, a
    // sentence-embedding model such as all-MiniLM-L6-v2, mean-pooled) drops it, as the
    // converter does.
    let has_head = tensors.iter().any(|t| t.name.contains("classifier."));
    for src in &tensors {
        if arch.is_dropped(&src.name) || (!has_head && arch.is_pooler(&src.name)) {
            continue;
        }
        let path = &shards[src.shard];
        let Some(ty) = src.ty else {
            return Err(HfError::UnsupportedDtype {
                path: path.clone(),
                name: src.name.clone(),
                dtype: src.dtype.clone(),
            });
        };
        if plan.first_matrix_type.is_none() && src.shape.len() >= 2 {
            plan.first_matrix_type = Some(ty);
        }
        let mapped = arch
            .map(&src.name, &dims)
            .ok_or_else(|| HfError::UnknownTensor {
                path: path.clone(),
                name: src.name.clone(),
                arch: arch.gguf_name(),
            })?;
        let expected = dims.expected_shape(&mapped);
        if src.shape != expected {
            return Err(HfError::ShapeMismatch {
                path: path.clone(),
                name: src.name.clone(),
                found: src.shape.clone(),
                expected,
            });
        }
        let permute_heads = match mapped.role {
            Role::Q if arch.permutes_qk() => Some(dims.n_head),
            Role::K if arch.permutes_qk() => Some(dims.n_head_kv),
            _ => None,
        };
        if let Some(heads) = permute_heads {
            if !(expected[0] / heads).is_multiple_of(2) {
                return Err(hp.bad(format!(
                    "{}: the head width must be even for rope",
                    src.name
                )));
            }
        }
        let keep_rows = match mapped.role {
            Role::TokenEmbd if arch == Arch::Gemma3 => gemma3_vocab(dir, &dims)?,
            _ => None,
        }
        .filter(|&n| n < expected[0]);
        let change = Change {
            permute_heads,
            shift: arch.shifts_norms() && mapped.name.ends_with("norm.weight"),
            keep_rows,
        };
        // safetensors checked the offsets and sizes against the file.
        let start = src.offset as usize;
        let len = (src.n_elements() * ty.type_size() as u64) as usize;
        let bytes = &segments[src.shard].bytes()[start..start + len];
        let before = plan.total_params;
        add_tensor(
            &mut plan,
            n_shards,
            mapped.name.clone(),
            src,
            ty,
            bytes,
            &change,
        );
        if mapped.extra {
            // Not in the converter's file, so not in its parameter count.
            plan.total_params = before;
        }
        names.insert(mapped.name);
    }
    for name in arch.required(&dims) {
        if !names.contains(&name) {
            return Err(HfError::MissingTensor {
                dir: dir.to_owned(),
                name,
                arch: arch.gguf_name(),
            });
        }
    }
    plan.segments = segments;
    plan.segments.append(&mut plan.owned);
    Ok(plan)
}

/// Adds one source tensor: in place when unchanged, otherwise converted into an owned buffer.
fn add_tensor(
    plan: &mut Plan,
    n_shards: usize,
    name: String,
    src: &SourceTensor,
    src_ty: GgmlType,
    bytes: &[u8],
    change: &Change,
) {
    let mut shape = src.shape.clone();
    let mut bytes = bytes;
    if let Some(rows) = change.keep_rows {
        let row_bytes = bytes.len() as u64 / shape[0];
        bytes = &bytes[..(rows * row_bytes) as usize];
        shape[0] = rows;
    }
    let ne: Vec<u64> = shape.iter().rev().copied().collect();
    let out_ty = if forced_f32(&name, shape.len()) {
        GgmlType::F32
    } else {
        src_ty
    };
    if change.permute_heads.is_none() && !change.shift && out_ty == src_ty {
        plan.total_params += ne.iter().product::<u64>();
        let offset = src.offset;
        plan.tensors.push(PartTensor {
            name,
            ty: out_ty,
            shape: ne,
            segment: src.shard,
            offset,
        });
        return;
    }
    let mut data: Cow<[u8]> = Cow::Borrowed(bytes);
    if let Some(heads) = change.permute_heads {
        data = Cow::Owned(permute_rows(&data, shape[0], heads));
    }
    let data = if change.shift {
        let values: Vec<f32> = decode(&data, src_ty)
            .map(|x| match src_ty {
                // The converter adds in the tensor's own type: f16 stays f16 in PyTorch.
                GgmlType::F16 => half::f16::from_f32(x + 1.0).to_f32(),
                _ => x + 1.0,
            })
            .collect();
        encode(values.into_iter(), out_ty)
    } else {
        retype(&data, src_ty, out_ty).into_owned()
    };
    push_owned(plan, n_shards, &name, out_ty, ne, data);
}

/// Adds a tensor whose bytes are its own segment.
fn push_owned(
    plan: &mut Plan,
    n_shards: usize,
    name: &str,
    ty: GgmlType,
    ne: Vec<u64>,
    data: Vec<u8>,
) {
    plan.total_params += ne.iter().product::<u64>();
    plan.tensors.push(PartTensor {
        name: name.to_owned(),
        ty,
        shape: ne,
        segment: n_shards + plan.owned.len(),
        offset: 0,
    });
    plan.owned.push(Segment::owned(&data));
}

/// `LlamaModel.permute`: within each head of `rows / heads` rows, GGUF row `2i + t` is
/// Hugging Face row `(rows / heads / 2)·t + i`, rows of any width and type.
fn permute_rows(data: &[u8], rows: u64, heads: u64) -> Vec<u8> {
    let rows = rows as usize;
    let heads = heads as usize;
    let row = data.len() / rows;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for t in 0..2 {
                let dst = h * hd + 2 * i + t;
                let src = h * hd + half * t + i;
                out[dst * row..(dst + 1) * row].copy_from_slice(&data[src * row..(src + 1) * row]);
            }
        }
    }
    out
}

/// Gemma-3's embedding rows the converter keeps: the tokenizer's size (`tokenizer.model`'s
/// vocabulary, padded to `vocab_size`; or `tokenizer.json`'s vocabulary and added tokens).
fn gemma3_vocab(dir: &Path, dims: &Dims) -> Result<Option<u64>, HfError> {
    if dir.join("tokenizer.model").is_file() {
        return Ok(Some(dims.vocab));
    }
    let path = dir.join("tokenizer.json");
    let Some(json) = read_json(&path)? else {
        return Ok(None);
    };
    let vocab = json
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(Json::as_object)
        .map(Map::len);
    let added = json
        .get("added_tokens")
        .and_then(Json::as_array)
        .map(Vec::len);
    match (vocab, added) {
        (Some(v), Some(a)) => Ok(Some((v + a) as u64)),
        _ => Err(HfError::Json {
            path,
            msg: "no model.vocab object or added_tokens list".into(),
        }),
    }
}

/// `rope_freqs.weight` for llama3 rope scaling (`LlamaModel.generate_extra_tensors`), in the
/// converter's float32 arithmetic (PyTorch computes `a / t` as `t.reciprocal() * a`).
fn llama3_rope_factors(
    arch: Arch,
    hp: &Hparams,
    rope: &Map<String, Json>,
) -> Result<Option<Vec<f32>>, HfError> {
    if arch != Arch::Llama {
        return Ok(None);
    }
    let params = match rope.get("full_attention") {
        Some(Json::Object(m)) => m,
        _ => rope,
    };
    let is_llama3 = params
        .get("rope_type")
        .and_then(Json::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("llama3"));
    if !is_llama3 {
        return Ok(None);
    }
    let num = |k: &str, default: f64| -> Result<f64, HfError> {
        match params.get(k).filter(|v| !v.is_null()) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| hp.bad(format!("rope {k} is {v}, expected a number"))),
        }
    };
    let base = num("rope_theta", 10000.0)?;
    let dim = match hp.find_u32(&["head_dim"])? {
        Some(d) => d,
        None => {
            let hidden = hp.req_u32(&["hidden_size"])?;
            let heads = hp.req_u32(&["num_attention_heads"])?;
            hidden
                .checked_div(heads)
                .ok_or_else(|| hp.bad("num_attention_heads is 0"))?
        }
    };
    if dim == 0 || dim > 65536 {
        return Err(hp.bad(format!("head width {dim} is out of range for llama3 rope")));
    }
    let factor = num("factor", 8.0)? as f32;
    let low = num("low_freq_factor", 1.0)? as f32;
    let high = num("high_freq_factor", 4.0)? as f32;
    let old_ctx = num("original_max_position_embeddings", 8192.0)? as f32;
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let base = base as f32;
    let two_pi = std::f64::consts::TAU as f32;
    let factors = (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            let freq = (1.0 / base.powf(exponent)) * 1.0;
            let wavelen = (1.0 / freq) * two_pi;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = ((1.0 / wavelen) * old_ctx - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) * 1.0
            }
        })
        .collect();
    Ok(Some(factors))
}

/// The values of F32 / F16 / BF16 data as f32 (exact).
pub(crate) fn decode(data: &[u8], ty: GgmlType) -> Box<dyn Iterator<Item = f32> + '_> {
    match ty {
        GgmlType::F16 => Box::new(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::BF16 => Box::new(
            data.chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)),
        ),
        _ => Box::new(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
    }
}

/// f32 values stored as F32, F16 (numpy's `astype(float16)`: round to nearest even) or BF16
/// (gguf-py's `__quantize_bf16_array`: NaN quieted, round to nearest even).
pub(crate) fn encode(values: impl Iterator<Item = f32>, ty: GgmlType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.size_hint().0 * 4);
    match ty {
        GgmlType::F16 => values.for_each(|x| out.extend(half::f16::from_f32(x).to_le_bytes())),
        GgmlType::BF16 => values.for_each(|x| out.extend(bf16_bits(x).to_le_bytes())),
        _ => values.for_each(|x| out.extend(x.to_le_bytes())),
    }
    out
}

/// gguf-py's f32 → bf16 rounding.
fn bf16_bits(x: f32) -> u16 {
    let mut n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        n = (n & 0xffff_0000) | (64 << 16);
    }
    let n = n.wrapping_add(0x7fff + ((n >> 16) & 1)) >> 16;
    n as u16
}

/// F32 / F16 / BF16 data in another of these types (borrowed when the type is the same),
/// converted in parallel on the current rayon pool.
pub(crate) fn retype(data: &[u8], from: GgmlType, to: GgmlType) -> Cow<'_, [u8]> {
    /// Values per parallel work item.
    const CHUNK: usize = 1 << 16;
    if from == to {
        return Cow::Borrowed(data);
    }
    let parts: Vec<Vec<u8>> = data
        .par_chunks(CHUNK * from.type_size())
        .map(|c| encode(decode(c, from), to))
        .collect();
    Cow::Owned(parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of 4 one-byte rows: [a b c d | e f g h] → [a c b d | e g f h].
        let p = permute_rows(&[0, 1, 2, 3, 4, 5, 6, 7], 8, 2);
        assert_eq!(p, [0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn bf16_rounding_follows_gguf_py() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // Halfway cases round to even.
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        // NaN stays NaN (quieted).
        assert_eq!(bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        let v = [0.1f32, -3.5, 65504.0, 1e-8];
        let f16 = retype(bytemuck::cast_slice(&v), GgmlType::F32, GgmlType::F16);
        let back: Vec<f32> = decode(&f16, GgmlType::F16).collect();
        assert_eq!(back[1], -3.5);
        assert_eq!(back[2], 65504.0);
    }
}
