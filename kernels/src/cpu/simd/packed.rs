//! The packed (encoder) attention kernel of AVX2 and AVX-512, written once over [`F32Vec`]:
//! `attention::packed::attend_packed_ref`'s operations in the same order per value, so the
//! same bits. The keys of the job are transposed once so that a vector holds one score for
//! each of `LANES` keys, and four queries share every key and value load.

use super::F32Vec;
use crate::cpu::attention::packed::PackedJob;

/// Queries computed together.
const QB: usize = 4;

/// One job into `out` (`len × head_dim`).
///
/// # Safety
/// The job passed `PackedJob::check` and `out` holds `job.len() * job.head_dim` values.
#[inline(always)]
pub(crate) unsafe fn attend_packed<V: F32Vec>(v: V, job: &PackedJob, out: &mut [f32]) {
    let (hd, n) = (job.head_dim, job.len());
    let lanes = V::LANES;
    let np = n.next_multiple_of(lanes);
    // kt[c * np + j] = key j, dimension c (zeros in the padding keys).
    let mut kt = vec![0.0f32; hd * np];
    for j in 0..n {
        let k = &job.k[job.kv_offset(j)..][..hd];
        for (c, &x) in k.iter().enumerate() {
            kt[c * np + j] = x;
        }
    }
    let mut p = vec![0.0f32; QB * np];
    let scale = v.splat(job.scale);
    for t0 in (0..n).step_by(QB) {
        let nq = QB.min(n - t0);
        let qs: [&[f32]; QB] = std::array::from_fn(|i| job.q_row(t0 + i.min(nq - 1)));
        // Scores: one FMA chain per (query, key) over the dimensions, in order.
        for j in (0..np).step_by(lanes) {
            let mut acc = [v.zero(); QB];
            for c in 0..hd {
                // SAFETY: c * np + j + lanes <= hd * np (j < np, np a multiple of lanes).
                let kv = unsafe { v.loadu(kt.as_ptr().add(c * np + j)) };
                for (a, q) in acc.iter_mut().zip(&qs) {
                    *a = v.fmadd(v.splat(q[c]), kv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: i * np + j + lanes <= QB * np.
                unsafe { v.storeu(p.as_mut_ptr().add(i * np + j), v.mul(*a, scale)) };
            }
        }
        let mut inv = [v.zero(); QB];
        for (i, w) in inv.iter_mut().enumerate().take(nq) {
            *w = v.splat(softmax_v(v, &mut p[i * np..(i + 1) * np], n));
        }
        // Outputs: one FMA chain per (query, dimension) over the keys, in order.
        let stride = job.n_kv_heads * hd;
        let base = job.kv_offset(0);
        assert!(base + (n - 1) * stride + hd <= job.v.len());
        for d in (0..hd).step_by(lanes) {
            let mut acc = [v.zero(); QB];
            let full = d + lanes <= hd;
            for j in 0..n {
                let off = base + j * stride;
                let vv = if full {
                    // SAFETY: off + d + lanes <= off + hd <= v.len() (asserted above).
                    unsafe { v.loadu(job.v.as_ptr().add(off + d)) }
                } else {
                    // SAFETY: d < hd, so `d` is inside the key's row of `hd` values (`load`
                    // zeroes the lanes past its end).
                    unsafe { v.load(&job.v[off..off + hd], d) }
                };
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = v.fmadd(v.splat(p[i * np + j]), vv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(nq) {
                let row = &mut out[(t0 + i) * hd..(t0 + i + 1) * hd];
                // SAFETY: d < hd = row.len() (`store` writes the lanes that fit).
                unsafe { v.store(row, d, v.div(*a, inv[i])) };
            }
        }
    }
}

/// `packed::softmax_weights` of the first `n` scores of `s` (`s.len()` a multiple of `LANES`),
/// with the exponentials in vectors: `exp_ggml` has `scalar::expf_ggml_v`'s bits, and the sum
/// is taken in key order as there.
#[inline(always)]
fn softmax_v<V: F32Vec>(v: V, s: &mut [f32], n: usize) -> f32 {
    let m = s[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mv = v.splat(m);
    for j in (0..s.len()).step_by(V::LANES) {
        // SAFETY: j + LANES <= s.len() (a multiple of LANES).
        unsafe {
            let x = v.loadu(s.as_ptr().add(j));
            v.storeu(s.as_mut_ptr().add(j), v.exp_ggml(v.sub(x, mv)));
        }
    }
    let mut sum = 0.0f32;
    for &x in &s[..n] {
        sum += x;
    }
    sum
}
