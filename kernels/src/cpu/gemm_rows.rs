//! The GEMM's arithmetic on the ISAs without its AVX-512 micro-kernel (scalar, AVX2).
//!
//! On AVX-512 the GEMM types take the register-blocked GEMM of `cpu/gemm.rs` for every token
//! count. For a model to give the same logits on every ISA, the other ISAs must compute those
//! matrix products with the very same float operations, not merely the same integer sums.
//! Per output (row, token), for each sub-block `b` in order:
//!
//! ```text
//! isum  = init[b] + Σ code·y                 (exact integer; any method)
//! scale = s_row[b] · d_tok[b]                (f32 multiply)
//! acc   = fma(f32(isum), scale, acc)
//! acc   = fma(mn_row[b], ms_tok[b], acc)     (forms with minimums only)
//! ```
//!
//! starting from `acc = +0.0`. The per-ISA kernels (`scalar/gemm.rs`, `avx2/gemm.rs`) work on
//! the row-major codes of `gemm::unpack_block` (or a SIMD unpack of the same bytes), so no panel
//! is packed; `matmul.rs` hands out the rows to the threads as it does the panels.

use crate::cpu::gemm::{GemmActs, GemmForm};
use crate::cpu::Isa;
use crate::quant::{GgmlType, QuantFormat};

/// One matrix product in the GEMM's form.
pub(crate) struct RowsJob<'a> {
    pub ty: GgmlType,
    pub form: GemmForm,
    /// The weight matrix: `rows` rows of `wrb` bytes, `cols` values each.
    pub data: &'a [u8],
    pub wrb: usize,
    pub cols: usize,
    pub rows: usize,
    pub acts: &'a GemmActs,
    pub n_tokens: usize,
    /// `n_tokens × rows` outputs, token-major.
    pub out: *mut f32,
}

impl<'a> RowsJob<'a> {
    /// The job of `matmul_q`'s checked sizes (checked again here: the kernels index the
    /// buffers unchecked).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ty: GgmlType,
        form: GemmForm,
        data: &'a [u8],
        wrb: usize,
        cols: usize,
        rows: usize,
        acts: &'a GemmActs,
        n_tokens: usize,
        out: *mut f32,
    ) -> RowsJob<'a> {
        let fmt = QuantFormat::Ggml(ty);
        assert!(
            cols.is_multiple_of(fmt.block_size())
                && wrb == cols / fmt.block_size() * fmt.type_size()
                && data.len() >= rows * wrb
                && acts.y.len() >= n_tokens * cols
                && acts.side.len() >= n_tokens * (cols / form.kb),
            "gemm_rows: bad sizes"
        );
        RowsJob {
            ty,
            form,
            data,
            wrb,
            cols,
            rows,
            acts,
            n_tokens,
            out,
        }
    }
}

/// Computes rows `r0 .. r0 + n_rows` of `job` for every token on `isa` (scalar or AVX2).
///
/// # Safety
/// `job.out` holds `n_tokens × rows` floats; `r0 + n_rows ≤ job.rows`, and no other thread
/// writes the outputs of these rows meanwhile.
pub(crate) unsafe fn rows_times_tokens(isa: Isa, job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    assert!(r0 + n_rows <= job.rows);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert!(Isa::Avx2.is_supported(), "AVX2 GEMM on a CPU without AVX2");
            // SAFETY: the CPU supports AVX2/FMA/F16C (checked above); the rest is the
            // caller's contract.
            unsafe { crate::cpu::avx2::gemm::rows_times_tokens(job, r0, n_rows) }
        }
        // SAFETY: the caller's contract.
        _ => unsafe { crate::cpu::scalar::gemm::rows_times_tokens(job, r0, n_rows) },
    }
}
