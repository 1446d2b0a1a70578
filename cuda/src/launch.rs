//! Typed launch wrappers, one per kernel, and the one place where launches are checked.
//!
//! Every wrapper checks buffer lengths and sizes against what the kernel will touch, then
//! calls [`CudaDevice::launch`], which checks the argument list against [`Kernel::args`].
//! Buffers are anything cudarc can hand a device pointer for (`CudaSlice`, `CudaView`,
//! `CudaViewMut`), so callers can pass sub-ranges of larger buffers.

use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::{ArgKind, CudaDevice, CudaError, Kernel, WeightType};

/// Bytes of one Q8_1 activation block (32 values): f16 d, f16 s, 32 × i8.
pub const Q8_1_BLOCK_BYTES: usize = 36;

/// One kernel parameter value.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

impl Arg {
    fn kind(&self) -> ArgKind {
        match self {
            Arg::Ptr(_) => ArgKind::Ptr,
            Arg::I32(_) => ArgKind::I32,
            Arg::F32(_) => ArgKind::F32,
        }
    }
}

/// Which elements RoPE pairs up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (2i, 2i+1): llama-family GGUF files.
    Normal,
    /// Halves (i, i + n_rot/2): GPT-NeoX, Phi-2, Gemma, Qwen.
    Neox,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u16 {}
    impl Sealed for f32 {}
}

/// The element type of a KV cache: `u16` (f16 bit patterns) or `f32`; picks the kernels.
pub trait KvElement: DeviceRepr + sealed::Sealed {
    const KV_STORE: Kernel;
    const ATTENTION: Kernel;
    const ATTENTION_WIDE: Kernel;
    const ROPE_KV_STORE: Kernel;
}

impl KvElement for u16 {
    const KV_STORE: Kernel = Kernel::KvStoreF16;
    const ATTENTION: Kernel = Kernel::AttentionSplit;
    const ATTENTION_WIDE: Kernel = Kernel::AttentionSplitWide;
    const ROPE_KV_STORE: Kernel = Kernel::RopeKvStoreF16;
}

impl KvElement for f32 {
    const KV_STORE: Kernel = Kernel::KvStoreF32;
    const ATTENTION: Kernel = Kernel::AttentionSplitF32;
    const ATTENTION_WIDE: Kernel = Kernel::AttentionSplitWideF32;
    const ROPE_KV_STORE: Kernel = Kernel::RopeKvStoreF32;
}

/// Shapes of one fused RoPE + KV-cache write ([`CudaDevice::rope_kv_store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeKvShape {
    pub ntok: usize,
    /// Floats between consecutive tokens in `q`.
    pub q_stride: usize,
    /// Floats between consecutive tokens in `k` and in `v`.
    pub kv_stride: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions at the start of each head.
    pub n_rot: usize,
    pub mode: RopeMode,
    /// Positions the cache holds.
    pub n_ctx: usize,
}

/// The activation of a gated feed-forward unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GluActivation {
    /// SwiGLU: silu(gate) · up (llama, qwen, smollm).
    Silu,
    /// GeGLU: gelu_tanh(gate) · up (gemma).
    GeluTanh,
}

/// Shapes of one attention call (decode: `ntok == 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query tokens in the batch; token t sits at position `pos0 + t`.
    pub ntok: usize,
    pub n_head: usize,
    /// KV heads; must divide `n_head` (grouped-query attention).
    pub n_kv: usize,
    /// At most 256.
    pub head_dim: usize,
    /// Positions the KV cache holds.
    pub n_ctx: usize,
    /// Floats between consecutive tokens in `q` (≥ n_head × head_dim).
    pub q_stride: usize,
    /// Floats between consecutive tokens in the output (≥ n_head × head_dim).
    pub out_stride: usize,
    /// An upper bound on `pos0 + ntok` (the device-side position is not known to the host);
    /// it sizes the split of the KV range. `n_ctx` is always safe.
    pub max_kv_len: usize,
    /// Positions per split (flash-decoding); 256 is a good default.
    pub chunk: usize,
    /// Sliding window: a query at position P sees positions (P - window, P]; `None` = all.
    pub window: Option<usize>,
}

