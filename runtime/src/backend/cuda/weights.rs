//! Weights on the device: how each registered tensor is stored, and the upload at load.

use std::sync::Arc;

use tinyrt_cuda::{CudaDevice, CudaError, DeviceBuffer, WeightType};

use crate::backend::{WeightId, WeightTable};
use crate::kernels::quant::{self, GgmlType};

/// Errors preparing weights for the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaBackendError {
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("tensor {name} has type {ty}, which the CUDA backend does not support")]
    UnsupportedType { name: String, ty: GgmlType },
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
    /// Upload every registered tensor to `dev` and compile the kernels.
    pub fn new(
        dev: Arc<CudaDevice>,
        table: Arc<WeightTable>,
    ) -> Result<Arc<CudaWeights>, CudaBackendError> {
        let mut tensors = Vec::with_capacity(table.entries().len());
        let mut bytes = 0;
        for (i, e) in table.entries().iter().enumerate() {
            let data = table.data(WeightId(i as u32));
            let plan = upload_plan(e.ty, e.rows(), e.cols()).ok_or_else(|| {
                CudaBackendError::UnsupportedType {
                    name: e.name.clone(),
                    ty: e.ty,
                }
            })?;
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
}
