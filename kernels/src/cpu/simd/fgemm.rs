//! The float GEMM's panel kernel for AVX2 and AVX-512, written once over [`F32Vec`]: a tile
//! of `TB` tokens × 32 rows (`NV` vectors) of accumulators, each lane one sequential FMA chain
//! over the columns (`fgemm::panel_ref`'s order, so its bits).

use super::F32Vec;
use crate::cpu::fgemm::{PanelJob, PanelRef, FPANEL};

/// One panel times every token of the job, `TB` tokens at a time.
///
/// # Safety
/// `NV * LANES == 32`, and the job satisfies `fgemm::FloatPanelFn`'s contract.
#[inline(always)]
pub(crate) unsafe fn panel<V: F32Vec, const NV: usize, const TB: usize>(v: V, job: &PanelJob) {
    debug_assert_eq!(NV * V::LANES, FPANEL);
    let cols = job.cols;
    for t0 in (0..job.n_tokens).step_by(TB) {
        let nt = TB.min(job.n_tokens - t0);
        // Tokens past the end repeat the last one; their sums are not stored.
        let xs: [*const f32; TB] =
            std::array::from_fn(|i| job.x[(t0 + i.min(nt - 1)) * cols..].as_ptr());
        let mut acc = [[v.zero(); NV]; TB];
        match job.panel {
            PanelRef::F32(p) => {
                let p = p.as_ptr();
                for c in 0..cols {
                    // SAFETY: the panel holds 32 × cols values: step c is p[c * 32 .. + 32].
                    let w: [V::Reg; NV] = std::array::from_fn(|k| unsafe {
                        v.loadu(p.add(c * FPANEL + k * V::LANES))
                    });
                    for (a, &x) in acc.iter_mut().zip(&xs) {
                        // SAFETY: x points at a row of cols values, c < cols.
                        let b = v.splat(unsafe { *x.add(c) });
                        for k in 0..NV {
                            a[k] = v.fmadd(w[k], b, a[k]);
                        }
                    }
                }
            }
            PanelRef::F16(p) => {
                let p = p.as_ptr();
                for c in 0..cols {
                    // SAFETY: as above, for the f16 panel.
                    let w: [V::Reg; NV] = std::array::from_fn(|k| unsafe {
                        v.loadu_f16(p.add(c * FPANEL + k * V::LANES))
                    });
                    for (a, &x) in acc.iter_mut().zip(&xs) {
                        // SAFETY: as above.
                        let b = v.splat(unsafe { *x.add(c) });
                        for k in 0..NV {
                            a[k] = v.fmadd(w[k], b, a[k]);
                        }
                    }
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(nt) {
            // SAFETY: the caller's contract: token t0 + i < n_tokens, rows i < n_rows.
            let out = unsafe {
                std::slice::from_raw_parts_mut(job.out.add((t0 + i) * job.out_stride), job.n_rows)
            };
            for (k, &r) in a.iter().enumerate() {
                if k * V::LANES < job.n_rows {
                    // SAFETY: k * LANES < out.len(); `store` writes the lanes that fit.
                    unsafe { v.store(out, k * V::LANES, r) };
                }
            }
        }
    }
}
