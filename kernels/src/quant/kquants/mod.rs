//! ggml's k-quants: 256-element super-blocks with 6- or 8-bit sub-block scales (Q2_K .. Q6_K)
//! and Q8_K, their activation format.
//!
//! Layouts are `block_q*_K` of ggml's `ggml-common.h`. Quantizers follow ggml-quants.c's
//! `quantize_row_q*_K_ref` (which `llama-quantize` runs when no importance matrix is given) with
//! its helpers `make_qx_quants`, `make_q3_quants` and `make_qkx2_quants`, operation for
//! operation. Dequantizers follow `dequantize_row_q*_K`; dot products compute the same integer
//! sums as ggml's scalar `ggml_vec_dot_q*_K_q8_K_generic`, one integer total per super-block
//! times its f32 scales.
//!
//! Function names keep ggml's capital `K` (`vec_dot_q4_K_q8_K`) so that they read as the format
//! names they are.
#![allow(non_snake_case)]
// Index loops mirror ggml's element layout formulas, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use super::{f16_to_f32, f32_to_f16, nearest_int, GROUP_MAX_EPS};
use bytemuck::{Pod, Zeroable};

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;

pub use self::q2_k::*;
pub use self::q3_k::*;
pub use self::q4_k::*;
pub use self::q5_k::*;
pub use self::q6_k::*;

/// Elements per k-quant super-block.
pub const QK_K: usize = 256;

/// 2-bit weights: `d * (scales[g] & 0xf) * q - dmin * (scales[g] >> 4)` for the group
/// `g = e / 16` of element `e`; `q = (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Per 16 elements: 4-bit scale (low nibble) and 4-bit min (high nibble).
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    /// Super-block scale of the scales, f16 bits.
    pub d: u16,
    /// Super-block scale of the mins, f16 bits.
    pub dmin: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// 3-bit weights: `d * (scale6[g] - 32) * (q2 - (hbit ? 0 : 4))`, with the low two bits `q2` as
/// in Q2_K and the high bit `hbit` in bit `e / 32` of `hmask[e % 32]`. The sixteen 6-bit scales
/// are packed in 12 bytes: low nibbles in bytes 0..8 (scale `g` in byte `g % 8`, high nibble for
/// `g >= 8`), the top two bits in bits `2 * (g / 4)` of byte `8 + g % 4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    /// f16 bits.
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// 4-bit weights with a 6-bit scale and min per 32 elements (packed as `get_scale_min_k4`):
/// `d * sc[s] * q - dmin * m[s]`, `s = e / 32`; element `e` is the low nibble of
/// `qs[32 * (e / 64) + e % 32]` when `e % 64 < 32`, else its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// f16 bits.
    pub d: u16,
    /// f16 bits.
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// Q4_K plus a fifth bit per element: bit `e / 32` of `qh[e % 32]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// f16 bits.
    pub d: u16,
    /// f16 bits.
    pub dmin: u16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// 6-bit weights: `d * scales[e / 16] * (q - 32)`; low nibbles in `ql`, top two bits in `qh`
/// (see [`dequantize_row_q6_K`] for the interleaving).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    /// f16 bits.
    pub d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// 8-bit activations with an f32 scale and the sums of each 16 quants (for the min terms).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

fn check_row(n_blocks: usize, n_values: usize) {
    assert_eq!(
        n_blocks * QK_K,
        n_values,
        "row length must be the block count times 256"
    );
}

// ---------------------------------------------------------------- shared helpers (ggml-quants.c)