impl AttentionShape {
    /// Number of KV splits.
    pub fn n_split(&self) -> usize {
        self.max_kv_len.max(1).div_ceil(self.chunk.max(1))
    }

    /// Floats of scratch the attention call needs.
    pub fn scratch_len(&self) -> usize {
        self.ntok * self.n_head * self.n_split() * (self.head_dim + 2)
    }
}

fn bad(kernel: Kernel, what: String) -> CudaError {
    CudaError::BadArgument {
        kernel: kernel.name(),
        what,
    }
}

fn need(kernel: Kernel, what: &str, have: usize, need: usize) -> Result<(), CudaError> {
    if have < need {
        return Err(bad(
            kernel,
            format!("{what} holds {have} values, needs {need}"),
        ));
    }
    Ok(())
}

fn int(kernel: Kernel, what: &str, v: usize) -> Result<Arg, CudaError> {
    i32::try_from(v).map(Arg::I32).map_err(|_| {
        bad(
            kernel,
            format!("{what} = {v} does not fit the kernel's int"),
        )
    })
}

fn grid_dim(kernel: Kernel, v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| bad(kernel, format!("grid of {v} blocks")))
}

const ELEMENT_BLOCK: usize = 256;

/// Threads per block of the quantized matrix-vector kernels (MV_THREADS in matvec.cu).
const MATVEC_THREADS: usize = 128;

/// Threads per row for a row of `ncols`: about one 32-value group per thread, as a power of
/// two from 8 to 128 (short rows share a warp, long rows get several warps).
pub fn matvec_threads_per_row(ncols: usize) -> usize {
    let units = (ncols / 32).max(1);
    let p = if units.is_power_of_two() {
        units
    } else {
        units.next_power_of_two() / 2
    };
    p.clamp(8, MATVEC_THREADS)
}

impl CudaDevice {
    fn ptr<T, S: DevicePtr<T>>(&self, s: &S) -> Arg {
        let (p, _sync) = s.device_ptr(self.stream());
        Arg::Ptr(p)
    }

    fn ptr_mut<T, S: DevicePtrMut<T>>(&self, s: &mut S) -> Arg {
        let (p, _sync) = s.device_ptr_mut(self.stream());
        Arg::Ptr(p)
    }

