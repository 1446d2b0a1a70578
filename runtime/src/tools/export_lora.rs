//! Merging LoRA adapters into a model's weights (llama.cpp's `llama-export-lora`): each
//! adapted matrix becomes `W' = W + Σ s·B·A`, requantized to `W`'s own type, so that the
//! written file runs without adapters and computes what the base with the adapters computes
//! at run time (up to the rounding of `W'` to its type).
//!
//! The sum is formed in f32: `W` is dequantized, row `o` of `B·A` is `Σ_k B[o][k]·A[k][·]`
//! (k in order), and `W'` is quantized again with the quantizers `tinyrt quantize` uses
//! ([`crate::tools::quantize::convert`]); f32, f16 and bf16 tensors are just converted. The
//! metadata and every tensor no adapter touches are copied unchanged, in the file's order, so
//! their bytes are the base's. One tensor is held at a time.

use std::path::Path;

use rayon::prelude::*;
use tinyrt_kernels::quant::{self, GgmlType};

use crate::adapters::{LoraAdapter, LoraPair};
use crate::gguf::GgufFile;
use crate::tools::quantize::{convert, GgufStreamWriter, QuantizeError, TensorPlan};

/// What [`export_lora`] did to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportTensor {
    pub name: String,
    pub ty: GgmlType,
    /// Adapter pairs merged into it (0: copied unchanged).
    pub merged: usize,
}

/// What [`export_lora`] did.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    pub tensors: Vec<ExportTensor>,
    pub output_bytes: u64,
}

/// Progress of [`export_lora`]: called after each tensor with (index, count, tensor).
pub type ExportProgress<'a> = &'a mut dyn FnMut(usize, usize, &ExportTensor);

/// Writes `base` with `adapters` (each at its user scale; the pair factor is
/// [`LoraAdapter::scale`]) merged into its weights to `output` (written under a temporary name
/// and renamed into place, see [`GgufStreamWriter`]). The adapters must have been read for
/// `base` ([`LoraAdapter::from_gguf`] checks the targets and shapes). Runs on the current rayon
/// pool.
pub fn export_lora(
    base: &GgufFile,
    adapters: &[(&LoraAdapter, f32)],
    output: &Path,
    progress: ExportProgress<'_>,
) -> Result<ExportReport, QuantizeError> {
    let infos = base.tensor_infos();
    let pairs_of = |name: &str| -> Vec<(&LoraPair, f32)> {
        adapters
            .iter()
            .flat_map(|&(a, user)| {
                a.pairs
                    .iter()
                    .filter(move |p| p.target == name)
                    .map(move |p| (p, a.scale(p, user)))
            })
            .collect()
    };
    // Every target checked before anything is written.
    for (a, _) in adapters {
        for p in &a.pairs {
            let Some(t) = base.tensor_info(&p.target) else {
                return Err(QuantizeError::Internal(format!(
                    "{}: the model has no tensor {}",
                    a.path.display(),
                    p.target
                )));
            };
            if !quant::is_supported(t.ty) {
                return Err(QuantizeError::UnsupportedSource {
                    name: t.name.clone(),
                    ty: t.ty,
                });
            }
            if t.shape.first().copied() != Some(p.n_in as u64)
                || t.n_elements() != (p.n_in * p.n_out) as u64
            {
                return Err(QuantizeError::Internal(format!(
                    "{}: {} is not {} × {}",
                    a.path.display(),
                    p.target,
                    p.n_out,
                    p.n_in
                )));
            }
        }
    }
    let plans: Vec<TensorPlan> = infos
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            ty: t.ty,
            shape: t.shape.clone(),
        })
        .collect();
    let mut writer = GgufStreamWriter::create(output, base.metadata(), plans)?;
    let mut report = ExportReport::default();
    let count = infos.len();
    for (i, info) in infos.iter().enumerate() {
        let tensor = base
            .tensor(&info.name)
            .ok_or_else(|| QuantizeError::Internal(format!("tensor '{}' vanished", info.name)))?;
        let pairs = pairs_of(&info.name);
        if pairs.is_empty() {
            writer.write_tensor(&info.name, tensor.data)?;
        } else {
            let merged = merge(&info.name, info.ty, tensor.data, &pairs)?;
            writer.write_tensor(&info.name, &merged)?;
        }
        let t = ExportTensor {
            name: info.name.clone(),
            ty: info.ty,
            merged: pairs.len(),
        };
        progress(i, count, &t);
        report.tensors.push(t);
    }
    writer.finish()?;
    report.output_bytes = std::fs::metadata(output)
        .map(|m| m.len())
        .map_err(|source| QuantizeError::Write {
            path: output.to_owned(),
            source,
        })?;
    Ok(report)
}

