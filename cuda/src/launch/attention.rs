//! Launch wrappers: RoPE, the KV-cache writes and attention.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::*;

impl CudaDevice {
    /// RoPE in place on `ntok` rows of `token_stride` floats holding `n_head` heads of
    /// `head_dim`; the first `n_rot` dimensions of each head rotate. `pos`: `ntok` positions.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &mut impl DevicePtrMut<f32>,
        pos: &impl DevicePtr<i32>,
        ntok: usize,
        token_stride: usize,
        n_head: usize,
        head_dim: usize,
        n_rot: usize,
        mode: RopeMode,
        freq_base: f32,
        freq_scale: f32,
    ) -> Result<(), CudaError> {
        let k = Kernel::Rope;
        if !n_rot.is_multiple_of(2) || n_rot > head_dim || n_head * head_dim > token_stride {
            return Err(bad(
                k,
                format!("n_rot {n_rot}, head_dim {head_dim}, n_head {n_head}, token_stride {token_stride}"),
            ));
        }
        if ntok > 0 {
            need(
                k,
                "x",
                x.len(),
                (ntok - 1) * token_stride + n_head * head_dim,
            )?;
        }
        need(k, "pos", pos.len(), ntok)?;
        let total = ntok * n_head * (n_rot / 2);
        let args = [
            self.ptr_mut(x),
            self.ptr(pos),
            int(k, "ntok", ntok)?,
            int(k, "token_stride", token_stride)?,
            int(k, "n_head", n_head)?,
            int(k, "head_dim", head_dim)?,
            int(k, "n_rot", n_rot)?,
            Arg::I32((mode == RopeMode::Neox) as i32),
            Arg::F32(freq_base),
            Arg::F32(freq_scale),
        ];
        int(k, "ntok * n_head * n_rot / 2", total)?;
        self.launch(
            k,
            (total.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// RoPE in place like [`CudaDevice::rope`], with cos/sin from `table` (`n_pos` rows of
    /// `n_rot` values in the layout of `tinyrt_kernels::cpu::ops::RopeCache::row`), so
    /// frequency factors, scaling and YaRN are whatever the table was built with.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_cached(
        &self,
        x: &mut impl DevicePtrMut<f32>,
        pos: &impl DevicePtr<i32>,
        table: &impl DevicePtr<f32>,
        n_pos: usize,
        ntok: usize,
        token_stride: usize,
        n_head: usize,
        head_dim: usize,
        n_rot: usize,
        mode: RopeMode,
    ) -> Result<(), CudaError> {
        let k = Kernel::RopeCached;
        if n_rot == 0
            || !n_rot.is_multiple_of(2)
            || n_rot > head_dim
            || n_head * head_dim > token_stride
        {
            return Err(bad(
                k,
                format!("n_rot {n_rot}, head_dim {head_dim}, n_head {n_head}, token_stride {token_stride}"),
            ));
        }
        if ntok > 0 {
            need(
                k,
                "x",
                x.len(),
                (ntok - 1) * token_stride + n_head * head_dim,
            )?;
        }
        need(k, "pos", pos.len(), ntok)?;
        need(k, "table", table.len(), n_pos * n_rot)?;
        let total = ntok * n_head * (n_rot / 2);
        int(k, "ntok * n_head * n_rot / 2", total)?;
        let args = [
            self.ptr_mut(x),
            self.ptr(pos),
            self.ptr(table),
            int(k, "n_pos", n_pos)?,
            int(k, "ntok", ntok)?,
            int(k, "token_stride", token_stride)?,
            int(k, "n_head", n_head)?,
            int(k, "head_dim", head_dim)?,
            int(k, "n_rot", n_rot)?,
            Arg::I32((mode == RopeMode::Neox) as i32),
        ];
        self.launch(
            k,
            (total.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// The fused QKV → RoPE → KV-cache write: RoPE of `q` in place, RoPE of `k` written into
    /// `k_cache`, `v` copied into `v_cache`, token t at position `pos[t]`, cos/sin from `table`
    /// (as [`CudaDevice::rope_cached`]). `k` itself is left unrotated. Caches hold
    /// `n_ctx × n_kv × head_dim` values.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_store<T: KvElement>(
        &self,
        q: &mut impl DevicePtrMut<f32>,
        k_new: &impl DevicePtr<f32>,
        v_new: &impl DevicePtr<f32>,
        k_cache: &mut impl DevicePtrMut<T>,
        v_cache: &mut impl DevicePtrMut<T>,
        pos: &impl DevicePtr<i32>,
        table: &impl DevicePtr<f32>,
        n_pos: usize,
        s: RopeKvShape,
    ) -> Result<(), CudaError> {
        let k = T::ROPE_KV_STORE;
        let kv_row = s.n_kv * s.head_dim;
        if s.n_rot == 0
            || !s.n_rot.is_multiple_of(2)
            || s.n_rot > s.head_dim
            || s.n_head * s.head_dim > s.q_stride
            || kv_row > s.kv_stride
        {
            return Err(bad(k, format!("unsupported shape {s:?}")));
        }
        if s.ntok > 0 {
            need(
                k,
                "q",
                q.len(),
                (s.ntok - 1) * s.q_stride + s.n_head * s.head_dim,
            )?;
            need(k, "k", k_new.len(), (s.ntok - 1) * s.kv_stride + kv_row)?;
            need(k, "v", v_new.len(), (s.ntok - 1) * s.kv_stride + kv_row)?;
        }
        need(k, "k_cache", k_cache.len(), s.n_ctx * kv_row)?;
        need(k, "v_cache", v_cache.len(), s.n_ctx * kv_row)?;
        need(k, "pos", pos.len(), s.ntok)?;
        need(k, "table", table.len(), n_pos * s.n_rot)?;
        let total = s.ntok * (s.n_head * s.n_rot / 2 + 2 * kv_row);
        int(k, "work items", total)?;
        let args = [
            self.ptr_mut(q),
            self.ptr(k_new),
            self.ptr(v_new),
            self.ptr_mut(k_cache),
            self.ptr_mut(v_cache),
            self.ptr(pos),
            self.ptr(table),
            int(k, "n_pos", n_pos)?,
            int(k, "ntok", s.ntok)?,
            int(k, "q_stride", s.q_stride)?,
            int(k, "kv_stride", s.kv_stride)?,
            int(k, "n_head", s.n_head)?,
            int(k, "n_kv", s.n_kv)?,
            int(k, "head_dim", s.head_dim)?,
            int(k, "n_rot", s.n_rot)?,
            Arg::I32((s.mode == RopeMode::Neox) as i32),
            int(k, "n_ctx", s.n_ctx)?,
        ];
        self.launch(
            k,
            (total.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// Stores `ntok` rows of K and V (rows of `token_stride` floats, `row` values used) at
    /// positions `pos0[0] + t` of caches holding `n_ctx` rows of `row` values, as f16 (`T =
    /// u16`) or f32.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store<T: KvElement>(
        &self,
        k_new: &impl DevicePtr<f32>,
        v_new: &impl DevicePtr<f32>,
        k_cache: &mut impl DevicePtrMut<T>,
        v_cache: &mut impl DevicePtrMut<T>,
        pos0: &impl DevicePtr<i32>,
        ntok: usize,
        token_stride: usize,
        row: usize,
        n_ctx: usize,
    ) -> Result<(), CudaError> {
        let k = T::KV_STORE;
        if row > token_stride {
            return Err(bad(k, format!("row {row} > token_stride {token_stride}")));
        }
        if ntok > 0 {
            need(k, "k_new", k_new.len(), (ntok - 1) * token_stride + row)?;
            need(k, "v_new", v_new.len(), (ntok - 1) * token_stride + row)?;
        }
        need(k, "k_cache", k_cache.len(), n_ctx * row)?;
        need(k, "v_cache", v_cache.len(), n_ctx * row)?;
        need(k, "pos0", pos0.len(), 1)?;
        let total = ntok * row;
        let args = [
            self.ptr(k_new),
            self.ptr(v_new),
            self.ptr_mut(k_cache),
            self.ptr_mut(v_cache),
            self.ptr(pos0),
            int(k, "ntok", ntok)?,
            int(k, "token_stride", token_stride)?,
            int(k, "row", row)?,
            int(k, "n_ctx", n_ctx)?,
        ];
        int(k, "ntok * row", total)?;
        self.launch(
            k,
            (total.div_ceil(ELEMENT_BLOCK), 1, 1),
            ELEMENT_BLOCK as u32,
            &args,
        )
    }

    /// Causal attention of `shape.ntok` query tokens against the f16 caches (rows of
    /// `n_kv × head_dim`): split over the KV range, then combined. `scratch` holds at least
    /// `shape.scratch_len()` floats. One warp per key within a split.
    #[allow(clippy::too_many_arguments)]
    pub fn attention<T: KvElement>(
        &self,
        q: &impl DevicePtr<f32>,
        k_cache: &impl DevicePtr<T>,
        v_cache: &impl DevicePtr<T>,
        pos0: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        scratch: &mut impl DevicePtrMut<f32>,
        shape: AttentionShape,
        scale: f32,
    ) -> Result<(), CudaError> {
        let k = T::ATTENTION;
        self.attention_with(
            k, q, k_cache, v_cache, pos0, out, None, scratch, shape, scale,
        )
    }

    #[allow(clippy::too_many_arguments)]
    /// [`CudaDevice::attention`] that also writes the output rows quantized to Q8_1 into
    /// `out_q8_1` (as [`CudaDevice::quantize_q8_1`] would), for the output projection after
    /// it; `head_dim` and `out_stride` multiples of 32.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_q8_1<T: KvElement>(
        &self,
        q: &impl DevicePtr<f32>,
        k_cache: &impl DevicePtr<T>,
        v_cache: &impl DevicePtr<T>,
        pos0: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        out_q8_1: &mut impl DevicePtrMut<u8>,
        scratch: &mut impl DevicePtrMut<f32>,
        shape: AttentionShape,
        scale: f32,
    ) -> Result<(), CudaError> {
        let k = T::ATTENTION;
        let s = shape;
        if !s.head_dim.is_multiple_of(32) || !s.out_stride.is_multiple_of(32) {
            return Err(bad(
                Kernel::AttentionCombine,
                format!("Q8_1 output needs head_dim and out_stride multiples of 32: {s:?}"),
            ));
        }
        need(
            Kernel::AttentionCombine,
            "out_q8_1 (bytes)",
            out_q8_1.len(),
            s.ntok * s.out_stride / 32 * Q8_1_BLOCK_BYTES,
        )?;
        let q8 = self.check_align(
            Kernel::AttentionCombine,
            "out_q8_1",
            self.ptr_mut(out_q8_1),
            4,
        )?;
        self.attention_with(
            k,
            q,
            k_cache,
            v_cache,
            pos0,
            out,
            Some(q8),
            scratch,
            shape,
            scale,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_with<T: KvElement>(
        &self,
        k: Kernel,
        q: &impl DevicePtr<f32>,
        k_cache: &impl DevicePtr<T>,
        v_cache: &impl DevicePtr<T>,
        pos0: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        out_q8_1: Option<Arg>,
        scratch: &mut impl DevicePtrMut<f32>,
        shape: AttentionShape,
        scale: f32,
    ) -> Result<(), CudaError> {
        let s = shape;
        if s.n_kv == 0
            || !s.n_head.is_multiple_of(s.n_kv)
            || s.head_dim == 0
            || s.head_dim > 256
            || s.chunk == 0
            || s.window == Some(0)
        {
            return Err(bad(k, format!("unsupported shape {s:?}")));
        }
        let head_row = s.n_head * s.head_dim;
        if s.q_stride < head_row || s.out_stride < head_row {
            return Err(bad(
                k,
                format!("strides shorter than n_head * head_dim in {s:?}"),
            ));
        }
        if s.ntok == 0 {
            return Ok(());
        }
        need(k, "q", q.len(), (s.ntok - 1) * s.q_stride + head_row)?;
        need(k, "k_cache", k_cache.len(), s.n_ctx * s.n_kv * s.head_dim)?;
        need(k, "v_cache", v_cache.len(), s.n_ctx * s.n_kv * s.head_dim)?;
        need(k, "pos0", pos0.len(), 1)?;
        need(k, "out", out.len(), (s.ntok - 1) * s.out_stride + head_row)?;
        need(k, "scratch", scratch.len(), s.scratch_len())?;
        let nsplit = s.n_split();
        let scratch_ptr = match self.ptr_mut(scratch) {
            Arg::Ptr(p) => p,
            _ => unreachable!("ptr_mut returns a pointer"),
        };
        let part_o = scratch_ptr;
        let part_ml = scratch_ptr + (s.ntok * s.n_head * nsplit * s.head_dim * 4) as u64;
        let args = [
            self.ptr(q),
            self.ptr(k_cache),
            self.ptr(v_cache),
            self.ptr(pos0),
            Arg::Ptr(part_o),
            Arg::Ptr(part_ml),
            int(k, "q_stride", s.q_stride)?,
            int(k, "n_head", s.n_head)?,
            int(k, "n_kv", s.n_kv)?,
            int(k, "head_dim", s.head_dim)?,
            int(k, "n_ctx", s.n_ctx)?,
            int(k, "chunk", s.chunk)?,
            int(k, "window", s.window.unwrap_or(0))?,
            Arg::F32(scale),
        ];
        self.launch(k, (s.n_head, nsplit, s.ntok), 128, &args)?;
        let kc = Kernel::AttentionCombine;
        let args = [
            Arg::Ptr(part_o),
            Arg::Ptr(part_ml),
            self.ptr_mut(out),
            out_q8_1.unwrap_or(Arg::Ptr(0)),
            int(kc, "out_stride", s.out_stride)?,
            int(kc, "n_head", s.n_head)?,
            int(kc, "head_dim", s.head_dim)?,
            int(kc, "nsplit", nsplit)?,
        ];
        self.launch(kc, (s.n_head, s.ntok, 1), 128, &args)
    }

    /// Bidirectional attention of packed sequences, without a cache (encoders): rows
    /// `seqs[i]..seqs[i + 1]` of `q`, `k`, `v` are sequence `i` (`seqs`: `n_seq + 1` boundaries
    /// on the device, `seqs[0] = 0`, the last `shape.rows`, not decreasing), and each row
    /// attends every row of its own sequence, GQA as [`CudaDevice::attention`]. Whatever `seqs`
    /// holds, the kernel touches only `shape.rows` rows (bad boundaries give wrong rows, never
    /// an access outside the buffers).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_packed(
        &self,
        q: &impl DevicePtr<f32>,
        k: &impl DevicePtr<f32>,
        v: &impl DevicePtr<f32>,
        seqs: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<f32>,
        shape: PackedAttentionShape,
        scale: f32,
    ) -> Result<(), CudaError> {
        let kn = Kernel::AttentionPacked;
        let s = shape;
        if s.n_kv == 0 || !s.n_head.is_multiple_of(s.n_kv) || s.head_dim == 0 || s.head_dim > 256 {
            return Err(bad(kn, format!("unsupported shape {s:?}")));
        }
        let (q_row, kv_row) = (s.n_head * s.head_dim, s.n_kv * s.head_dim);
        if s.q_stride < q_row || s.out_stride < q_row || s.kv_stride < kv_row {
            return Err(bad(kn, format!("strides shorter than the heads in {s:?}")));
        }
        need(kn, "seqs", seqs.len(), s.n_seq + 1)?;
        if s.rows == 0 {
            return Ok(());
        }
        need(kn, "q", q.len(), (s.rows - 1) * s.q_stride + q_row)?;
        need(kn, "k", k.len(), (s.rows - 1) * s.kv_stride + kv_row)?;
        need(kn, "v", v.len(), (s.rows - 1) * s.kv_stride + kv_row)?;
        need(kn, "out", out.len(), (s.rows - 1) * s.out_stride + q_row)?;
        let args = [
            self.ptr(q),
            self.ptr(k),
            self.ptr(v),
            self.ptr(seqs),
            self.ptr_mut(out),
            int(kn, "n_seq", s.n_seq)?,
            int(kn, "rows", s.rows)?,
            int(kn, "q_stride", s.q_stride)?,
            int(kn, "kv_stride", s.kv_stride)?,
            int(kn, "out_stride", s.out_stride)?,
            int(kn, "n_head", s.n_head)?,
            int(kn, "n_kv", s.n_kv)?,
            int(kn, "head_dim", s.head_dim)?,
            Arg::F32(scale),
        ];
        // PACKED_WARPS (4) query rows per block, one per warp.
        self.launch(kn, (s.rows.div_ceil(4), s.n_head, 1), 128, &args)
    }
}
