//! RoPE over the precomputed cos/sin table.

use super::*;

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    cache: &RopeCache,
) {
    let n_rot = cache.n_rot();
    let half = n_rot / 2;
    for (tok, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        let row = cache.row(pos);
        for head in tok.chunks_exact_mut(head_dim) {
            match cache.mode() {
                RopeMode::Normal => {
                    let head = &mut head[..n_rot];
                    let mut i = 0;
                    while i < n_rot {
                        // SAFETY: `i < n_rot` = length of `head` and `row`; n_rot is even, so
                        // a masked tail holds whole pairs.
                        unsafe {
                            let v = load(head, i);
                            let cs = load(row, i);
                            // ggml: even lanes fma(x0, cos, -(x1 sin)), odd lanes
                            // fma(x0, sin, x1 cos) (see `scalar::rope`).
                            let x0 = _mm512_moveldup_ps(v);
                            let x1 = _mm512_movehdup_ps(v);
                            let sc = _mm512_permute_ps::<0b1011_0001>(cs);
                            store(head, i, _mm512_fmaddsub_ps(x0, cs, _mm512_mul_ps(x1, sc)));
                        }
                        i += LANES;
                    }
                }
                RopeMode::Neox => {
                    let (lo, rest) = head.split_at_mut(half);
                    let hi = &mut rest[..half];
                    let (cos, sin) = row.split_at(half);
                    let mut i = 0;
                    while i < half {
                        // SAFETY: `i < half` = length of `lo`, `hi`, `cos` and `sin`.
                        unsafe {
                            let x0 = load(lo, i);
                            let x1 = load(hi, i);
                            let c = load(cos, i);
                            let s = load(sin, i);
                            store(lo, i, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
                            store(hi, i, _mm512_fmadd_ps(x0, s, _mm512_mul_ps(x1, c)));
                        }
                        i += LANES;
                    }
                }
            }
        }
    }
}
