//! 4-bit lookup-table formats: a block scale times one of 16 fixed int8 codebook values.
//!
//! - IQ4_NL (ggml, `block_iq4_nl` of `ggml-common.h`): 32 weights per block, f16 `d` then 16
//!   bytes; byte `j` holds element `j` in its low nibble and element `j + 16` in its high
//!   nibble; value = `d * KVALUES_IQ4NL[index]`. Quantization is ggml's `quantize_iq4_nl`
//!   without an importance matrix (`quantize_row_iq4_nl_impl` with 7 scale tries, error
//!   weighted by x²), which is what `llama-quantize` writes; ggml's `quantize_row_iq4_nl_ref`
//!   is a cruder single-try variant.
//! - NF4 (tinyrt's own; no GGUF type id): 64 weights per block, f16 `d` (= absmax / 127) then
//!   32 bytes; byte `j` holds element `j` in its low nibble and element `j + 32` in its high
//!   nibble (IQ4_NL's order, stretched to 64); value = `d * KVALUES_NF4[index]`. The codebook is
//!   the 16 NormalFloat-4 values of QLoRA (Dettmers et al. 2023, as in bitsandbytes) times 127,
//!   rounded to int8, so the block's largest magnitude maps to ±127 exactly and the dot product
//!   against Q8_0 activations is integer. Quantization picks the nearest codebook entry of
//!   `x / d` where `d` is the stored (f16-rounded) scale, so the choice is made against the
//!   values dequantization will actually produce.

// Index loops mirror ggml's element layout formulas, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use super::{f16_to_f32, f32_to_f16, BlockQ8_0, GROUP_MAX_EPS, QK8_0};
use bytemuck::{Pod, Zeroable};

