//! LoRA adapters applied at run time: `y = W·x + Σ s·B·(A·x)` without touching `W` (the base
//! stays mapped and shared; each session picks its adapters and scales).
//!
//! This file reads llama.cpp's GGUF adapters as `src/llama-adapter.cpp` (build 11434) does:
//! `general.type = adapter`, `general.architecture` equal to the base model's, `adapter.type =
//! lora`, `adapter.lora.alpha` (0 = absent), and per adapted matrix a pair
//! `<base tensor>.lora_a` (ne `[n_in, r]`) / `.lora_b` (ne `[r, n_out]`) of any type the reader
//! dequantizes. Pairs on `*_norm` tensors are skipped, as llama.cpp skips them. The scale of an
//! adapter loaded at `user_scale` is `user_scale · alpha / r` (`user_scale` alone when alpha is
//! 0), llama.cpp's rule.

mod peft;

use std::path::{Path, PathBuf};

use crate::gguf::{GgufFile, GgufWriter};
use crate::kernels::cpu::fgemm::FloatPanels;
use crate::kernels::quant;

/// Errors of loading an adapter: one line each, for the user.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
}

/// One adapted matrix: `W (n_out × n_in) += s · B (n_out × r) · A (r × n_in)`.
#[derive(Debug)]
pub struct LoraPair {
    /// The base tensor's name (`blk.0.attn_q.weight`).
    pub target: String,
    pub rank: usize,
    pub n_in: usize,
    pub n_out: usize,
    /// `A`, packed for the float GEMM (rows `r`, columns `n_in`).
    pub a: FloatPanels,
    /// `B` (rows `n_out`, columns `r`).
    pub b: FloatPanels,
}

impl LoraPair {
    /// Packs `A` (`r × n_in`, row-major) and `B` (`n_out × r`, row-major).
    pub(crate) fn new(
        target: String,
        n_in: usize,
        n_out: usize,
        r: usize,
        av: &[f32],
        bv: &[f32],
    ) -> LoraPair {
        LoraPair {
            target,
            rank: r,
            n_in,
            n_out,
            a: FloatPanels::pack(r, n_in, false, |i, buf| {
                buf.copy_from_slice(&av[i * n_in..(i + 1) * n_in])
            }),
            b: FloatPanels::pack(n_out, r, false, |i, buf| {
                buf.copy_from_slice(&bv[i * r..(i + 1) * r])
            }),
        }
    }
}

/// A LoRA adapter, loaded once per model and shared by the sessions that use it.
#[derive(Debug)]
pub struct LoraAdapter {
    pub path: PathBuf,
    /// `adapter.lora.alpha` (0 when the file has none).
    pub alpha: f32,
    pub pairs: Vec<LoraPair>,
}

impl LoraAdapter {
    /// The factor of pair `p` at `user_scale`: `user_scale · alpha / r`, or `user_scale` when
    /// alpha is 0.
    pub fn scale(&self, p: &LoraPair, user_scale: f32) -> f32 {
        if self.alpha == 0.0 {
            user_scale
        } else {
            user_scale * self.alpha / p.rank as f32
        }
    }

    /// The largest rank of its pairs.
    pub fn rank(&self) -> usize {
        self.pairs.iter().map(|p| p.rank).max().unwrap_or(0)
    }

    /// Bytes of its matrices as held (f32 panels).
    pub fn bytes(&self) -> usize {
        self.pairs.iter().map(|p| p.a.bytes() + p.b.bytes()).sum()
    }

    /// Reads an adapter for `base`: a folder is a PEFT adapter ([`LoraAdapter::from_peft`]),
    /// a file a GGUF one ([`LoraAdapter::from_gguf`]).
    pub fn load(path: &Path, base: &GgufFile) -> Result<LoraAdapter, AdapterError> {
        if path.is_dir() {
            LoraAdapter::from_peft(path, base)
        } else {
            LoraAdapter::from_gguf(path, base)
        }
    }

    /// Reads a PEFT LoRA folder (`adapter_config.json` + `adapter_model.safetensors`) for
    /// `base`, into what llama.cpp's converter would have made of it (names, Q/K row order,
    /// rsLoRA's alpha), so that it computes the same as its GGUF conversion.
    pub fn from_peft(dir: &Path, base: &GgufFile) -> Result<LoraAdapter, AdapterError> {
        peft::load(dir, base)
    }

    /// The PEFT folder `dir` in llama.cpp's GGUF adapter form, ready to write (the bytes
    /// [`LoraAdapter::from_gguf`] reads back into what [`LoraAdapter::from_peft`] gives).
    pub fn peft_to_gguf(dir: &Path, base: &GgufFile) -> Result<GgufWriter, AdapterError> {
        peft::to_gguf(dir, base)
    }

