//! Launch wrappers: Q8_1 quantization of activations, RMSNorm and LayerNorm.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

impl CudaDevice {
    /// Quantizes `n` floats (a multiple of 32) to Q8_1 blocks.
    pub fn quantize_q8_1(
        &self,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<u8>,
        n: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::QuantizeQ8_1;
        if !n.is_multiple_of(32) {
            return Err(bad(k, format!("n = {n} is not a multiple of 32")));
        }
        need(k, "x", x.len(), n)?;
        need(k, "y", y.len(), n / 32 * Q8_1_BLOCK_BYTES)?;
        let args = [self.ptr(x), self.ptr_mut(y), int(k, "n", n)?];
        self.launch(k, ((n / 32).div_ceil(8), 1, 1), 256, &args)
    }

    /// RMSNorm of `nrows` rows of `ncols`, times `w`.
    pub fn rms_norm(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let k = Kernel::RmsNorm;
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "w", w.len(), ncols)?;
        need(k, "out", out.len(), nrows * ncols)?;
        let args = [
            self.ptr(x),
            self.ptr(w),
            self.ptr_mut(out),
            int(k, "ncols", ncols)?,
            Arg::F32(eps),
        ];
        self.launch(k, (nrows, 1, 1), 256, &args)
    }

    /// RMSNorm times `w`, quantized straight to Q8_1 (`ncols` a multiple of 32).
    pub fn rms_norm_q8_1(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<u8>,
        nrows: usize,
        ncols: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let k = Kernel::RmsNormQ8_1;
        if !ncols.is_multiple_of(32) {
            return Err(bad(k, format!("ncols = {ncols} is not a multiple of 32")));
        }
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "w", w.len(), ncols)?;
        need(k, "y", y.len(), nrows * ncols / 32 * Q8_1_BLOCK_BYTES)?;
        let args = [
            self.ptr(x),
            self.ptr(w),
            self.ptr_mut(y),
            int(k, "ncols", ncols)?,
            Arg::F32(eps),
        ];
        self.launch(k, (nrows, 1, 1), 256, &args)
    }

    /// [`CudaDevice::rms_norm_q8_1`] that also writes the f32 result into `out` (which may be
    /// the same memory as `x`): the decode path's norm, one launch for both consumers.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_f32_q8_1(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        y: &mut impl DevicePtrMut<u8>,
        nrows: usize,
        ncols: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let k = Kernel::RmsNormF32Q8_1;
        if !ncols.is_multiple_of(32) {
            return Err(bad(k, format!("ncols = {ncols} is not a multiple of 32")));
        }
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "w", w.len(), ncols)?;
        need(k, "out", out.len(), nrows * ncols)?;
        need(k, "y", y.len(), nrows * ncols / 32 * Q8_1_BLOCK_BYTES)?;
        let args = [
            self.ptr(x),
            self.ptr(w),
            self.ptr_mut(out),
            self.ptr_mut(y),
            int(k, "ncols", ncols)?,
            Arg::F32(eps),
        ];
        self.launch(k, (nrows, 1, 1), 256, &args)
    }

    /// LayerNorm of `nrows` rows of `ncols`, times `w`, plus `b` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        b: Option<&dyn DevicePtrF32>,
        out: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let k = Kernel::LayerNorm;
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "w", w.len(), ncols)?;
        need(k, "out", out.len(), nrows * ncols)?;
        let bias = match b {
            Some(b) => {
                need(k, "b", b.len_f32(), ncols)?;
                Arg::Ptr(b.raw_ptr(self))
            }
            None => Arg::Ptr(0),
        };
        let args = [
            self.ptr(x),
            self.ptr(w),
            bias,
            self.ptr_mut(out),
            int(k, "ncols", ncols)?,
            Arg::F32(eps),
        ];
        self.launch(k, (nrows, 1, 1), 256, &args)
    }
}
