//! Weights on the device: how each registered tensor is stored, and the upload at load.

use std::sync::Arc;

use tinyrt_cuda::{CudaDevice, CudaError, DeviceBuffer, WeightType};

use crate::backend::cpu::RequantReport;
use crate::backend::{WeightEntry, WeightId, WeightTable};
use crate::kernels::quant::{self, GgmlType, QuantFormat};

/// Errors preparing weights for the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaBackendError {
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("tensor {name} has type {ty}, which the CUDA backend does not support")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("the CUDA backend cannot convert weights to {0}")]
    UnsupportedRequant(QuantFormat),
}

/// How one registered tensor is stored on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadPlan {
    /// A 1-D tensor, dequantized to f32 on the host.
    Vector,
    /// A matrix in its GGUF layout; `planar`: also a Q4_0 planar copy for decode.
    Matrix { ty: WeightType, planar: bool },
}

/// Decide how a tensor of type `ty`, `rows × cols`, is uploaded (`None`: no CUDA kernel).
pub fn upload_plan(ty: GgmlType, rows: usize, cols: usize) -> Option<UploadPlan> {
    if rows == 1 {
        return quant::is_supported(ty).then_some(UploadPlan::Vector);
    }
    let wt = WeightType::from_ggml(ty)?;
    wt.row_bytes(cols)?;
    Some(UploadPlan::Matrix {
        ty: wt,
        planar: wt == WeightType::Q4_0,
    })
}

/// The CUDA format of a storage format (`NF4`, or a ggml type with CUDA kernels).
pub fn cuda_format(fmt: QuantFormat) -> Option<WeightType> {
    match fmt {
        QuantFormat::Nf4 => Some(WeightType::NF4),
        QuantFormat::Ggml(t) => WeightType::from_ggml(t),
    }
}

/// The matrices a matrix product reads: every registered tensor of more than one row, except
/// the token embedding when a separate `output.weight` exists (then it is only looked up).
/// The same choice as the CPU backend's `--requant` (`CpuWeights::with_requant`).
fn is_matmul_weight(table: &WeightTable, e: &WeightEntry) -> bool {
    e.rows() > 1
        && !(e.name == "token_embd.weight"
            && table.entries().iter().any(|o| o.name == "output.weight"))
}

/// The output head (`output.weight`, or the token embedding it is tied to), kept as stored
/// by `--requant` on either backend.
fn is_output_head(table: &WeightTable, e: &WeightEntry) -> bool {
    e.name == "output.weight"
        || (e.name == "token_embd.weight"
            && !table.entries().iter().any(|o| o.name == "output.weight"))
}

/// Per registered tensor, its bytes converted by `--requant` (`None`: kept as stored).
pub type Converted = Vec<Option<Vec<u8>>>;

/// `--requant` on the host for the CUDA backend: every matmul weight but the output head whose
/// row length is a whole number of `fmt` blocks, dequantized to f32 row by row and quantized
/// with the kernels' quantizer (what the CPU backend does), in parallel. Per tensor: the
/// converted bytes, or `None` (kept as stored).
pub fn requant_matrices(
    table: &WeightTable,
    fmt: QuantFormat,
) -> Result<(Converted, RequantReport), CudaBackendError> {
    use rayon::prelude::*;
    let Some(wt) = cuda_format(fmt).filter(|_| fmt.is_supported()) else {
        return Err(CudaBackendError::UnsupportedRequant(fmt));
    };
    let block = fmt.block_size();
    let mut report = RequantReport {
        format: fmt,
        converted: 0,
        kept: Vec::new(),
        head: None,
        bytes_before: 0,
        bytes_after: 0,
        bytes_f16: 0,
    };
    let mut todo = Vec::new();
    for (i, e) in table.entries().iter().enumerate() {
        if !is_matmul_weight(table, e) {
            continue;
        }
        let stored = table.data(WeightId(i as u32)).len() as u64;
        report.bytes_before += stored;
        report.bytes_f16 += 2 * e.numel() as u64;
        if is_output_head(table, e) {
            report.bytes_after += stored;
            report.head = Some(e.name.clone());
        } else if e.cols() % block == 0 && wt.row_bytes(e.cols()).is_some() {
            todo.push(i);
        } else {
            report.bytes_after += stored;
            report.kept.push(e.name.clone());
        }
    }
    let converted: Vec<(usize, Result<Vec<u8>, CudaBackendError>)> = todo
        .par_iter()
        .map(|&i| {
            let id = WeightId(i as u32);
            let e = table.entry(id);
            let src = table.data(id);
            let (cols, rows) = (e.cols(), e.rows());
            let src_row = src.len() / rows;
            let dst_row = cols / block * fmt.type_size();
            let mut out = vec![0u8; rows * dst_row];
            let unsupported = || CudaBackendError::UnsupportedType {
                name: e.name.clone(),
                ty: e.ty,
            };
            let r = out
                .par_chunks_mut(dst_row)
                .zip(src.par_chunks(src_row))
                .try_for_each_init(
                    || vec![0.0f32; cols],
                    |row, (dst, s)| {
                        quant::dequantize(e.ty, s, row).map_err(|_| unsupported())?;
                        quant::quantize_format(fmt, row, dst).map_err(|_| unsupported())
                    },
                );
            (i, r.map(|()| out))
        })
        .collect();
    let mut slots = vec![None; table.entries().len()];
    report.converted = converted.len();
    for (i, data) in converted {
        let data = data?;
        report.bytes_after += data.len() as u64;
        slots[i] = Some(data);
    }
    Ok((slots, report))
}