    /// Reads a GGUF adapter for `base` (checked: architecture, every target exists with the
    /// pair's shape).
    pub fn from_gguf(path: &Path, base: &GgufFile) -> Result<LoraAdapter, AdapterError> {
        let bad = |msg: String| AdapterError::Invalid {
            path: path.display().to_string(),
            msg,
        };
        let file = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
        let md = file.metadata();
        let get = |k: &str| md.opt_str(k).map_err(|e| bad(e.to_string()));
        match get("general.type")? {
            Some("adapter") => {}
            Some(t) => return Err(bad(format!("general.type is {t:?}, not \"adapter\""))),
            None => return Err(bad("not an adapter (no general.type)".into())),
        }
        match get("adapter.type")? {
            Some("lora") => {}
            other => return Err(bad(format!("adapter.type is {other:?}, expected \"lora\""))),
        }
        let arch = get("general.architecture")?;
        let base_arch = base
            .metadata()
            .opt_str("general.architecture")
            .ok()
            .flatten();
        if arch != base_arch {
            return Err(bad(format!(
                "an adapter for {:?}, the model is {:?}",
                arch.unwrap_or("?"),
                base_arch.unwrap_or("?")
            )));
        }
        let alpha = md
            .opt_f32("adapter.lora.alpha")
            .map_err(|e| bad(e.to_string()))?
            .unwrap_or(0.0);
        if !alpha.is_finite() {
            return Err(bad(format!("adapter.lora.alpha is {alpha}")));
        }
        let mut targets: Vec<&str> = file
            .tensor_infos()
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_suffix(".lora_a")
                    .or_else(|| t.name.strip_suffix(".lora_b"))
            })
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if let Some(t) = file
            .tensor_infos()
            .iter()
            .find(|t| !t.name.ends_with(".lora_a") && !t.name.ends_with(".lora_b"))
        {
            return Err(bad(format!("tensor {} is not a lora_a/lora_b", t.name)));
        }
        let mut pairs = Vec::new();
        for target in targets {
            // llama.cpp skips norm pairs.
            if target.ends_with("_norm.weight") || target.ends_with("_norm") {
                continue;
            }
            let (Some(a), Some(b)) = (
                file.tensor_info(&format!("{target}.lora_a")),
                file.tensor_info(&format!("{target}.lora_b")),
            ) else {
                return Err(bad(format!("{target}: lora_a or lora_b is missing")));
            };
            let Some(w) = base.tensor_info(target) else {
                return Err(bad(format!("{target}: the model has no such tensor")));
            };
            if target == "token_embd.weight" {
                return Err(bad(
                    "adapters of token_embd are not supported yet".to_string()
                ));
            }
            let dims = |s: &[u64]| -> Option<(usize, usize)> {
                match s {
                    [x, y] => Some((*x as usize, *y as usize)),
                    [x, y, 1] | [x, y, 1, 1] => Some((*x as usize, *y as usize)),
                    _ => None,
                }
            };
            let (Some((n_in, r)), Some((rb, n_out)), Some((w_in, w_out))) =
                (dims(&a.shape), dims(&b.shape), dims(&w.shape))
            else {
                return Err(bad(format!("{target}: lora tensors must be matrices")));
            };
            if r == 0 || r != rb {
                return Err(bad(format!("{target}: rank {r} in lora_a, {rb} in lora_b")));
            }
            if (n_in, n_out) != (w_in, w_out) {
                return Err(bad(format!(
                    "{target}: the pair maps {n_in} → {n_out}, the tensor is {w_in} → {w_out}"
                )));
            }
            let values = |t: &crate::gguf::TensorInfo| -> Result<Vec<f32>, AdapterError> {
                let view = file
                    .tensor(&t.name)
                    .ok_or_else(|| bad(format!("{}: no data", t.name)))?;
                let mut v = vec![0.0f32; t.n_elements() as usize];
                quant::dequantize(t.ty, view.data, &mut v)
                    .map_err(|e| bad(format!("{}: {e}", t.name)))?;
                if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                    return Err(bad(format!("{}: holds {x}", t.name)));
                }
                Ok(v)
            };
            let av = values(a)?;
            let bv = values(b)?;
            pairs.push(LoraPair::new(target.to_string(), n_in, n_out, r, &av, &bv));
        }
        if pairs.is_empty() {
            return Err(bad("the adapter adapts no matrix".into()));
        }
        Ok(LoraAdapter {
            path: path.to_path_buf(),
            alpha,
            pairs,
        })
    }
}
