//! The safetensors weights of a folder: `model.safetensors`, or the shards that
//! `model.safetensors.index.json` names, each memory-mapped (never read whole), their headers
//! checked before anything is read through them.
//!
//! The order is the converter's (`ModelBase.index_tensors`): shards by file name, tensors of a
//! shard by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use super::hparams::read_json;
use super::HfError;
use crate::gguf::{GgmlType, Segment};

/// One tensor of a shard.
#[derive(Clone, Debug)]
pub(crate) struct SourceTensor {
    /// Its Hugging Face name.
    pub name: String,
    /// F32, F16 or BF16; `None` for other dtypes (an error if the tensor is used: the
    /// converter drops some integer buffers, e.g. BERT's `position_ids`).
    pub ty: Option<GgmlType>,
    /// The safetensors dtype, for messages.
    pub dtype: String,
    /// Row-major (PyTorch) order: the last dimension is contiguous.
    pub shape: Vec<u64>,
    /// The shard (an index into [`Weights::shards`] and into the segments).
    pub shard: usize,
    /// Absolute byte offset of the data in the shard.
    pub offset: u64,
}

impl SourceTensor {
    /// The number of elements.
    pub fn n_elements(&self) -> u64 {
        // safetensors checked that the byte size fits in usize.
        self.shape.iter().product()
    }
}

/// The mapped shards and their tensors, in the converter's order.
pub(crate) struct Weights {
    /// Shard paths; shard `i` is segment `i`.
    pub shards: Vec<PathBuf>,
    pub segments: Vec<Segment>,
    pub tensors: Vec<SourceTensor>,
}

/// Maps and checks the folder's safetensors files.
pub(crate) fn read(dir: &Path) -> Result<Weights, HfError> {
    let index_path = dir.join("model.safetensors.index.json");
    let (parts, index) = match read_json(&index_path)? {
        Some(json) => {
            let map = weight_map(&index_path, &json)?;
            let parts: BTreeSet<String> = map.values().cloned().collect();
            (parts.into_iter().collect(), Some(map))
        }
        None => (single_files(dir)?, None),
    };
    let mut w = Weights {
        shards: Vec::new(),
        segments: Vec::new(),
        tensors: Vec::new(),
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, part) in parts.iter().enumerate() {
        let path = dir.join(part);
        if index.is_some() && std::fs::symlink_metadata(&path).is_err() {
            return Err(HfError::MissingShard {
                index: index_path.clone(),
                shard: part.clone(),
            });
        }
        let segment = Segment::map(&path)?;
        let mut tensors = shard_tensors(&path, segment.bytes(), i)?;
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for t in tensors {
            if let Some(&j) = seen.get(&t.name) {
                return Err(HfError::Safetensors {
                    path: path.clone(),
                    msg: format!("tensor {} is also in {}", t.name, parts[j]),
                });
            }
            seen.insert(t.name.clone(), i);
            w.tensors.push(t);
        }
        w.shards.push(path);
        w.segments.push(segment);
    }
    if let Some(index) = index {
        check_index(&index_path, &index, &seen, &parts)?;
    }
    Ok(w)
}

/// The `weight_map` of an index: tensor name → shard file name (a plain name in the folder).
fn weight_map(path: &Path, json: &Json) -> Result<BTreeMap<String, String>, HfError> {
    let bad = |msg: String| HfError::Config {
        path: path.to_owned(),
        msg,
    };
    let map = json
        .get("weight_map")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut out = BTreeMap::new();
    for (name, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name:?}] is {shard}, not a file name")))?;
        let plain = Path::new(shard)
            .file_name()
            .is_some_and(|f| f == std::ffi::OsStr::new(shard));
        if !plain || shard == ".." {
            return Err(bad(format!(
                "weight_map[{name:?}] is {shard:?}, not a file of the folder"
            )));
        }
        out.insert(name.clone(), shard.to_owned());
    }
    if out.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(out)
}

/// The folder's `model*.safetensors` files, sorted (the converter's `get_model_part_names`).
fn single_files(dir: &Path) -> Result<Vec<String>, HfError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HfError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut parts: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("model") && n.ends_with(".safetensors"))
        .collect();
    parts.sort();
    if parts.is_empty() {
        return Err(HfError::NoWeights {
            dir: dir.to_owned(),
        });
    }
    Ok(parts)
}

/// The tensors of one mapped shard, its header checked (length, JSON, offsets, sizes) before
/// any offset is used.
fn shard_tensors(path: &Path, bytes: &[u8], shard: usize) -> Result<Vec<SourceTensor>, HfError> {
    let bad = |msg: String| HfError::Safetensors {
        path: path.to_owned(),
        msg,
    };
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(bad(format!(
            "the file is {} bytes long, shorter than its 8-byte header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(HfError::HeaderPastEnd {
            path: path.to_owned(),
            header_len,
            file_len: bytes.len() as u64,
        });
    }
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let data_start = 8 + n as u64;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let ty = match info.dtype {
            Dtype::F32 => Some(GgmlType::F32),
            Dtype::F16 => Some(GgmlType::F16),
            Dtype::BF16 => Some(GgmlType::BF16),
            _ => None,
        };
        out.push(SourceTensor {
            name,
            ty,
            dtype: info.dtype.to_string(),
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            shard,
            offset: data_start + info.data_offsets.0 as u64,
        });
    }
    Ok(out)
}

/// The index and the shards name the same tensors (the converter's check).
fn check_index(
    path: &Path,
    index: &BTreeMap<String, String>,
    seen: &BTreeMap<String, usize>,
    parts: &[String],
) -> Result<(), HfError> {
    let bad = |msg: String| HfError::Config {
        path: path.to_owned(),
        msg,
    };
    if let Some((name, shard)) = index.iter().find(|(n, _)| !seen.contains_key(*n)) {
        return Err(bad(format!("tensor {name} is not in {shard}")));
    }
    if let Some((name, &i)) = seen.iter().find(|(n, _)| !index.contains_key(*n)) {
        return Err(bad(format!(
            "tensor {name} of {} is not in the weight_map",
            parts[i]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid one-tensor shard: 2 bf16 values.
    fn shard() -> Vec<u8> {
        let header = br#"{"a.weight":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&[0, 0x3f, 0, 0x40]);
        b
    }

    #[test]
    fn a_valid_shard_gives_its_tensor() {
        let b = shard();
        let t = shard_tensors(Path::new("s"), &b, 0).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].ty, Some(GgmlType::BF16));
        assert_eq!(t[0].shape, [2]);
        // The data are the file's last 4 bytes.
        assert_eq!(t[0].offset, b.len() as u64 - 4);
    }

    proptest! {
        /// Any byte changed, or the file cut anywhere, gives a result or an error, never a
        /// panic, and tensors only inside the file.
        #[test]
        fn damaged_shards_never_panic(pos in 0usize..80, byte in any::<u8>(), cut in 0usize..80) {
            let mut b = shard();
            let p = pos % b.len();
            b[p] = byte;
            b.truncate(b.len() - cut % b.len());
            if let Ok(tensors) = shard_tensors(Path::new("s"), &b, 0) {
                for t in tensors {
                    let size = t.n_elements() * t.ty.map_or(1, |ty| ty.type_size() as u64);
                    prop_assert!(t.offset + size <= b.len() as u64);
                }
            }
        }
    }
}