pub const QK4_NL: usize = 32;
pub const QK_NF4: usize = 64;

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// NormalFloat-4 (QLoRA): -1, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0,
/// 0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1, each times 127 and rounded.
pub const KVALUES_NF4: [i8; 16] = [
    -127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockIQ4NL {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockNF4 {
    /// Scale, f16 bits (absmax / 127).
    pub d: u16,
    pub qs: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockNF4>() == 34);

/// ggml's `best_index_int8`: the index of the table entry nearest to `x` (the upper one on
/// ties), for an ascending table.
#[inline]
fn best_index_int8(values: &[i8; 16], x: f32) -> u8 {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < values[mid] as f32 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - (values[hi - 1] as f32) < values[hi] as f32 - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

fn check_row(n_blocks: usize, qk: usize, n_values: usize) {
    assert_eq!(
        n_blocks * qk,
        n_values,
        "row length must be the block count times {qk}"
    );
}

// ---------------------------------------------------------------- IQ4_NL

pub fn dequantize_row_iq4_nl(x: &[BlockIQ4NL], y: &mut [f32]) {
    check_row(x.len(), QK4_NL, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_NL)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

/// Weighted least-squares fit of the block scale for the given codebook indices' values:
/// returns (Σ w·q·x, Σ w·q²) for the indices `x * id` maps to.
#[inline]
fn iq4nl_sums(x: &[f32], w: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (&v, &w) in x.iter().zip(w) {
        let q = KVALUES_IQ4NL[best_index_int8(&KVALUES_IQ4NL, id * v) as usize] as f32;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

fn quantize_block_iq4_nl(x: &[f32], b: &mut BlockIQ4NL) {
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let mut weight = [0f32; QK4_NL];
    for (w, &v) in weight.iter_mut().zip(x) {
        *w = v * v;
    }
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let scale = if amax < GROUP_MAX_EPS {
        0.0
    } else {
        let mut d = -max / values[0] as f32;
        let (sumqx, sumq2) = iq4nl_sums(x, &weight, 1.0 / d);
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            let id = (itry as f32 + values[0] as f32) / max;
            let (sumqx, sumq2) = iq4nl_sums(x, &weight, id);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        d
    };
    b.d = f32_to_f16(scale);
    // ggml picks the final indices against the f32 scale, not its f16 rounding.
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for j in 0..16 {
        let l0 = best_index_int8(values, id * x[j]);
        let l1 = best_index_int8(values, id * x[j + 16]);
        b.qs[j] = l0 | (l1 << 4);
    }
}

pub fn quantize_row_iq4_nl(x: &[f32], y: &mut [BlockIQ4NL]) {
    check_row(y.len(), QK4_NL, x.len());
    for (x, b) in x.chunks_exact(QK4_NL).zip(y.iter_mut()) {
        quantize_block_iq4_nl(x, b);
    }
}

pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..16 {
            let q = bx.qs[j];
            sumi1 += by.qs[j] as i32 * KVALUES_IQ4NL[(q & 0xf) as usize] as i32;
            sumi2 += by.qs[j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
        }
        let d = f16_to_f32(bx.d) * f16_to_f32(by.d);
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

// ---------------------------------------------------------------- NF4

pub fn dequantize_row_nf4(x: &[BlockNF4], y: &mut [f32]) {
    check_row(x.len(), QK_NF4, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_NF4)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = d * KVALUES_NF4[(q & 0xf) as usize] as f32;
            y[j + 32] = d * KVALUES_NF4[(q >> 4) as usize] as f32;
        }
    }
}

pub fn quantize_row_nf4(x: &[f32], y: &mut [BlockNF4]) {
    check_row(y.len(), QK_NF4, x.len());
    for (x, b) in x.chunks_exact(QK_NF4).zip(y.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        b.d = f32_to_f16(amax / 127.0);
        let d = f16_to_f32(b.d);
        let id = if d != 0.0 && d.is_finite() {
            1.0 / d
        } else {
            0.0
        };
        for j in 0..32 {
            let l0 = best_index_int8(&KVALUES_NF4, id * x[j]);
            let l1 = best_index_int8(&KVALUES_NF4, id * x[j + 32]);
            b.qs[j] = l0 | (l1 << 4);
        }
    }
}

/// NF4 weights against Q8_0 activations: one NF4 block spans two Q8_0 blocks, each with its
/// own scale, so `y` has twice as many blocks as `x`.
pub fn vec_dot_nf4_q8_0(x: &[BlockNF4], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len() * QK_NF4, y.len() * QK8_0);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y.chunks_exact(2)) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..32 {
            let q = bx.qs[j];
            let (lo, hi) = (
                KVALUES_NF4[(q & 0xf) as usize] as i32,
                KVALUES_NF4[(q >> 4) as usize] as i32,
            );
            sumi0 += lo * by[0].qs[j] as i32;
            sumi1 += hi * by[1].qs[j] as i32;
        }
        let dx = f16_to_f32(bx.d);
        sumf += dx * f16_to_f32(by[0].d) * sumi0 as f32 + dx * f16_to_f32(by[1].d) * sumi1 as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_table_is_qlora_times_127() {
        let nf4 = [
            -1.0f64,
            -0.6961928009986877,
            -0.5250730514526367,
            -0.39491748809814453,
            -0.28444138169288635,
            -0.18477343022823334,
            -0.09105003625154495,
            0.0,
            0.07958029955625534,
            0.16093020141124725,
            0.24611230194568634,
            0.33791524171829224,
            0.44070982933044434,
            0.5626170039176941,
            0.7229568362236023,
            1.0,
        ];
        for (v, &k) in nf4.iter().zip(&KVALUES_NF4) {
            assert_eq!((v * 127.0).round() as i8, k);
        }
    }

    #[test]
    fn best_index_picks_nearest() {
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index_int8(&KVALUES_IQ4NL, v as f32) as usize, i);
        }
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, -1000.0), 0);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 1000.0), 15);
        assert_eq!(best_index_int8(&KVALUES_IQ4NL, 0.0), 8);
    }
}
