//! Weights on the device: how each registered tensor is stored, and the upload at load.

use std::sync::Arc;

use tinyrt_cuda::{CudaDevice, CudaError, DeviceBuffer, WeightType};

use crate::backend::requant::{self, Converted, RequantReport};
use crate::backend::{WeightId, WeightTable};
use crate::kernels::cpu::pool::ThreadPool;
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
    #[error("converting the weights: {0}")]
    Requant(String),
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
    WeightType::from_format(fmt)
}

/// `--requant` for the CUDA backend: the conversion every backend shares
/// ([`crate::backend::requant::requant_matrices`]), on the host, admitting only what the CUDA
/// kernels of `fmt` can hold. Per tensor: the converted bytes, or `None` (kept as stored).
pub fn requant_matrices(
    table: &WeightTable,
    fmt: QuantFormat,
    pool: &ThreadPool,
) -> Result<(Converted, RequantReport), CudaBackendError> {
    requant_matrices_with_progress(table, fmt, pool, &|_, _| {})
}

/// [`requant_matrices`], telling `progress` (matrices converted, matrices to convert).
pub fn requant_matrices_with_progress(
    table: &WeightTable,
    fmt: QuantFormat,
    pool: &ThreadPool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Converted, RequantReport), CudaBackendError> {
    let Some(wt) = cuda_format(fmt).filter(|_| fmt.is_supported()) else {
        return Err(CudaBackendError::UnsupportedRequant(fmt));
    };
    requant::requant_matrices(
        table,
        fmt,
        pool,
        |e| wt.row_bytes(e.cols()).is_some(),
        progress,
    )
    .map_err(|e| CudaBackendError::Requant(e.to_string()))
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
            let pool = ThreadPool::new(2).unwrap();
            let (slots, report) = requant_matrices(&table, QuantFormat::Nf4, &pool).unwrap();
            // The same choice of matrices and the same sizes as the CPU backend's requant.
            let isa = crate::kernels::cpu::Isa::detect();
            if let Ok(cpu) = crate::backend::cpu::CpuWeights::with_requant(
                Arc::clone(&table),
                isa,
                Some(QuantFormat::Nf4),
                &pool,
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
            requant_matrices(
                &table,
                QuantFormat::Ggml(GgmlType::Q5_1),
                &ThreadPool::new(1).unwrap()
            ),
            Err(CudaBackendError::UnsupportedRequant(_))
        ));
    }
}
