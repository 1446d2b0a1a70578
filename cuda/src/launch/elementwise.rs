//! Launch wrappers: element-wise ops, lookup and argmax.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

impl CudaDevice {
    fn unary(
        &self,
        k: Kernel,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need(k, "x", x.len(), n)?;
        need(k, "out", out.len(), n)?;
        let args = [self.ptr(x), self.ptr_mut(out), int(k, "n", n)?];
        self.launch(
            k,
            (n.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    fn binary(
        &self,
        k: Kernel,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need(k, "a", a.len(), n)?;
        need(k, "b", b.len(), n)?;
        need(k, "out", out.len(), n)?;
        let args = [self.ptr(a), self.ptr(b), self.ptr_mut(out), int(k, "n", n)?];
        self.launch(
            k,
            (n.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// GELU, tanh approximation.
    pub fn gelu(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.unary(Kernel::Gelu, x, out, n)
    }

    /// The exact GELU, `x/2 · (1 + erf(x/√2))` (BERT).
    pub fn gelu_erf(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.unary(Kernel::GeluErf, x, out, n)
    }

    /// out = silu(gate) · up.
    pub fn swiglu(
        &self,
        gate: &impl DevicePtr<f32>,
        up: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.binary(Kernel::Swiglu, gate, up, out, n)
    }

    /// out = gelu(gate) · up.
    pub fn geglu(
        &self,
        gate: &impl DevicePtr<f32>,
        up: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.binary(Kernel::Geglu, gate, up, out, n)
    }

    /// out = a + b (residual add).
    pub fn add(
        &self,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.binary(Kernel::Add, a, b, out, n)
    }

    /// `out[r, c] = x[r, c] + b[c]` for `nrows` rows of `ncols` (a bias added to every token).
    pub fn add_rows(
        &self,
        x: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::AddRows;
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "b", b.len(), ncols)?;
        need(k, "out", out.len(), nrows * ncols)?;
        let total = nrows * ncols;
        let args = [
            self.ptr(x),
            self.ptr(b),
            self.ptr_mut(out),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
        ];
        self.launch(
            k,
            (total.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// out = x · s.
    pub fn scale(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        s: f32,
        n: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::Scale;
        need(k, "x", x.len(), n)?;
        need(k, "out", out.len(), n)?;
        let args = [self.ptr(x), self.ptr_mut(out), Arg::F32(s), int(k, "n", n)?];
        self.launch(
            k,
            (n.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// Index of the largest of the first `n` values (lowest index on ties) into `out[0]`.
    pub fn argmax(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<i32>,
        n: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::Argmax;
        need(k, "x", x.len(), n)?;
        need(k, "out", out.len(), 1)?;
        let args = [self.ptr(x), self.ptr_mut(out), int(k, "n", n)?];
        self.launch(k, (1, 1, 1), 1024, &args)
    }

    /// Embedding lookup: `out[i]` = row `ids[i]` of `table` (`nrows` rows of `ncols` in format
    /// `ty`) as f32. Ids outside the table give rows of zeros.
    #[allow(clippy::too_many_arguments)]
    pub fn get_rows(
        &self,
        ty: WeightType,
        table: &impl DevicePtr<u8>,
        ids: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        n_ids: usize,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::get_rows(ty);
        self.check_weights(k, ty, table.len(), nrows, ncols)?;
        need(k, "ids", ids.len(), n_ids)?;
        need(k, "out", out.len(), n_ids * ncols)?;
        let args = [
            self.check_align(k, "table", self.ptr(table), 4)?,
            self.ptr(ids),
            self.ptr_mut(out),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
        ];
        self.launch(
            k,
            (ncols.div_ceil(ELEMENT_BLOCK), n_ids, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// Row `i` of `out` (rows of `out_stride`) = the pooling of rows `seqs[i]..seqs[i + 1]` of
    /// `x` (`nrows` rows of `x_stride`), first `ncols` columns: their mean, the first or the
    /// last row; an empty sequence gives zeros. `seqs`: `n_seq + 1` boundaries on the device
    /// (as [`CudaDevice::attention_packed`]'s); they are clipped to the `nrows` rows.
    #[allow(clippy::too_many_arguments)]
    pub fn pool_rows(
        &self,
        x: &impl DevicePtr<f32>,
        seqs: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        mode: PoolMode,
        n_seq: usize,
        nrows: usize,
        ncols: usize,
        x_stride: usize,
        out_stride: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::PoolRows;
        if ncols > x_stride || ncols > out_stride {
            return Err(bad(
                k,
                format!("{ncols} columns of rows of {x_stride} into rows of {out_stride}"),
            ));
        }
        need(k, "seqs", seqs.len(), n_seq + 1)?;
        if nrows > 0 {
            need(k, "x", x.len(), (nrows - 1) * x_stride + ncols)?;
        }
        if n_seq > 0 {
            need(k, "out", out.len(), (n_seq - 1) * out_stride + ncols)?;
        }
        let kind = match mode {
            PoolMode::Mean => 0,
            PoolMode::First => 1,
            PoolMode::Last => 2,
        };
        let args = [
            self.ptr(x),
            self.ptr(seqs),
            self.ptr_mut(out),
            int(k, "nrows", nrows)?,
            int(k, "ncols", ncols)?,
            int(k, "x_stride", x_stride)?,
            int(k, "out_stride", out_stride)?,
            Arg::I32(kind),
        ];
        self.launch(
            k,
            (ncols.div_ceil(ELEMENT_BLOCK), n_seq, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }
}
