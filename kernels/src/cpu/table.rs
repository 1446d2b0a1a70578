//! The kernel table of one ISA ([`Kernels`]) and the function-pointer types its rows hold.
//! Each ISA folder fills one `static KERNELS: Kernels`; [`Kernels::get`] (`cpu/mod.rs`) hands
//! them out. Everything ISA-neutral (the matrix products, the ops, attention) calls through
//! these pointers and never names an ISA.

use crate::cpu::attention::packed::PackedJob;
use crate::cpu::attention::{AttnJob, AttnTile};
use crate::cpu::gemm::{GemmForm, Line, RowsJob, Side, Tile};
use crate::cpu::repack::Repacked;
use crate::cpu::rope::RopeCache;
use crate::cpu::Isa;
use crate::quant::{GgmlType, QuantFormat};

/// A dot product of `n` values: a weight row `w` (ggml layout of the weight type) with an
/// activation row `a` (ggml layout of the activation type the kernel wants).
///
/// # Safety
/// The CPU supports the ISA of the kernel; `n` is a multiple of the block size of both types;
/// `w` and `a` hold at least the bytes of `n` values of their types.
pub type VecDotFn = unsafe fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Four dot products of one weight row with four activation rows (prefill): the weight row is
/// unpacked once for all four. Each result equals the [`VecDotFn`] result bit for bit.
///
/// # Safety
/// As [`VecDotFn`], for each of the four activation rows.
pub type VecDot4Fn = unsafe fn(n: usize, w: &[u8], a: [&[u8]; 4]) -> [f32; 4];

/// Converts `x` (a multiple of the block size of the activation type) into `out` (at least the
/// bytes of `x.len()` values of that type).
///
/// # Safety
/// The CPU supports the ISA of the kernel and the sizes hold as above.
pub type QuantizeRowFn = unsafe fn(x: &[f32], out: &mut [u8]);

/// One row of a kernel table: the weight type, the activation type its dot product wants
/// (ggml's `vec_dot_type`) and the kernel.
#[derive(Clone, Copy)]
pub(crate) struct VecDotEntry {
    pub weight: QuantFormat,
    pub act: GgmlType,
    pub f: VecDotFn,
    /// The four-token form, where the ISA has one.
    pub f4: Option<VecDot4Fn>,
}

/// A kernel-table row for a ggml weight type.
pub(crate) const fn dot_entry(weight: GgmlType, act: GgmlType, f: VecDotFn) -> VecDotEntry {
    VecDotEntry {
        weight: QuantFormat::Ggml(weight),
        act,
        f,
        f4: None,
    }
}

/// A kernel-table row with a four-token kernel.
pub(crate) const fn dot_entry4(
    weight: GgmlType,
    act: GgmlType,
    f: VecDotFn,
    f4: VecDot4Fn,
) -> VecDotEntry {
    VecDotEntry {
        weight: QuantFormat::Ggml(weight),
        act,
        f,
        f4: Some(f4),
    }
}

/// One activation converter: the activation type and the kernel.
#[derive(Clone, Copy)]
pub(crate) struct QuantizeEntry {
    pub act: GgmlType,
    pub f: QuantizeRowFn,
}

/// Errors of the kernel-level API (single dot products and row conversions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("no {isa} dot-product kernel for weight type {ty}")]
    UnsupportedWeight { isa: &'static str, ty: QuantFormat },
    #[error("{ty} is not an activation type the {isa} kernels can produce")]
    UnsupportedActivation { isa: &'static str, ty: GgmlType },
    #[error("{n} values is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        ty: QuantFormat,
        n: usize,
        block: usize,
    },
    #[error("{what}: need {need} bytes/values, got {got}")]
    Size {
        what: &'static str,
        need: usize,
        got: usize,
    },
}

