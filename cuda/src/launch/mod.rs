//! Typed launch wrappers, one per kernel, and the one place where launches are checked.
//!
//! This module holds the shared part (argument kinds, size checks, [`CudaDevice::launch`]);
//! the wrappers live in one file per kernel family: `norm` (Q8_1 quantization, norms),
//! `matvec`, `matmul`, `attention` (RoPE, KV-cache writes, attention), `elementwise`, `lora`
//! (the two products of a LoRA term).
//!
//! Every wrapper checks buffer lengths and sizes against what the kernel will touch, then
//! calls [`CudaDevice::launch`], which checks the argument list against [`Kernel::args`].
//! Buffers are anything cudarc can hand a device pointer for (`CudaSlice`, `CudaView`,
//! `CudaViewMut`), so callers can pass sub-ranges of larger buffers.

use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg};

mod attention;
mod elementwise;
mod lora;
mod matmul;
mod matvec;
mod norm;

use crate::{ArgKind, CudaDevice, CudaError, Kernel, WeightType};

/// Bytes of one Q8_1 activation block (32 values): f16 d, f16 s, 32 × i8.
pub const Q8_1_BLOCK_BYTES: usize = 36;

/// The largest LoRA rank [`CudaDevice::lora_up`] takes (LORA_MAX_RANK in lora.cu).
pub const LORA_MAX_RANK: usize = 256;

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
    const ROPE_KV_STORE: Kernel;
}

impl KvElement for u16 {
    const KV_STORE: Kernel = Kernel::KvStoreF16;
    const ATTENTION: Kernel = Kernel::AttentionSplit;
    const ROPE_KV_STORE: Kernel = Kernel::RopeKvStoreF16;
}

impl KvElement for f32 {
    const KV_STORE: Kernel = Kernel::KvStoreF32;
    const ATTENTION: Kernel = Kernel::AttentionSplitF32;
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

/// Shapes of one bidirectional attention of packed sequences ([`CudaDevice::attention_packed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedAttentionShape {
    /// Rows of the batch: the last sequence boundary.
    pub rows: usize,
    /// Sequences in the batch (the boundary buffer holds `n_seq + 1` values).
    pub n_seq: usize,
    pub n_head: usize,
    /// KV heads; must divide `n_head` (grouped-query attention).
    pub n_kv: usize,
    /// At most 256.
    pub head_dim: usize,
    /// Floats between consecutive rows in `q` (≥ n_head × head_dim).
    pub q_stride: usize,
    /// Floats between consecutive rows in `k` and in `v` (≥ n_kv × head_dim).
    pub kv_stride: usize,
    /// Floats between consecutive rows in the output (≥ n_head × head_dim).
    pub out_stride: usize,
}

/// How [`CudaDevice::pool_rows`] reduces a sequence's rows to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// Their mean (f32 sums in row order, then one division).
    Mean,
    /// The first row.
    First,
    /// The last row.
    Last,
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
