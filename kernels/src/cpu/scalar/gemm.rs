//! The portable form of the GEMM's arithmetic (see `RowsJob` in `cpu/gemm.rs`): one weight row at a
//! time, each block unpacked once per tile of tokens, the float steps of the AVX-512
//! micro-kernel for each (row, token).

use crate::cpu::gemm::{side_index, unpack_block, RowsJob};
use crate::quant::QuantFormat;

/// Tokens whose accumulators are kept while one row is walked.
const TOKEN_TILE: usize = 32;

/// Computes rows `r0 .. r0 + n_rows` of `job` for every token.
///
/// # Safety
/// `job` describes valid buffers (as `matmul_q` checks), `r0 + n_rows ≤ job.rows`, and no other
/// thread writes the outputs of these rows meanwhile.
pub(crate) unsafe fn rows_times_tokens(job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    // `f32::mul_add` is one instruction with FMA and a (correctly rounded, so identical but
    // slow) libm call without it.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA; the rest is the caller's contract.
        unsafe { rows_with_fma(job, r0, n_rows) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { rows_body(job, r0, n_rows, dot_u8_i8) }
}

/// Σ c·y of one sub-block's codes and int8 activations (the GEMM's integer sum, exact).
#[inline(always)]
fn dot_u8_i8(c: &[u8], y: &[i8]) -> i32 {
    c.iter().zip(y).map(|(&q, &y)| q as i32 * y as i32).sum()
}

/// # Safety
/// The CPU supports FMA; as [`rows_times_tokens`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rows_with_fma(job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    // SAFETY: the caller's contract.
    unsafe { rows_body(job, r0, n_rows, dot_u8_i8) }
}

/// The row-by-row GEMM with `dot` for each sub-block's integer sum Σ c·y (`kb` codes against
/// `kb` int8 values; every implementation gives the same exact integer, so the float steps
/// here, shared by every caller, give the same bits). The NEON tiers call it with their own
/// `dot`.
///
/// # Safety
/// As [`rows_times_tokens`].
#[inline(always)]
pub(crate) unsafe fn rows_body(
    job: &RowsJob<'_>,
    r0: usize,
    n_rows: usize,
    dot: impl Fn(&[u8], &[i8]) -> i32,
) {
    let fmt = QuantFormat::Ggml(job.ty);
    let (bs, ts) = (fmt.block_size(), fmt.type_size());
    let (kb, cols, n_tokens) = (job.form.kb, job.cols, job.n_tokens);
    let per = bs / kb;
    let nsub = cols / kb;
    let mut codes = [0u8; 256];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut acc = [0f32; TOKEN_TILE];
    for t0 in (0..n_tokens).step_by(TOKEN_TILE) {
        let nt = (n_tokens - t0).min(TOKEN_TILE);
        for r in r0..r0 + n_rows {
            acc[..nt].fill(0.0);
            let row = &job.data[r * job.wrb..(r + 1) * job.wrb];
            for wb in 0..cols / bs {
                unpack_block(
                    job.ty,
                    &row[wb * ts..(wb + 1) * ts],
                    &mut codes[..bs],
                    &mut scales,
                    &mut mins,
                );
                for s in 0..per {
                    let b = wb * per + s;
                    let c = &codes[s * kb..(s + 1) * kb];
                    for (k, a) in acc[..nt].iter_mut().enumerate() {
                        let sd = &job.acts.side[side_index(n_tokens, nsub, b, t0 + k)];
                        let at = (t0 + k) * cols + b * kb;
                        let y = &job.acts.y[at..at + kb];
                        let isum = sd.init + dot(c, y);
                        *a = (isum as f32).mul_add(scales[s] * sd.d, *a);
                        if job.form.mins {
                            *a = mins[s].mul_add(sd.ms, *a);
                        }
                    }
                }
            }
            for (k, &a) in acc[..nt].iter().enumerate() {
                // SAFETY: t0 + k < n_tokens and r < rows: within the n_tokens × rows output
                // (caller contract), and row r belongs to this call only.
                unsafe { *job.out.add((t0 + k) * job.rows + r) = a };
            }
        }
    }
}
