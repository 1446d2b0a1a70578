//! Launch wrappers: batched matrix × matrix products (prefill).

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

impl CudaDevice {
    /// Prefill matrix × matrix: Y[t, r] = Σ_k W[r, k] X[t, k], X: [ntok, ncols], Y: [ntok, nrows],
    /// in f32 (FMA tiles): the exact path, for any activation range.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        self.matmul_with(Kernel::matmul(ty), 256, ty, w, x, y, nrows, ncols, ntok)
    }

    /// Prefill matrix × matrix on the int8 tensor cores (`mma.sync` m16n8k32): `x_q8_1` holds
    /// the `ntok` rows of `ncols` activations quantized to Q8_1 ([`CudaDevice::quantize_q8_1`]
    /// over all `ntok * ncols` values), so the arithmetic is that of the decode kernels and
    /// no f16 range limit applies. Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K and Q5_K (see
    /// [`Kernel::matmul_mmq`]); `ncols` a multiple of 32.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_q8_1_mma(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x_q8_1: &impl DevicePtr<u8>,
        y: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        let Some(k) = Kernel::matmul_mmq(ty) else {
            return Err(bad(
                Kernel::matmul(ty),
                format!("no int8 tensor-core kernel for {ty:?}"),
            ));
        };
        if !self.supports_mma() {
            return Err(bad(
                k,
                format!(
                    "needs compute capability 8.0, {} has {}",
                    self.name(),
                    self.arch()
                ),
            ));
        }
        if !ncols.is_multiple_of(32) {
            return Err(bad(k, format!("ncols = {ncols} is not a multiple of 32")));
        }
        self.check_weights(k, ty, w.len(), nrows, ncols)?;
        need(
            k,
            "x (Q8_1 bytes)",
            x_q8_1.len(),
            ntok * ncols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        need(k, "y", y.len(), ntok * nrows)?;
        let args = [
            self.check_align(k, "w", self.ptr(w), 4)?,
            self.check_align(k, "x_q8_1", self.ptr(x_q8_1), 4)?,
            self.ptr_mut(y),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "ntok", ntok)?,
        ];
        // 64 rows x 64 tokens per block of 128 threads.
        self.launch(k, (nrows.div_ceil(64), ntok.div_ceil(64), 1), 128, &args)
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_with(
        &self,
        k: Kernel,
        threads: u32,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        self.check_weights(k, ty, w.len(), nrows, ncols)?;
        need(k, "x", x.len(), ntok * ncols)?;
        need(k, "y", y.len(), ntok * nrows)?;
        let args = [
            self.check_align(k, "w", self.ptr(w), 4)?,
            self.ptr(x),
            self.ptr_mut(y),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "ntok", ntok)?,
        ];
        // Both kernels tile 64 rows x 64 tokens.
        self.launch(
            k,
            (nrows.div_ceil(64), ntok.div_ceil(64), 1),
            threads,
            &args,
        )
    }
}
