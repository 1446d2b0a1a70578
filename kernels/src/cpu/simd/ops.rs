//! Norms, RoPE and activations of AVX2 and AVX-512, written once over [`F32Vec`]; see
//! `cpu/scalar/ops/` for the numerics. Tails shorter than a vector use the ISA's masked loads
//! and stores.

use super::F32Vec;
use crate::cpu::rope::{RopeCache, RopeMode};
use crate::cpu::scalar::ops::{GELU_ERFC_LARGE, GELU_ERFC_P, GELU_ERF_CUTOFF, GELU_ERF_SMALL};

#[inline(always)]
pub(crate) fn rms_norm_inplace<V: F32Vec>(v: V, x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        // Zeroed tail lanes add 0.
        let sum = v.sum_f64(xr, |a| v.mul(a, a));
        let mean = (sum / n as f64) as f32;
        let scale = v.splat(1.0 / (mean + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr` and `weight`.
            unsafe {
                let a = v.mul(v.load(xr, i), scale);
                v.store(xr, i, v.mul(a, v.load(weight, i)));
            }
            i += V::LANES;
        }
    }
}

/// # Safety
/// `bias`, if any, is as long as `weight`.
#[inline(always)]
pub(crate) unsafe fn layer_norm_inplace<V: F32Vec>(
    v: V,
    x: &mut [f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum = v.sum_f64(xr, |a| a);
        let mean = sum as f32 / n as f32;
        let vmean = v.splat(mean);
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n`.
            unsafe { v.store(xr, i, v.sub(v.load(xr, i), vmean)) };
            i += V::LANES;
        }
        // Tail lanes load as 0 and add 0.
        let var = v.sum_f64(xr, |d| v.mul(d, d));
        let variance = (var / n as f64) as f32;
        let scale = v.splat(1.0 / (variance + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr`, `weight` and (the caller's contract) `bias`.
            unsafe {
                let mut a = v.mul(v.mul(v.load(xr, i), scale), v.load(weight, i));
                if let Some(b) = bias {
                    a = v.add(a, v.load(b, i));
                }
                v.store(xr, i, a);
            }
            i += V::LANES;
        }
    }
}

#[inline(always)]
pub(crate) fn rope<V: F32Vec>(
    v: V,
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
                            let a = v.load(head, i);
                            let cs = v.load(row, i);
                            // ggml: even lanes fma(x0, cos, -(x1 sin)), odd lanes
                            // fma(x0, sin, x1 cos) (see `scalar::rope`).
                            let x0 = v.dup_even(a);
                            let x1 = v.dup_odd(a);
                            let sc = v.swap_pairs(cs);
                            v.store(head, i, v.fmaddsub(x0, cs, v.mul(x1, sc)));
                        }
                        i += V::LANES;
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
                            let x0 = v.load(lo, i);
                            let x1 = v.load(hi, i);
                            let c = v.load(cos, i);
                            let s = v.load(sin, i);
                            v.store(lo, i, v.fmsub(x0, c, v.mul(x1, s)));
                            v.store(hi, i, v.fmadd(x0, s, v.mul(x1, c)));
                        }
                        i += V::LANES;
                    }
                }
            }
        }
    }
}

/// x / (1 + e^-x), ggml's `ggml_v_silu`.
#[inline(always)]
pub(crate) fn silu<V: F32Vec>(v: V, x: V::Reg) -> V::Reg {
    let e = v.exp_ggml(v.sub(v.zero(), x));
    v.div(x, v.add(v.splat(1.0), e))
}

/// `scalar::gelu_erf`, bit for bit: both branches for every lane, then a select.
#[inline(always)]
pub(crate) fn gelu_erf<V: F32Vec>(v: V, x: V::Reg) -> V::Reg {
    let horner = |c: &[f32], u: V::Reg| {
        let (last, rest) = c.split_last().expect("coefficients");
        rest.iter()
            .rev()
            .fold(v.splat(*last), |p, &c| v.fmadd(p, u, v.splat(c)))
    };
    let h = v.mul(v.splat(0.5), x);
    let ax = v.abs(x);
    let u = v.mul(x, x);
    let small = v.fmadd(h, v.mul(x, horner(&GELU_ERF_SMALL, u)), h);
    let one = v.splat(1.0);
    let t = v.div(one, v.fmadd(v.splat(GELU_ERFC_P), ax, one));
    let q = horner(&GELU_ERFC_LARGE, t);
    let ds = v.fmsub(x, x, u);
    let e = v.exp_ggml(v.mul(v.splat(-0.5), u));
    let e = v.fmadd(e, v.mul(v.splat(-0.5), ds), e);
    // `max` gives its second operand where x is NaN: 0, as Rust's `f32::max`.
    let pos = v.max(x, v.zero());
    let large = v.fmadd(v.sub(v.zero(), v.abs(h)), v.mul(e, q), pos);
    let cutoff = v.splat(GELU_ERF_CUTOFF);
    // NaN is not below either bound and stays NaN (x itself) beyond the cutoff.
    let far = v.select_lt(v.zero(), x, x, v.select_lt(x, v.zero(), v.zero(), x));
    let r = v.select_lt(ax, cutoff, large, far);
    v.select_lt(ax, one, small, r)
}

/// Applies `f` to every chunk of `x` in place.
#[inline(always)]
pub(crate) fn map_inplace<V: F32Vec>(v: V, x: &mut [f32], f: impl Fn(V::Reg) -> V::Reg) {
    let mut i = 0;
    while i < x.len() {
        // SAFETY: `i < x.len()`.
        unsafe {
            let a = v.load(x, i);
            v.store(x, i, f(a));
        }
        i += V::LANES;
    }
}

/// `gate = f(gate) * up` per chunk.
#[inline(always)]
pub(crate) fn map_gated<V: F32Vec>(
    v: V,
    gate: &mut [f32],
    up: &[f32],
    f: impl Fn(V::Reg) -> V::Reg,
) {
    let n = gate.len().min(up.len());
    let gate = &mut gate[..n];
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` ≤ both slices' lengths.
        unsafe {
            let g = v.load(gate, i);
            let u = v.load(&up[..n], i);
            v.store(gate, i, v.mul(f(g), u));
        }
        i += V::LANES;
    }
}
