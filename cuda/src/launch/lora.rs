//! Launch wrappers: the two products of a LoRA term, `out += s · B·(A·x)`.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

/// Warps (ranks) per block of `lora_down` (LORA_DOWN_WARPS in lora.cu).
const LORA_DOWN_WARPS: usize = 4;
/// Threads per block of `lora_up` (LORA_UP_THREADS in lora.cu).
const LORA_UP_THREADS: usize = 256;

/// Floats a buffer of `rows` rows of `width` values, `stride` apart, must hold.
fn strided_len(rows: usize, width: usize, stride: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    }
}

impl CudaDevice {
    /// `t[tok, j] = Σ_k A[j, k] · x[tok·x_stride + k]` for `ntok` rows: `A` is `rank × n_in`
    /// row-major f32, `t` is `ntok × rank` (f32 accumulation).
    #[allow(clippy::too_many_arguments)]
    pub fn lora_down(
        &self,
        a: &impl DevicePtr<f32>,
        x: &impl DevicePtr<f32>,
        t: &mut impl DevicePtrMut<f32>,
        rank: usize,
        n_in: usize,
        ntok: usize,
        x_stride: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::LoraDown;
        if x_stride < n_in {
            return Err(bad(k, format!("x_stride {x_stride} < n_in {n_in}")));
        }
        need(k, "a", a.len(), rank * n_in)?;
        need(k, "x", x.len(), strided_len(ntok, n_in, x_stride))?;
        need(k, "t", t.len(), ntok * rank)?;
        let args = [
            self.ptr(a),
            self.ptr(x),
            self.ptr_mut(t),
            int(k, "rank", rank)?,
            int(k, "n_in", n_in)?,
            int(k, "ntok", ntok)?,
            int(k, "x_stride", x_stride)?,
        ];
        self.launch(
            k,
            (rank.div_ceil(LORA_DOWN_WARPS), ntok, 1),
            (LORA_DOWN_WARPS * 32) as u32,
            &args,
        )
    }

    /// `out[tok·out_stride + i] += scale · Σ_j B[i, j] · t[tok, j]` for `ntok` rows: `bt` is
    /// `B` transposed (`rank × n_out` row-major f32), `t` is `ntok × rank`, `rank` at most
    /// [`LORA_MAX_RANK`].
    #[allow(clippy::too_many_arguments)]
    pub fn lora_up(
        &self,
        bt: &impl DevicePtr<f32>,
        t: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        scale: f32,
        n_out: usize,
        rank: usize,
        ntok: usize,
        out_stride: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::LoraUp;
        if rank > LORA_MAX_RANK {
            return Err(bad(k, format!("rank {rank} > {LORA_MAX_RANK}")));
        }
        if out_stride < n_out {
            return Err(bad(k, format!("out_stride {out_stride} < n_out {n_out}")));
        }
        need(k, "bt", bt.len(), rank * n_out)?;
        need(k, "t", t.len(), ntok * rank)?;
        need(k, "out", out.len(), strided_len(ntok, n_out, out_stride))?;
        let args = [
            self.ptr(bt),
            self.ptr(t),
            self.ptr_mut(out),
            Arg::F32(scale),
            int(k, "n_out", n_out)?,
            int(k, "rank", rank)?,
            int(k, "ntok", ntok)?,
            int(k, "out_stride", out_stride)?,
        ];
        self.launch(
            k,
            (n_out.div_ceil(LORA_UP_THREADS), ntok, 1),
            LORA_UP_THREADS as u32,
            &args,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::strided_len;

    #[test]
    fn strided_rows_end_at_the_last_rows_width() {
        assert_eq!(strided_len(0, 8, 32), 0);
        assert_eq!(strided_len(1, 8, 32), 8);
        assert_eq!(strided_len(3, 8, 32), 72);
    }
}