    /// The one launch path: checks the argument list against the kernel's table entry.
    fn launch(
        &self,
        kernel: Kernel,
        grid: (usize, usize, usize),
        block: u32,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let kinds = kernel.args();
        if kinds.len() != args.len() || kinds.iter().zip(args).any(|(k, a)| *k != a.kind()) {
            return Err(bad(
                kernel,
                format!("argument list {args:?} does not match {kinds:?}"),
            ));
        }
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        if grid.1 > 65535 || grid.2 > 65535 {
            return Err(bad(kernel, format!("grid {grid:?} too large")));
        }
        let cfg = LaunchConfig {
            grid_dim: (grid_dim(kernel, grid.0)?, grid.1 as u32, grid.2 as u32),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function(kernel)?;
        let mut b = self.stream().launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: the argument list matches the kernel's parameter list (checked above against
        // the table in source.rs, which mirrors the .cu signatures), and every wrapper below
        // checked that each buffer holds at least as many elements as the kernel touches for
        // the sizes it passes. All buffers belong to this device and are used on its one stream.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    // ---- quantization and norms ----

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

    // ---- matrix products ----

    /// The quantized kernels read 16- and 32-bit words of the weight and Q8_1 blocks; cudarc's
    /// buffers are aligned, but a view at an odd byte offset may not be.
    fn check_align(&self, k: Kernel, what: &str, p: Arg, align: u64) -> Result<Arg, CudaError> {
        match p {
            Arg::Ptr(v) if v % align != 0 => {
                Err(bad(k, format!("{what} is not {align}-byte aligned")))
            }
            _ => Ok(p),
        }
    }

    fn check_weights(
        &self,
        k: Kernel,
        ty: WeightType,
        w_len: usize,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let row = ty.row_bytes(ncols).ok_or_else(|| {
            bad(
                k,
                format!("{ncols} columns is not a whole number of {ty:?} blocks"),
            )
        })?;
        need(k, "w (bytes)", w_len, row * nrows)
    }

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

    /// [`CudaDevice::matmul`] on the tensor cores: W (dequantized) and X rounded to f16,
    /// products accumulated in f32. X must stay within f16 range (|x| < 65504).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_f16_mma(
        &self,
        ty: WeightType,
        w: &impl DevicePtr<u8>,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::matmul_mma(ty);
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
        self.matmul_with(k, 128, ty, w, x, y, nrows, ncols, ntok)
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

    // ---- attention ----

    /// Stores `ntok` rows of K and V (rows of `token_stride` floats, `row` values used) as f16
    /// at positions `pos0[0] + t` of caches holding `n_ctx` rows of `row` values.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_store_f16(
        &self,
        k_new: &impl DevicePtr<f32>,
        v_new: &impl DevicePtr<f32>,
        k_cache: &mut impl DevicePtrMut<u16>,
        v_cache: &mut impl DevicePtrMut<u16>,
        pos0: &impl DevicePtr<i32>,
        ntok: usize,
        token_stride: usize,
        row: usize,
        n_ctx: usize,
    ) -> Result<(), CudaError> {
        self.kv_store::<u16>(
            k_new,
            v_new,
            k_cache,
            v_cache,
            pos0,
            ntok,
            token_stride,
            row,
            n_ctx,
        )
    }

    /// [`CudaDevice::kv_store_f16`] for either cache element type (`u16` = f16, or `f32`).
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

    /// [`CudaDevice::attention`] with one thread per key and a block-wide softmax per split
    /// (`attention_split_wide`), meant for long KV ranges; `shape.chunk` at most 256.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_wide<T: KvElement>(
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
        let k = T::ATTENTION_WIDE;
        if shape.chunk > 256 {
            return Err(bad(k, format!("chunk {} > 256", shape.chunk)));
        }
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

    // ---- element-wise, softmax, lookup, argmax ----

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

    /// out = x · sigmoid(x).
    pub fn silu(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.unary(Kernel::Silu, x, out, n)
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

    /// out = a · b.
    pub fn mul(
        &self,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        self.binary(Kernel::Mul, a, b, out, n)
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

    /// Softmax of each of `nrows` rows of `ncols`.
    pub fn softmax_rows(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        nrows: usize,
        ncols: usize,
    ) -> Result<(), CudaError> {
        let k = Kernel::SoftmaxRows;
        need(k, "x", x.len(), nrows * ncols)?;
        need(k, "out", out.len(), nrows * ncols)?;
        let args = [self.ptr(x), self.ptr_mut(out), int(k, "ncols", ncols)?];
        self.launch(k, (nrows, 1, 1), 256, &args)
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
}

/// An optional f32 buffer argument (LayerNorm's bias) behind a trait object.
pub trait DevicePtrF32 {
    fn len_f32(&self) -> usize;
    fn raw_ptr(&self, dev: &CudaDevice) -> u64;
}

impl<S: DevicePtr<f32>> DevicePtrF32 for S {
    fn len_f32(&self) -> usize {
        self.len()
    }
    fn raw_ptr(&self, dev: &CudaDevice) -> u64 {
        let (p, _sync) = self.device_ptr(dev.stream());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_per_row_is_a_power_of_two_near_one_group_per_thread() {
        // (ncols, threads per row): 32-value groups per row, rounded down to a power of two.
        for (ncols, tpr) in [
            (32, 8),
            (256, 8),
            (576, 16),
            (1536, 32),
            (2048, 64),
            (5632, 128),
            (16384, 128),
        ] {
            assert_eq!(matvec_threads_per_row(ncols), tpr, "ncols {ncols}");
        }
    }

    #[test]
    fn attention_scratch_covers_every_split() {
        let s = AttentionShape {
            ntok: 3,
            n_head: 8,
            n_kv: 2,
            head_dim: 64,
            n_ctx: 1000,
            q_stride: 512,
            out_stride: 512,
            max_kv_len: 1000,
            chunk: 256,
            window: None,
        };
        assert_eq!(s.n_split(), 4);
        assert_eq!(s.scratch_len(), 3 * 8 * 4 * (64 + 2));
    }
}