/// How tensor `i` is uploaded and the bytes that go up: the converted matrix when `requant`
/// holds one for it (in its format's CUDA type, no planar copy), else the stored tensor.
pub fn upload_source<'a>(
    table: &'a WeightTable,
    i: usize,
    requant: Option<(QuantFormat, &'a [Option<Vec<u8>>])>,
) -> Result<(UploadPlan, &'a [u8]), CudaBackendError> {
    let e = &table.entries()[i];
    if let Some((fmt, slots)) = requant {
        if let Some(Some(data)) = slots.get(i) {
            let ty = cuda_format(fmt).ok_or(CudaBackendError::UnsupportedRequant(fmt))?;
            return Ok((UploadPlan::Matrix { ty, planar: false }, data));
        }
    }
    let plan =
        upload_plan(e.ty, e.rows(), e.cols()).ok_or_else(|| CudaBackendError::UnsupportedType {
            name: e.name.clone(),
            ty: e.ty,
        })?;
    Ok((plan, table.data(WeightId(i as u32))))
}

pub(super) enum DeviceWeight {
    Vector(DeviceBuffer<f32>),
    Matrix {
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: DeviceBuffer<u8>,
        planar: Option<DeviceBuffer<u8>>,
    },
}

/// A model's weights on one GPU; shared by every session.
pub struct CudaWeights {
    pub(super) dev: Arc<CudaDevice>,
    pub(super) table: Arc<WeightTable>,
    pub(super) tensors: Vec<DeviceWeight>,
    /// Bytes of weights a decode step reads (all matrices but the embedding when untied).
    bytes: usize,
}

impl CudaWeights {
    /// Upload every registered tensor to `dev` and compile the kernels; `requant`: per tensor,
    /// the bytes of a matrix converted to `fmt` ([`requant_matrices`]) uploaded instead of the
    /// stored ones.
    pub fn new(
        dev: Arc<CudaDevice>,
        table: Arc<WeightTable>,
        requant: Option<(QuantFormat, &[Option<Vec<u8>>])>,
    ) -> Result<Arc<CudaWeights>, CudaBackendError> {
        let mut tensors = Vec::with_capacity(table.entries().len());
        let mut bytes = 0;
        for (i, e) in table.entries().iter().enumerate() {
            let (plan, data) = upload_source(&table, i, requant)?;
            match plan {
                UploadPlan::Vector => {
                    let mut v = vec![0.0f32; e.cols()];
                    quant::dequantize(e.ty, data, &mut v).map_err(|_| {
                        CudaBackendError::UnsupportedType {
                            name: e.name.clone(),
                            ty: e.ty,
                        }
                    })?;
                    tensors.push(DeviceWeight::Vector(dev.upload(&v)?));
                }
                UploadPlan::Matrix { ty, planar } => {
                    let buf = dev.upload(data)?;
                    let planar = if planar {
                        let mut p = dev.alloc_zeros::<u8>(data.len())?;
                        dev.repack_q4_0_planar(&buf, &mut p, e.rows(), e.cols())?;
                        Some(p)
                    } else {
                        None
                    };
                    bytes += data.len();
                    tensors.push(DeviceWeight::Matrix {
                        ty,
                        rows: e.rows(),
                        cols: e.cols(),
                        data: buf,
                        planar,
                    });
                }
            }
        }
        dev.load_all()?;
        dev.synchronize()?;
        Ok(Arc::new(CudaWeights {
            dev,
            table,
            tensors,
            bytes,
        }))
    }