/// The transformer ops of one ISA (`cpu/{scalar,avx2,avx512}/ops`). The checked API is
/// [`crate::cpu::ops`].
///
/// # Safety (every entry)
/// The CPU supports the ISA of the table, and the shapes hold as `cpu::ops` checks them.
#[derive(Clone, Copy)]
pub(crate) struct OpKernels {
    pub rms_norm_inplace: unsafe fn(x: &mut [f32], weight: &[f32], eps: f32),
    #[allow(clippy::type_complexity)]
    pub layer_norm_inplace:
        unsafe fn(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32),
    pub rope: unsafe fn(
        x: &mut [f32],
        n_heads: usize,
        head_dim: usize,
        positions: &[usize],
        cache: &RopeCache,
    ),
    pub gelu_tanh_inplace: unsafe fn(x: &mut [f32]),
    pub gelu_erf_inplace: unsafe fn(x: &mut [f32]),
    pub swiglu_inplace: unsafe fn(gate: &mut [f32], up: &[f32]),
    pub geglu_tanh_inplace: unsafe fn(gate: &mut [f32], up: &[f32]),
    pub add_inplace: unsafe fn(x: &mut [f32], y: &[f32]),
    pub scale_inplace: unsafe fn(x: &mut [f32], s: f32),
    pub f32_to_f16_row: unsafe fn(src: &[f32], dst: &mut [u16]),
    pub f16_to_f32_row: unsafe fn(src: &[u16], dst: &mut [f32]),
    /// Attention of one query token over a key range (ggml's per-key path).
    pub attend_group: unsafe fn(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]),
    /// Attention of a tile of query tokens (ggml's tiled path).
    pub attend_tile: unsafe fn(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]),
    /// Query rows (tokens × heads) per tile that `attend_tile` holds in registers.
    pub attn_tile_rows: usize,
    /// Bidirectional attention of one (sequence, head) of a packed batch (encoders), into
    /// `out` (`rows × head_dim`).
    pub attend_packed: unsafe fn(job: &PackedJob, out: &mut [f32]),
}

