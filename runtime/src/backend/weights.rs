//! The table of weight tensors an architecture uses, checked against its hyperparameters.

use std::sync::Arc;

use super::WeightId;
use crate::gguf::GgufFile;
use crate::kernels::quant::GgmlType;

/// Errors when looking up the weights of an architecture.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("missing tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<u64>,
    },
    #[error("tensor {name} has {len} bytes, its shape and type {ty} need {need}")]
    Size {
        name: String,
        ty: GgmlType,
        len: usize,
        need: u64,
    },
    #[error("tensor {name} is not used by a {arch} model of {n_layer} layers (block_count): the file is mislabelled or inconsistent")]
    Unused {
        name: String,
        arch: String,
        n_layer: usize,
    },
}

/// One registered tensor.
#[derive(Clone, Debug)]
pub struct WeightEntry {
    pub name: String,
    pub ty: GgmlType,
    /// GGUF order: `shape[0]` is the row length (`ne0`).
    pub shape: Vec<usize>,
    /// Where the data is (segment, offset, size).
    info: crate::gguf::TensorInfo,
}

impl WeightEntry {
    /// Length of one row (the reduction dimension of a matrix product).
    pub fn cols(&self) -> usize {
        self.shape[0]
    }
    /// Number of rows (all dimensions after the first).
    pub fn rows(&self) -> usize {
        self.shape[1..].iter().product()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The weights of a model: named views into the memory-mapped file (no copies).
pub struct WeightTable {
    file: Arc<GgufFile>,
    entries: Vec<WeightEntry>,
}

impl WeightTable {
    pub fn new(file: Arc<GgufFile>) -> WeightTable {
        WeightTable {
            file,
            entries: Vec::new(),
        }
    }

    /// Register a tensor that must exist with exactly `shape` (GGUF order; trailing 1s ignored).
    pub fn require(&mut self, name: &str, shape: &[usize]) -> Result<WeightId, WeightError> {
        self.optional(name, shape)?
            .ok_or_else(|| WeightError::Missing(name.to_string()))
    }

    /// Register a tensor when it exists; a present tensor must have `shape`.
    pub fn optional(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<WeightId>, WeightError> {
        if let Some(i) = self.entries.iter().position(|e| e.name == name) {
            return Ok(Some(WeightId(i as u32)));
        }
        let Some(t) = self.file.tensor(name) else {
            return Ok(None);
        };
        let found: Vec<u64> = t.shape.to_vec();
        let trim = |s: &[u64]| -> Vec<u64> {
            let mut v = s.to_vec();
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if trim(&found) != trim(&want) {
            return Err(WeightError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        let numel: u64 = want.iter().product();
        let need = t.ty.row_bytes(numel).unwrap_or(u64::MAX);
        if need != t.data.len() as u64 {
            return Err(WeightError::Size {
                name: name.to_string(),
                ty: t.ty,
                len: t.data.len(),
                need,
            });
        }
        let mut shape = shape.to_vec();
        if shape.len() == 1 {
            shape.push(1);
        }
        let info = match self.file.tensor_info(name) {
            Some(info) => info.clone(),
            None => return Err(WeightError::Missing(name.to_string())),
        };
        self.entries.push(WeightEntry {
            name: name.to_string(),
            ty: t.ty,
            shape,
            info,
        });
        Ok(Some(WeightId((self.entries.len() - 1) as u32)))
    }

    /// Refuses a file with tensors the architecture did not register: layers past
    /// `block_count`, or the tensors of another architecture under this one's label, which
    /// would otherwise run as silent nonsense (llama.cpp refuses such files too).
    pub fn check_all_used(&self, arch: &str, n_layer: usize) -> Result<(), WeightError> {
        let used: std::collections::HashSet<&str> =
            self.entries.iter().map(|e| e.name.as_str()).collect();
        for t in self.file.tensor_infos() {
            if (used.contains(t.name.as_str()) && arch_has(arch, &t.name))
                || ignored_tensor(&t.name)
            {
                continue;
            }
            return Err(WeightError::Unused {
                name: t.name.clone(),
                arch: arch.to_string(),
                n_layer,
            });
        }
        Ok(())
    }

    pub fn entry(&self, id: WeightId) -> &WeightEntry {
        &self.entries[id.0 as usize]
    }

    /// The handle of the registered tensor `name`.
    pub fn id_of(&self, name: &str) -> Option<WeightId> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .map(|i| WeightId(i as u32))
    }

    pub fn entries(&self) -> &[WeightEntry] {
        &self.entries
    }

    /// The bytes of a registered tensor, in place in the mapped file.
    pub fn data(&self, id: WeightId) -> &[u8] {
        let e = &self.entries[id.0 as usize];
        // The reader checked offset + size against the file, which is immutable.
        self.file.data_of(&e.info)
    }

    /// Drops a registered tensor's mapped pages from resident memory (see
    /// [`GgufFile::release_pages`]): for weights converted at load, whose stored bytes are not
    /// read again.
    pub fn release(&self, id: WeightId) {
        self.file.release_pages(&self.entries[id.0 as usize].info);
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }
}

/// Whether `arch` has tensors of `name`'s kind in llama.cpp's tables (`LLM_TENSOR_NAMES`): the
/// shared loaders register some kinds for every architecture (per-head Q/K norms, a fused QKV
/// matrix), which must not make a file of another architecture run under this label.
fn arch_has(arch: &str, name: &str) -> bool {
    if name.ends_with(".attn_q_norm.weight") || name.ends_with(".attn_k_norm.weight") {
        return matches!(arch, "qwen3" | "gemma3" | "stablelm");
    }
    if name.contains(".attn_qkv.") {
        return arch == "phi2";
    }
    true
}

/// Tensors some converters write that no architecture reads (llama.cpp skips them too):
/// precomputed rotary tables of old conversions.
fn ignored_tensor(name: &str) -> bool {
    name.ends_with(".attn_rot_embd") || name.ends_with(".rot_embd.weight")
}
