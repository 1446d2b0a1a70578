//! Launch wrappers: single-token matrix × vector products (decode).

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

impl CudaDevice {
    /// Decode matrix × vector for a quantized `ty`: y = W x (+ y when `accumulate`), with
    /// `x` already quantized to Q8_1 (see [`CudaDevice::quantize_q8_1`]).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_1(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x_q8_1: &impl DevicePtr<u8>,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let tpr = matvec_threads_per_row(ncols);
        self.matvec_q8_1_tpr(ty, w, x_q8_1, y, accumulate, nrows, ncols, tpr)
    }

    /// [`CudaDevice::matvec_q8_1`] with an explicit number of threads per row (a power of two
    /// from 8 to 128): the tuning knob the benchmark sweeps.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_1_tpr(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x_q8_1: &impl DevicePtr<u8>,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
        nrows: usize,
        ncols: usize,
        threads_per_row: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::matvec(ty);
        if !ty.is_quantized() {
            return Err(bad(
                k,
                format!("{ty:?} takes an f32 vector: use matvec_f32_input"),
            ));
        }
        if !threads_per_row.is_power_of_two() || !(8..=MATVEC_THREADS).contains(&threads_per_row) {
            return Err(bad(k, format!("threads_per_row = {threads_per_row}")));
        }
        self.check_weights(k, ty, w.len(), nrows, ncols)?;
        need(
            k,
            "x (Q8_1 bytes)",
            x_q8_1.len(),
            ncols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        need(k, "y", y.len(), nrows)?;
        let yp = self.ptr_mut(y);
        let residual = if accumulate { yp } else { Arg::Ptr(0) };
        let args = [
            self.check_align(k, "w", self.ptr(w), 4)?,
            self.check_align(k, "x_q8_1", self.ptr(x_q8_1), 4)?,
            yp,
            residual,
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "threads_per_row", threads_per_row)?,
        ];
        let rows_per_block = MATVEC_THREADS / threads_per_row;
        self.launch(
            k,
            (nrows.div_ceil(rows_per_block), 1, 1),
            MATVEC_THREADS as u32,
            &args,
        )
    }

    /// Up to three matrix-vector products of one Q8_1 input in one launch (decode's Q, K and
    /// V projections): `y_i = W_i x` for each `(W_i, y_i, nrows_i)` of `parts` (1 to 3), all
    /// of format `ty` with `ncols` columns; `planar`: all Q4_0 in the planar layout
    /// ([`CudaDevice::repack_q4_0_planar`]). Each row's result is that of
    /// [`CudaDevice::matvec_q8_1`] (or `matvec_q4_0_planar`).
    pub fn matvec3_q8_1<W: DevicePtr<u8>, Y: DevicePtrMut<f32>>(
        &self,
        ty: WeightType,
        planar: bool,
        parts: &mut [(&W, Y, usize)],
        x_q8_1: &impl DevicePtr<u8>,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let Some(k) = Kernel::matvec3(ty, planar && ty == WeightType::Q4_0) else {
            return Err(bad(
                Kernel::matvec(ty),
                format!("no multi-product kernel for {ty:?} (planar: {planar})"),
            ));
        };
        if planar && ty != WeightType::Q4_0 {
            return Err(bad(k, format!("planar {ty:?}")));
        }
        if parts.is_empty() || parts.len() > 3 {
            return Err(bad(k, format!("{} products (1 to 3)", parts.len())));
        }
        need(
            k,
            "x (Q8_1 bytes)",
            x_q8_1.len(),
            ncols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        let mut w_args = [Arg::Ptr(0); 3];
        let mut y_args = [Arg::Ptr(0); 3];
        let mut n_args = [Arg::I32(0); 3];
        let mut total = 0;
        for (i, (w, y, nrows)) in parts.iter_mut().enumerate() {
            self.check_weights(k, ty, w.len(), *nrows, ncols)?;
            need(k, "y", y.len(), *nrows)?;
            w_args[i] = self.check_align(k, "w", self.ptr(*w), if planar { 16 } else { 4 })?;
            y_args[i] = self.ptr_mut(y);
            n_args[i] = int(k, "nrows", *nrows)?;
            total += *nrows;
        }
        let tpr = matvec_threads_per_row(ncols);
        let args = [
            w_args[0],
            w_args[1],
            w_args[2],
            self.check_align(k, "x_q8_1", self.ptr(x_q8_1), 4)?,
            y_args[0],
            y_args[1],
            y_args[2],
            n_args[0],
            n_args[1],
            n_args[2],
            int(k, "ncols", ncols)?,
            int(k, "threads_per_row", tpr)?,
        ];
        int(k, "total rows", total)?;
        let rows_per_block = MATVEC_THREADS / tpr;
        self.launch(
            k,
            (total.div_ceil(rows_per_block), 1, 1),
            MATVEC_THREADS as u32,
            &args,
        )
    }

    /// Rewrites a Q4_0 matrix (GGUF blocks) into the planar layout of
    /// [`CudaDevice::matvec_q4_0_planar`]: all 16-byte quant groups, then all f16 scales.
    /// `dst` has the same size as `src`.
    pub fn repack_q4_0_planar(
        &self,
        src: &impl DevicePtr<u8>,
        dst: &mut impl DevicePtrMut<u8>,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::RepackQ4_0Planar;
        self.check_weights(k, WeightType::Q4_0, src.len(), nrows, ncols)?;
        need(k, "dst (bytes)", dst.len(), nrows * ncols / 32 * 18)?;
        let nblocks = nrows * ncols / 32;
        let args = [
            self.check_align(k, "src", self.ptr(src), 2)?,
            self.check_align(k, "dst", self.ptr_mut(dst), 16)?,
            int(k, "nblocks", nblocks)?,
        ];
        self.launch(
            k,
            (nblocks.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// [`CudaDevice::matvec_q8_1`] for Q4_0 weights in the planar layout made by
    /// [`CudaDevice::repack_q4_0_planar`] (one 128-bit load per block); bit-identical results.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q4_0_planar(
        &self,
        w_planar: &impl DevicePtr<u8>,
        x_q8_1: &impl DevicePtr<u8>,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::MatvecQ4_0Planar;
        self.check_weights(k, WeightType::Q4_0, w_planar.len(), nrows, ncols)?;
        need(
            k,
            "x (Q8_1 bytes)",
            x_q8_1.len(),
            ncols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        need(k, "y", y.len(), nrows)?;
        let tpr = matvec_threads_per_row(ncols);
        let yp = self.ptr_mut(y);
        let residual = if accumulate { yp } else { Arg::Ptr(0) };
        let args = [
            self.check_align(k, "w_planar", self.ptr(w_planar), 16)?,
            self.check_align(k, "x_q8_1", self.ptr(x_q8_1), 4)?,
            yp,
            residual,
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "threads_per_row", tpr)?,
        ];
        let rows_per_block = MATVEC_THREADS / tpr;
        self.launch(
            k,
            (nrows.div_ceil(rows_per_block), 1, 1),
            MATVEC_THREADS as u32,
            &args,
        )
    }

    /// Fused gated feed-forward for decode: `y[r] = act(Wg[r]·x) · (Wu[r]·x)` with act = SiLU
    /// (SwiGLU) or tanh-GELU (GeGLU); gate and up weights of the same quantized `ty`, `x`
    /// quantized to Q8_1.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_glu_q8_1(
        &self,
        ty: WeightType,
        act: GluActivation,
        w_gate: &impl DevicePtr<u8>,
        w_up: &impl DevicePtr<u8>,
        x_q8_1: &impl DevicePtr<u8>,
        y: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let Some(k) = Kernel::matvec_glu(ty) else {
            return Err(bad(
                Kernel::matvec(ty),
                format!("no fused gate/up kernel for {ty:?}"),
            ));
        };
        self.check_weights(k, ty, w_gate.len(), nrows, ncols)?;
        self.check_weights(k, ty, w_up.len(), nrows, ncols)?;
        need(
            k,
            "x (Q8_1 bytes)",
            x_q8_1.len(),
            ncols / 32 * Q8_1_BLOCK_BYTES,
        )?;
        need(k, "y", y.len(), nrows)?;
        let tpr = matvec_threads_per_row(ncols);
        let args = [
            self.check_align(k, "w_gate", self.ptr(w_gate), 4)?,
            self.check_align(k, "w_up", self.ptr(w_up), 4)?,
            self.check_align(k, "x_q8_1", self.ptr(x_q8_1), 4)?,
            self.ptr_mut(y),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "threads_per_row", tpr)?,
            Arg::I32((act == GluActivation::GeluTanh) as i32),
        ];
        let rows_per_block = MATVEC_THREADS / tpr;
        self.launch(
            k,
            (nrows.div_ceil(rows_per_block), 1, 1),
            MATVEC_THREADS as u32,
            &args,
        )
    }

    /// Decode matrix × vector for F32/F16 weights (given as raw bytes): y = W x (+ y).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_f32_input(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::matvec(ty);
        if ty.is_quantized() {
            return Err(bad(
                k,
                format!("{ty:?} takes a Q8_1 vector: use matvec_q8_1"),
            ));
        }
        self.check_weights(k, ty, w.len(), nrows, ncols)?;
        need(k, "x", x.len(), ncols)?;
        need(k, "y", y.len(), nrows)?;
        let yp = self.ptr_mut(y);
        let residual = if accumulate { yp } else { Arg::Ptr(0) };
        let args = [
            self.check_align(k, "w", self.ptr(w), ty.block_bytes() as u64)?,
            self.ptr(x),
            yp,
            residual,
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
        ];
        // 4 warps per block, one row per warp.
        self.launch(k, (nrows.div_ceil(4), 1, 1), 128, &args)
    }
}