/// Rows `r0 .. r0 + n_rows` of a GEMM-form product for every token, without panels.
///
/// # Safety
/// The CPU supports the ISA of the table; `job.out` holds `n_tokens × rows` floats,
/// `r0 + n_rows ≤ job.rows`, and no other thread writes the outputs of these rows meanwhile.
pub(crate) type RowsFn = unsafe fn(job: &RowsJob<'_>, r0: usize, n_rows: usize);

/// The register-blocked panel GEMM (`cpu/gemm.rs`) of an ISA that has one.
#[derive(Clone, Copy)]
pub(crate) struct PanelGemm {
    /// Multiplies up to 16 rows with one token straight from the GGUF blocks; `false` for a
    /// type it does not handle.
    #[allow(clippy::type_complexity)]
    pub one_token: fn(
        ty: GgmlType,
        data: &[u8],
        wrb: usize,
        cols: usize,
        r0: usize,
        n_rows: usize,
        y: &[i8],
        side: &[Side],
        out: &mut [f32],
    ) -> bool,
    /// Packs up to 16 rows into a panel straight from the GGUF blocks; `false` for a type it
    /// does not handle (then `pack_panel` with [`PanelGemm::transpose`] packs it).
    #[allow(clippy::type_complexity)]
    pub pack_fast: fn(
        ty: GgmlType,
        data: &[u8],
        wrb: usize,
        cols: usize,
        r0: usize,
        n_rows: usize,
        panel: &mut Vec<Line>,
    ) -> bool,
    /// `pack_panel`'s transpose of 16 rows of codes.
    pub transpose: fn(src: &[u8], src_stride: usize, kb: usize, dst: &mut [u8]),
    /// Multiplies a packed panel with every token of `tile`.
    ///
    /// # Safety
    /// The CPU supports the ISA of the table; `tile` describes buffers as [`Tile`] says.
    pub multiply: unsafe fn(form: GemmForm, tile: &Tile),
    /// The products on weights repacked at load (`cpu/repack.rs`), where the ISA has them.
    pub repacked: Option<RepackedGemm>,
}

/// The panel GEMM's kernels on repacked weights ([`crate::cpu::repack::Repacked`]): the same
/// bits as [`PanelGemm::one_token`] and [`PanelGemm::pack_fast`] on the GGUF blocks.
#[derive(Clone, Copy)]
pub(crate) struct RepackedGemm {
    /// Repacks `rows` rows of `wrb` bytes of a repackable type into `out` (zeros, the rows
    /// rounded up to a multiple of 16): `cpu/repack.rs`'s `repack_rows`, bit for bit.
    pub repack: fn(ty: GgmlType, data: &[u8], wrb: usize, rows: usize, out: &mut [u8]),
    /// Multiplies the panel of rows `r0 .. r0 + n_rows` (`r0` a multiple of 16) with one token.
    #[allow(clippy::type_complexity)]
    pub one_token:
        fn(w: &Repacked, r0: usize, n_rows: usize, y: &[i8], side: &[Side], out: &mut [f32]),
    /// Packs the panel of rows `r0 .. r0 + n_rows` into the GEMM's panel form.
    pub pack: fn(w: &Repacked, r0: usize, n_rows: usize, panel: &mut Vec<Line>),
    /// Multiplies the panel of rows `r0 .. r0 + n_rows` with every token of `tile` (its
    /// `panel` unused) without packing it, the bits of `pack` and [`PanelGemm::multiply`];
    /// `false` (nothing done) for a type it does not handle.
    ///
    /// # Safety
    /// The CPU supports the ISA of the table; `tile` describes buffers as [`Tile`] says, its
    /// `mask` the `n_rows` rows.
    pub tokens: unsafe fn(w: &Repacked, r0: usize, n_rows: usize, tile: &Tile) -> bool,
}

/// How an ISA computes the GEMM-form products (`Kernels::uses_gemm`): the same float
/// operations either way, so the same bits on every ISA.
#[derive(Clone, Copy)]
pub(crate) enum GemmKernels {
    /// Packed panels and a register-blocked micro-kernel (AVX-512).
    Panels(PanelGemm),
    /// Row by row on the row-major codes (scalar, AVX2).
    Rows(RowsFn),
}

/// The kernels of one ISA. Handed out only by [`Kernels::get`] / [`Kernels::best`], which check
/// that the CPU supports the ISA first; every method is therefore safe to call.
pub struct Kernels {
    pub isa: Isa,
    pub(crate) dots: &'static [VecDotEntry],
    pub(crate) quantizers: &'static [QuantizeEntry],
    pub(crate) read_probe: unsafe fn(&[u8]) -> u64,
    pub(crate) ops: OpKernels,
    pub(crate) gemm: GemmKernels,
    /// The float GEMM's panel kernel (`cpu/fgemm.rs`).
    pub(crate) float_panel: crate::cpu::fgemm::FloatPanelFn,
}

/// Bytes taken by `n` values of `ty`, or an error when `n` is not a whole number of blocks.
pub(crate) fn row_bytes(ty: impl Into<QuantFormat>, n: usize) -> Result<usize, KernelError> {
    let ty = ty.into();
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(KernelError::NotBlockMultiple { ty, n, block });
    }
    (n / block)
        .checked_mul(ty.type_size())
        .ok_or(KernelError::Size {
            what: "row bytes overflow",
            need: usize::MAX,
            got: n,
        })
}

impl Kernels {
    pub(crate) fn entry_for(&self, weight: QuantFormat) -> Option<VecDotEntry> {
        self.dots.iter().copied().find(|e| e.weight == weight)
    }

    pub(crate) fn quantize_entry(&self, act: GgmlType) -> Option<QuantizeEntry> {
        self.quantizers.iter().copied().find(|e| e.act == act)
    }

