//! The GEMM-form products on NEON: the scalar row-by-row GEMM (`scalar/gemm.rs`, its float
//! steps in its order) with each sub-block's integer sum Σ c·y (unsigned codes c ≤ 255, int8
//! activations y) formed in vector registers. Integer sums are exact, so the results are the
//! scalar path's bits.
//!
//! - NEON: codes and activations widened to i16, multiplied in i16 (|c·y| ≤ 255 · 128 < 2¹⁵,
//!   no overflow) and pairwise-accumulated into i32 (`vpadal`).
//! - dotprod: `sdot` takes int8 × int8, so the codes go in as c − 128 (`c ^ 0x80`) and
//!   Σ c·y = Σ (c − 128)·y + 128·Σ y, the second sum an `sdot` of y with ones.

use std::arch::aarch64::*;

use crate::cpu::gemm::RowsJob;
use crate::cpu::scalar::gemm::rows_body;

/// Computes rows `r0 .. r0 + n_rows` of `job` for every token.
///
/// # Safety
/// The CPU supports NEON; `job` describes valid buffers (as `matmul_q` checks),
/// `r0 + n_rows ≤ job.rows`, and no other thread writes the outputs of these rows meanwhile.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn rows_times_tokens(job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    // SAFETY: the caller's contract.
    unsafe { rows_body(job, r0, n_rows, |c, y| dot_u8_i8(c, y)) }
}

/// [`rows_times_tokens`] with `sdot`.
///
/// # Safety
/// As [`rows_times_tokens`], and the CPU supports `dotprod`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn rows_times_tokens_dotprod(job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    // SAFETY: the caller's contract (the CPU has `dotprod`).
    unsafe { rows_body(job, r0, n_rows, |c, y| dot_u8_i8_sdot(c, y)) }
}

/// Σ c·y over `c.len()` values (a multiple of 16, `y` at least as long).
#[inline]
#[target_feature(enable = "neon")]
fn dot_u8_i8(c: &[u8], y: &[i8]) -> i32 {
    assert!(y.len() >= c.len() && c.len().is_multiple_of(16));
    let mut acc = vdupq_n_s32(0);
    for i in (0..c.len()).step_by(16) {
        // SAFETY: `i + 16 <= c.len() <= y.len()` (asserted above).
        let (cv, yv) = unsafe { (vld1q_u8(c.as_ptr().add(i)), vld1q_s8(y.as_ptr().add(i))) };
        let c_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(cv)));
        let c_hi = vreinterpretq_s16_u16(vmovl_high_u8(cv));
        let y_lo = vmovl_s8(vget_low_s8(yv));
        let y_hi = vmovl_high_s8(yv);
        acc = vpadalq_s16(acc, vmulq_s16(c_lo, y_lo));
        acc = vpadalq_s16(acc, vmulq_s16(c_hi, y_hi));
    }
    vaddvq_s32(acc)
}

/// `sdot acc.4s, a.16b, b.16b`: each i32 lane plus the four int8 products of its bytes.
///
/// # Safety
/// The CPU supports `dotprod`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction of the `dotprod` extension, which the caller
    // guarantees; it reads and writes only the named vector registers.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// [`dot_u8_i8`] with `sdot`.
///
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn dot_u8_i8_sdot(c: &[u8], y: &[i8]) -> i32 {
    assert!(y.len() >= c.len() && c.len().is_multiple_of(16));
    let (mut acc, mut sum_y) = (vdupq_n_s32(0), vdupq_n_s32(0));
    let (flip, ones) = (vdupq_n_u8(0x80), vdupq_n_s8(1));
    for i in (0..c.len()).step_by(16) {
        // SAFETY: `i + 16 <= c.len() <= y.len()` (asserted above); `sdot` runs only in the
        // `dotprod` table, handed out when the CPU has the extension.
        unsafe {
            let cv = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(c.as_ptr().add(i)), flip));
            let yv = vld1q_s8(y.as_ptr().add(i));
            acc = sdot(acc, cv, yv);
            sum_y = sdot(sum_y, ones, yv);
        }
    }
    vaddvq_s32(acc) + 128 * vaddvq_s32(sum_y)
}