/// `W + Σ s·B·A` of one tensor, in `ty` again.
fn merge(
    name: &str,
    ty: GgmlType,
    data: &[u8],
    pairs: &[(&LoraPair, f32)],
) -> Result<Vec<u8>, QuantizeError> {
    let quant_err = |source| QuantizeError::Quant {
        name: name.to_owned(),
        source,
    };
    let (n_in, n_out) = (pairs[0].0.n_in, pairs[0].0.n_out);
    let mut w = vec![0.0f32; n_in * n_out];
    quant::dequantize(ty, data, &mut w).map_err(quant_err)?;
    let mats: Vec<(Vec<f32>, Vec<f32>, usize, f32)> = pairs
        .iter()
        .map(|(p, s)| (p.a.to_rows(), p.b.to_rows(), p.rank, *s))
        .collect();
    w.par_chunks_mut(n_in.max(1)).enumerate().for_each_init(
        || vec![0.0f32; n_in],
        |delta, (o, row)| {
            for (a, b, r, s) in &mats {
                delta.fill(0.0);
                for (k, &bk) in b[o * r..(o + 1) * r].iter().enumerate() {
                    for (d, &x) in delta.iter_mut().zip(&a[k * n_in..(k + 1) * n_in]) {
                        *d = bk.mul_add(x, *d);
                    }
                }
                for (x, d) in row.iter_mut().zip(delta.iter()) {
                    *x += s * d;
                }
            }
        },
    );
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    drop(w);
    convert(name, GgmlType::F32, &bytes, n_in as u64, ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::fgemm::FloatPanels;

    /// An f32 tensor gets W + s·B·A, checked against the sum done in f64.
    #[test]
    fn merge_adds_the_scaled_product() {
        let (n_in, n_out, r) = (6usize, 3usize, 2usize);
        let a: Vec<f32> = (0..r * n_in).map(|i| i as f32 * 0.25 - 1.0).collect();
        let b: Vec<f32> = (0..n_out * r).map(|i| 0.5 - i as f32 * 0.125).collect();
        let w: Vec<f32> = (0..n_in * n_out).map(|i| i as f32 * 0.01).collect();
        let pair = LoraPair {
            target: "t".into(),
            rank: r,
            n_in,
            n_out,
            a: FloatPanels::pack(r, n_in, false, |i, buf| {
                buf.copy_from_slice(&a[i * n_in..(i + 1) * n_in])
            }),
            b: FloatPanels::pack(n_out, r, false, |i, buf| {
                buf.copy_from_slice(&b[i * r..(i + 1) * r])
            }),
        };
        let data: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let out = merge("t", GgmlType::F32, &data, &[(&pair, 1.5)]).unwrap();
        for o in 0..n_out {
            for c in 0..n_in {
                let d: f64 = (0..r)
                    .map(|k| f64::from(b[o * r + k]) * f64::from(a[k * n_in + c]))
                    .sum();
                let want = f64::from(w[o * n_in + c]) + 1.5 * d;
                let i = (o * n_in + c) * 4;
                let got = f32::from_le_bytes(out[i..i + 4].try_into().unwrap());
                assert!(
                    (f64::from(got) - want).abs() < 1e-6,
                    "{o},{c}: {got} {want}"
                );
            }
        }
    }
}