    /// The weight types this table has a dot-product kernel for.
    pub fn weight_types(&self) -> impl Iterator<Item = QuantFormat> + '_ {
        self.dots.iter().map(|e| e.weight)
    }

    /// The activation type the dot product of weight type `weight` consumes (ggml's
    /// `vec_dot_type`), or `None` when there is no kernel for `weight`.
    pub fn act_type(&self, weight: impl Into<QuantFormat>) -> Option<GgmlType> {
        self.entry_for(weight.into()).map(|e| e.act)
    }

    /// Converts `x` to activation type `act` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K) into `out`.
    pub fn quantize_row(
        &self,
        act: GgmlType,
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), KernelError> {
        let e = self
            .quantize_entry(act)
            .ok_or(KernelError::UnsupportedActivation {
                isa: self.isa.name(),
                ty: act,
            })?;
        let need = row_bytes(act, x.len())?;
        if out.len() < need {
            return Err(KernelError::Size {
                what: "quantized row buffer",
                need,
                got: out.len(),
            });
        }
        // SAFETY: `self` was handed out by `Kernels::get`, which checked that the CPU supports
        // `self.isa`; the length of `x` is a whole number of blocks and `out` is large enough.
        unsafe { (e.f)(x, out) };
        Ok(())
    }

    /// The dot product of `n` values of weight row `w` (type `weight`) with activation row `a`
    /// (already in [`Kernels::act_type`] of `weight`).
    pub fn vec_dot(
        &self,
        weight: impl Into<QuantFormat>,
        n: usize,
        w: &[u8],
        a: &[u8],
    ) -> Result<f32, KernelError> {
        let (e, need_w, need_a) = self.checked_row(weight.into(), n, w)?;
        if a.len() < need_a {
            return Err(KernelError::Size {
                what: "activation row",
                need: need_a,
                got: a.len(),
            });
        }
        // SAFETY: the CPU supports `self.isa` (checked by `Kernels::get`), `n` is a whole number
        // of blocks of both types (row_bytes succeeded) and both rows have exactly their bytes.
        Ok(unsafe { (e.f)(n, &w[..need_w], &a[..need_a]) })
    }

    /// The dot-product entry of `weight`, and the bytes of one weight row and one activation
    /// row of `n` values, after checking that `w` holds the weight row.
    fn checked_row(
        &self,
        weight: QuantFormat,
        n: usize,
        w: &[u8],
    ) -> Result<(VecDotEntry, usize, usize), KernelError> {
        let e = self
            .entry_for(weight)
            .ok_or(KernelError::UnsupportedWeight {
                isa: self.isa.name(),
                ty: weight,
            })?;
        let need_w = row_bytes(weight, n)?;
        let need_a = row_bytes(e.act, n)?;
        if w.len() < need_w {
            return Err(KernelError::Size {
                what: "weight row",
                need: need_w,
                got: w.len(),
            });
        }
        Ok((e, need_w, need_a))
    }

    /// Whether the kernel of `weight` has a four-token (prefill) form on this ISA.
    pub fn has_vec_dot4(&self, weight: impl Into<QuantFormat>) -> bool {
        self.entry_for(weight.into())
            .is_some_and(|e| e.f4.is_some())
    }

    /// [`Kernels::vec_dot`] of one weight row against four activation rows (the four-token
    /// kernel where there is one, otherwise four single calls; the results are the same).
    pub fn vec_dot4(
        &self,
        weight: impl Into<QuantFormat>,
        n: usize,
        w: &[u8],
        a: [&[u8]; 4],
    ) -> Result<[f32; 4], KernelError> {
        let (e, need_w, need_a) = self.checked_row(weight.into(), n, w)?;
        if let Some(short) = a.iter().find(|a| a.len() < need_a) {
            return Err(KernelError::Size {
                what: "activation row",
                need: need_a,
                got: short.len(),
            });
        }
        let a = a.map(|a| &a[..need_a]);
        let w = &w[..need_w];
        // SAFETY: as in `vec_dot`, for each of the four activation rows.
        Ok(unsafe {
            match e.f4 {
                Some(f4) => f4(n, w, a),
                None => a.map(|a| (e.f)(n, w, a)),
            }
        })
    }
}

impl Kernels {
    /// Reads every byte of `data` with this ISA's widest loads and returns an XOR of its 64-bit
    /// words (a memory read-bandwidth probe for the benchmarks; the result only keeps the
    /// reads from being optimised away). A tail of fewer than 8 bytes is ignored.
    pub fn read_probe(&self, data: &[u8]) -> u64 {
        // SAFETY: the CPU supports `self.isa` (checked by `Kernels::get`); the probe reads only
        // within `data`.
        unsafe { (self.read_probe)(data) }
    }
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}