    /// Total bytes of the uploaded matrices (GGUF layout).
    pub fn matrix_bytes(&self) -> usize {
        self.bytes
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_uploaded_as_f32_and_q4_0_matrices_also_planar() {
        assert_eq!(upload_plan(GgmlType::F32, 1, 576), Some(UploadPlan::Vector));
        assert_eq!(
            upload_plan(GgmlType::Q4_0, 576, 576),
            Some(UploadPlan::Matrix {
                ty: WeightType::Q4_0,
                planar: true
            })
        );
        assert_eq!(
            upload_plan(GgmlType::Q6_K, 49152, 576),
            None,
            "576 columns are not a whole number of Q6_K super-blocks"
        );
        assert_eq!(
            upload_plan(GgmlType::Q8_0, 1536, 576),
            Some(UploadPlan::Matrix {
                ty: WeightType::Q8_0,
                planar: false
            })
        );
    }

    #[test]
    fn types_without_a_cuda_kernel_are_rejected() {
        assert_eq!(upload_plan(GgmlType::Q5_1, 64, 64), None);
        assert_eq!(upload_plan(GgmlType::Q2_K, 64, 256), None);
    }

    fn fixture_table(name: &str) -> Arc<WeightTable> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let file = Arc::new(crate::gguf::GgufFile::open(std::path::Path::new(&path)).unwrap());
        let config = crate::config::ModelConfig::from_metadata(file.metadata()).unwrap();
        let mut table = WeightTable::new(Arc::clone(&file));
        crate::arch::load(&config, &mut table).unwrap();
        Arc::new(table)
    }

    #[test]
    fn requant_to_nf4_uploads_nf4_matrices_converted_like_the_cpu_backend() {
        for name in ["llama-tiny-q8_0.gguf", "qwen2-tiny-q4_0.gguf"] {
            let table = fixture_table(name);
            let (slots, report) = requant_matrices(&table, QuantFormat::Nf4).unwrap();
            // The same choice of matrices and the same sizes as the CPU backend's requant.
            let isa = crate::kernels::cpu::Isa::default_for_process();
            if let Ok(cpu) = crate::backend::cpu::CpuWeights::with_requant(
                Arc::clone(&table),
                isa,
                Some(QuantFormat::Nf4),
            ) {
                assert_eq!(Some(&report), cpu.requant_report(), "{name}");
            }
            assert!(report.converted > 0, "{name}: nothing converted");
            let mut converted = 0;
            for (i, e) in table.entries().iter().enumerate() {
                let (plan, data) =
                    upload_source(&table, i, Some((QuantFormat::Nf4, slots.as_slice()))).unwrap();
                let stored = table.data(WeightId(i as u32));
                match &slots[i] {
                    Some(bytes) => {
                        converted += 1;
                        assert_eq!(
                            plan,
                            UploadPlan::Matrix {
                                ty: WeightType::NF4,
                                planar: false
                            },
                            "{}",
                            e.name
                        );
                        assert_eq!(data, bytes.as_slice());
                        // The bytes are those of the CPU requant: each stored row dequantized
                        // to f32, then quantized to NF4.
                        let mut want = vec![0u8; bytes.len()];
                        let (cols, rows) = (e.cols(), e.rows());
                        let dst_row = bytes.len() / rows;
                        let mut row = vec![0.0f32; cols];
                        for (dst, src) in want
                            .chunks_mut(dst_row)
                            .zip(stored.chunks(stored.len() / rows))
                        {
                            quant::dequantize(e.ty, src, &mut row).unwrap();
                            quant::quantize_format(QuantFormat::Nf4, &row, dst).unwrap();
                        }
                        assert_eq!(*bytes, want, "{}", e.name);
                    }
                    None => {
                        assert_eq!(Some(plan), upload_plan(e.ty, e.rows(), e.cols()));
                        assert_eq!(data, stored, "{} kept as stored", e.name);
                    }
                }
            }
            assert_eq!(converted, report.converted);
            if let Some(head) = &report.head {
                let i = table
                    .entries()
                    .iter()
                    .position(|e| &e.name == head)
                    .unwrap();
                assert!(slots[i].is_none(), "the output head is kept as stored");
            }
        }
    }

    #[test]
    fn requant_to_a_format_without_cuda_kernels_is_refused() {
        let table = fixture_table("llama-tiny-q8_0.gguf");
        assert!(matches!(
            requant_matrices(&table, QuantFormat::Ggml(GgmlType::Q5_1)),
            Err(CudaBackendError::UnsupportedRequant(_))
        ));
    }
}