/// The value of largest magnitude (first on ties) and its magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// ggml's `make_qx_quants` for `qw == NULL`: symmetric `nmax`-level quantization of `x` into
/// `l` (offset by `nmax`), returning the scale. `rmse_type` picks the error weights (1: x²).
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], rmse_type: i32) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let clamp = |v: i32| v.clamp(-nmax, nmax - 1);
    if rmse_type == 0 {
        for (li, &v) in l.iter_mut().zip(x) {
            *li = (nmax + clamp(nearest_int(iscale * v))) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 {
        (-rmse_type, true)
    } else {
        (rmse_type, false)
    };
    let weight = |v: f32| match rmse_type {
        1 => v * v,
        2 => 1.0,
        3 => v.abs(),
        _ => v.abs().sqrt(),
    };
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = clamp(nearest_int(iscale * v));
        *li = (q + nmax) as i8;
        let w = weight(v);
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = clamp(nearest_int(iscale * v));
            let w = weight(v);
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric quantization to `[-nmax, nmax)` refined
/// by coordinate descent on the x²-weighted error; `l` is offset by `nmax`.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let clamp = |v: i32| v.clamp(-nmax, nmax - 1);
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = clamp(nearest_int(iscale * v));
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *li as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = clamp(nearest_int(v * sl2 / slx));
                if new_l != *li as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's `make_qkx2_quants`: asymmetric `[0, nmax]` quantization `x ≈ scale * l - min`
/// minimising the weighted squared (or absolute, `use_mad`) error over `nstep + 1` candidate
/// scales. Returns `(scale, min)` with `min >= 0`; `laux` is scratch space.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of Q4_K / Q5_K.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins the way [`get_scale_min_k4`] reads them.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The sixteen 6-bit Q3_K scales, still offset by 32.
#[inline]
fn q3k_scales(s: &[u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (g, o) in out.iter_mut().enumerate() {
        let low = if g < 8 { s[g] & 0xf } else { s[g - 8] >> 4 };
        let high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

// 2-bit planes (Q2_K, Q3_K) and the integer sums of the scalar dot products.

/// The 256 two-bit fields of a Q2_K / Q3_K `qs` array in element order: element
/// `128 * h + 32 * i + l` is bits `2i..2i+2` of `qs[32 * h + l]`.
#[inline]
pub fn unpack_2bit(qs: &[u8; 64]) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (o, q) in out.chunks_exact_mut(128).zip(qs.chunks_exact(32)) {
        for (i, o) in o.chunks_exact_mut(32).enumerate() {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = (q >> (2 * i)) & 3;
            }
        }
    }
    out
}

#[inline]
fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

#[inline]
fn dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Packs 256 2-bit values as Q2_K / Q3_K `qs`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; 64]) {
    for n in 0..2 {
        for j in 0..32 {
            let e = 128 * n + j;
            qs[32 * n + j] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
}

// The Q4_K / Q5_K super-block form (`make_qkx2_quants` scales and mins).

/// `d * sc * q - dmin * m` per 32-element sub-block: shared by Q4_K and Q5_K.
#[inline]
fn dequantize_superblock_qkx(d: u16, dmin: u16, scales: &[u8; 12], q: &[u8; QK_K], y: &mut [f32]) {
    let (d, dmin) = (f16_to_f32(d), f16_to_f32(dmin));
    for (s, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(s, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        for (o, &q) in ys.iter_mut().zip(qs) {
            *o = d1 * q as f32 - m1;
        }
    }
}

/// The sub-block search shared by Q4_K (`nmax` 15) and Q5_K (`nmax` 31): scales and mins of
/// the eight 32-element sub-blocks, quantized to 6 bits, then `l` requantized against them.
fn quantize_superblock_qkx(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> (u16, u16, [u8; 12]) {
    let mut weights = [0f32; 32];
    let mut laux = [0u8; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = f16_to_f32(d) * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed)
}

/// Σ over sub-blocks of `m[s] * (bsums[2s] + bsums[2s+1])`: the min term of Q4_K / Q5_K dots.
#[inline]
fn kquant_min_sum(scales: &[u8; 12], bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|s| {
            let (_, m) = get_scale_min_k4(s, scales);
            m as i32 * (bsums[2 * s] as i32 + bsums[2 * s + 1] as i32)
        })
        .sum()
}

/// `d · Σ sc·(q·y) - dmin · Σ m·bsums` for one Q4_K / Q5_K super-block.
#[inline]
fn vec_dot_superblock_qkx(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    q: &[u8; QK_K],
    by: &BlockQ8K,
) -> f32 {
    let mut isum = 0i32;
    for (s, (qs, ys)) in q.chunks_exact(32).zip(by.qs.chunks_exact(32)).enumerate() {
        let (sc, _) = get_scale_min_k4(s, scales);
        isum += sc as i32 * dot_u8_i8(qs, ys);
    }
    let summs = kquant_min_sum(scales, &by.bsums);
    let d = f16_to_f32(d) * by.d;
    let dmin = f16_to_f32(dmin) * by.d;
    d * isum as f32 - dmin * summs as f32
}

// ---------------------------------------------------------------- Q8_K

pub fn dequantize_row_q8_K(x: &[BlockQ8K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = b.d * q as f32;
        }
    }
}

/// The activation quantizer of k-quant dot products (ggml's `quantize_row_q8_K_ref`):
/// `d = max / -127` for the value of largest magnitude, so that value maps to exactly -127.
pub fn quantize_row_q8_K(x: &[f32], y: &mut [BlockQ8K]) {
    check_row(y.len(), x.len());
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (max, amax) = signed_absmax(x);
        if amax == 0.0 {
            *b = BlockQ8K::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

block_format!(
    Q8_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q8_K),
    BlockQ8K,
    dequantize_row_q8_K,
    quantize_row_q8_K
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 5, 48, 62];
        let lm = [63, 0, 31, 2, 7, 60, 33, 16];
        let packed = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (ls[j], lm[j]));
        }
    }

    #[test]
    fn q8_k_block_sums() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 7919) % 255) as f32 - 127.0)
            .collect();
        let mut b = [BlockQ8K::zeroed()];
        quantize_row_q8_K(&x, &mut b);
        for g in 0..16 {
            let s: i32 = b[0].qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(s, b[0].bsums[g] as i32);
        }
    }
}
