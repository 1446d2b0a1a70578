//! RoPE (reference).

use super::*;

/// RoPE on `n_tokens × n_heads × head_dim` values with a precomputed cache (ggml `rotate_pairs`).
/// ggml's `x0*cos - x1*sin` and `x0*sin + x1*cos` are contracted by its compiler (GCC, `-mfma`;
/// seen in the disassembly of the goldens' build) to `fma(x0, cos, -(x1*sin))` and
/// `fma(x0, sin, x1*cos)`; every ISA computes exactly these, so they agree bit for bit.
#[inline]
pub fn rope(
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
                    // Row layout [cos0, sin0, cos1, sin1, ...]; pairs (x[2i], x[2i+1]).
                    for i in 0..half {
                        let (c, s) = (row[2 * i], row[2 * i + 1]);
                        let x0 = head[2 * i];
                        let x1 = head[2 * i + 1];
                        head[2 * i] = x0.mul_add(c, -(x1 * s));
                        head[2 * i + 1] = x0.mul_add(s, x1 * c);
                    }
                }
                RopeMode::Neox => {
                    // Row layout [cos0..cos_{half-1}, sin0..sin_{half-1}]; pairs (x[i], x[i+half]).
                    for i in 0..half {
                        let (c, s) = (row[i], row[half + i]);
                        let x0 = head[i];
                        let x1 = head[i + half];
                        head[i] = x0.mul_add(c, -(x1 * s));
                        head[i + half] = x0.mul_add(s, x1 * c);
                    }
                }
            }
        }
    }
}
