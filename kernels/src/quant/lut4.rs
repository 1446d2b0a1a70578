//! 4-bit lookup-table formats: a block scale times one of 16 fixed int8 codebook values.
//!
//! - IQ4_NL (ggml, `block_iq4_nl` of `ggml-common.h`): 32 weights per block, f16 `d` then 16
//!   bytes; byte `j` holds element `j` in its low nibble and element `j + 16` in its high
//!   nibble; value = `d * KVALUES_IQ4NL[index]`. Quantization is ggml's `quantize_iq4_nl`
//!   without an importance matrix (`quantize_row_iq4_nl_impl` with 7 scale tries, error
//!   weighted by x²), which is what `llama-quantize` writes; ggml's `quantize_row_iq4_nl_ref`
//!   is a cruder single-try variant.
//! - NF4 (tinyrt's own; no GGUF type id): IQ4_NL's block layout with another codebook:
//!   32 weights per block, f16 `d` then 16 bytes, byte `j` holding element `j` in its low
//!   nibble and element `j + 16` in its high nibble; value = `d * KVALUES_NF4[index]`. The
//!   codebook is the 16 NormalFloat-4 values of QLoRA (Dettmers et al. 2023, as in
//!   bitsandbytes) times 127, rounded to int8, so the dot product against Q8_0 activations is
//!   integer and the SIMD kernels are IQ4_NL's with another table. bitsandbytes uses blocks of
//!   64 with the absmax as scale; tinyrt uses blocks of 32 (4.5 bits per weight instead of
//!   4.25) and a scale search, which measure far better (below).
//!
//!   Quantization: each block's scale minimises the weighted squared error Σ w·(x − d·q)²
//!   with weights σ + |x| (σ the block's RMS; ggml's weights for its K-quants without an
//!   importance matrix), exactly, over every `d` whose `1/d` puts the block's largest magnitude
//!   between levels 64 and 160 of the ±127 table, for both signs of `d` (NF4 has 8 positive
//!   levels and 7 negative ones, so d < 0 is another grid); see `nf4_best_positive_scale`.
//!   The final indices are the nearest levels of `x / d` for the stored (f16-rounded) `d`, the
//!   values dequantization will produce.
//!
//!   Measurements (SmolLM2-135M-Instruct Q4_1 requantized at load, output head kept as stored;
//!   `tinyrt perplexity -f tests/golden/perplexity.gpl3.txt -c 256 --requant nf4`, 29 chunks;
//!   Q4_1 as stored 20.84, so the 15% is 23.98; variants that change only near-tie
//!   roundings differ by ~0.1):
//!
//!   | NF4 quantizer | PPL | / Q4_1 |
//!   | --- | ---: | ---: |
//!   | blocks of 64, absmax scale (bitsandbytes) | 29.17 | 1.40 |
//!   | 32, ggml IQ4_NL-style grid search (15 scales per sign), weights x² | 26.05 | 1.25 |
//!   | 32, same grid search, weights σ² + x² | 25.63-25.72 | 1.23 |
//!   | 32, same grid search, 2σ² + x² | 26.14 | 1.25 |
//!   | 32, same grid search, σ² + x² times γ² of the preceding RMSNorm (q/k/v, gate/up) | 26.75 | 1.28 |
//!   | 32, same, times γ | 26.47 | 1.27 |
//!   | 32, same, sqrt(σ² + x²) times γ² (ggml's imatrix form, γ² as the imatrix) | 26.02 | 1.25 |
//!   | 32, exact search, window 100..150, σ² + x² | 26.11 | 1.25 |
//!   | 32, exact search, window 64..160, weights 1 | 24.98 | 1.20 |
//!   | 32, exact search, 64..160, x² | 24.78 | 1.19 |
//!   | 32, exact search, 64..160, sqrt(σ² + x²) | 24.32 | 1.17 |
//!   | 32, exact search, 64..160, 0.5σ² + x² / σ² + x² / 4σ² + x² | 24.50 / 24.24 / 24.24 | 1.18 / 1.16 / 1.16 |
//!   | 32, exact search, 64..160, 2σ² + x² | 23.77 | 1.14 |
//!   | 32, exact search, 32..254, σ² + x² | 24.25 | 1.16 |
//!   | 32, exact search, 32..254, σ + \|x\| | 23.99 | 1.15 |
//!   | 32, exact search, 64..160, σ + \|x\| times γ² | 23.99 | 1.15 |
//!   | 32, exact search, 64..160, σ + \|x\| times 1/γ² (γ floored at 5% of its mean) | 26.35 | 1.26 |
//!   | 32, exact search, 64..160, σ + \|x\| times the column's mean square in the matrix | 24.43 | 1.17 |
//!   | 32, exact search, 64..160, σ + \|x\| times 1 / that mean square | 24.76 | 1.19 |
//!   | **32, exact search, 64..160, σ + \|x\| (this one)** | **23.89-23.95** | **1.15** |
//!
//!   No data-free per-column importance helped: γ² (the RMSNorm weight, as if the normalised
//!   residual were white), its inverse, and the matrix's own column norms (either way) all
//!   measure worse than weighting every column alike. For reference, llama.cpp's own
//!   requantization of the same Q4_1 file (`llama-quantize --allow-requantize --pure
//!   --token-embedding-type q8_0`, then `llama-perplexity -c 256`): IQ4_NL 24.48 (1.17), Q4_0
//!   26.14 (1.25), Q4_1 as stored 20.86. On a held-out text (GFDL-1.3 then Apache-2.0, 28
//!   chunks of 256; Q4_1 17.63): this NF4 21.17 (1.20), the grid search before it 22.90 (1.30),
//!   llama.cpp IQ4_NL 21.03 (1.19), Q4_0 22.09 (1.25). The source is Q4_1, whose asymmetric
//!   16-level grid no symmetric 4-bit grid contains, so every such format rounds twice.

// Index loops mirror ggml's element layout formulas, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use super::{f16_to_f32, f32_to_f16, BlockQ8_0, GROUP_MAX_EPS};
use bytemuck::{Pod, Zeroable};

pub const QK4_NL: usize = 32;
pub const QK_NF4: usize = 32;

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
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockNF4>() == 18);

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
            y[j + 16] = d * KVALUES_NF4[(q >> 4) as usize] as f32;
        }
    }
}

/// `best_index_int8(&KVALUES_NF4, x)` for every `floor(2x)` in -256..256: the midpoints of
/// an integer table are multiples of 1/2, so `floor(2x)` decides which side of each midpoint
/// `x` lies on (x ≥ m exactly when floor(2x) ≥ 2m, ties going up as in `best_index_int8`).
/// A table lookup instead of a binary search makes the scale search ~5× faster.
const NF4_INDEX_BY_HALF: [u8; 512] = {
    let mut lut = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        let twice_x = i as i32 - 256;
        let mut n = 0u8;
        let mut k = 0;
        while k < 15 {
            // 2m for the midpoint between levels k and k + 1.
            if twice_x >= KVALUES_NF4[k] as i32 + KVALUES_NF4[k + 1] as i32 {
                n += 1;
            }
            k += 1;
        }
        lut[i] = n;
        i += 1;
    }
    lut
};

/// The index of the NF4 level nearest to `x` (= `best_index_int8(&KVALUES_NF4, x)`).
#[inline]
fn nf4_index(x: f32) -> u8 {
    // floor(2x) by truncation and a correction (`f32::floor` is a libm call without SSE4.1);
    // out-of-range values saturate to the table's ends, as in the binary search.
    let t = (2.0 * x).clamp(-256.0, 255.0);
    let i = t as i32;
    let floor = if (i as f32) > t { i - 1 } else { i };
    NF4_INDEX_BY_HALF[(floor + 256) as usize]
}

/// The window of `1/d` the NF4 scale search covers, in units of `1 / amax`: the block's
/// largest magnitude lands between level 64 and level 160 of the ±127 table (beyond 127 it is
/// clipped to the end level). Measured on SmolLM2 Q4_1 → NF4 (module comment): 64..160 gave
/// 23.89-23.95, 32..254 23.99; with weights σ² + x², 100..150 gave 26.11 and 64..160 24.24.
const NF4_SEARCH_LO: f32 = 64.0;
const NF4_SEARCH_HI: f32 = 160.0;

/// The best positive scale for `y` with `1/d` in `[t_lo, t_hi]`: over every scale in that
/// range, the nearest-level indices refitted by weighted least squares, minimising
/// Σ w·(y − d·q)² = Σ w·y² − (Σ w·q·y)² / Σ w·q². Returns (Σ w·q·y, Σ w·q²) of the best
/// assignment (d = their ratio), or (0, 0) when no assignment has Σ w·q·y > 0.
///
/// The nearest level of `t·y_j` changes only where `t·y_j` crosses the midpoint of two
/// levels, and as `t` grows each value moves one level outward at a time. So sorting those
/// crossings and sweeping them visits every assignment the window can produce, each updated
/// in O(1): an exact search, where a grid of trial scales can step over the best one.
fn nf4_best_positive_scale(y: &[f32], w: &[f32], t_lo: f32, t_hi: f32) -> (f32, f32) {
    // At most 8 crossings per value (index 7, the zero level, out to 15).
    let mut events = [(0.0f32, 0u8); QK_NF4 * 8];
    let mut n = 0;
    let mut idx = [0u8; QK_NF4];
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (j, (&v, &w)) in y.iter().zip(w).enumerate() {
        let k = nf4_index(t_lo * v) as usize;
        idx[j] = k as u8;
        let q = KVALUES_NF4[k] as f32;
        sumqx += w * q * v;
        sumq2 += w * q * q;
        // The midpoints `t·v` crosses next, outward from level k, while t ≤ t_hi.
        let mid = |a: usize, b: usize| 0.5 * (KVALUES_NF4[a] as f32 + KVALUES_NF4[b] as f32);
        let inv_v = 1.0 / v;
        let mut l = k;
        if v > 0.0 {
            while l < 15 && mid(l, l + 1) * inv_v <= t_hi {
                events[n] = (mid(l, l + 1) * inv_v, j as u8);
                n += 1;
                l += 1;
            }
        } else if v < 0.0 {
            while l > 0 && mid(l, l - 1) * inv_v <= t_hi {
                events[n] = (mid(l, l - 1) * inv_v, j as u8);
                n += 1;
                l -= 1;
            }
        }
    }
    let events = &mut events[..n];
    events.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = (0.0f32, 0.0f32);
    let mut best_gain = 0.0f32;
    let mut consider = |sumqx: f32, sumq2: f32| {
        if sumqx > 0.0 && sumq2 > 0.0 && sumqx * sumqx / sumq2 > best_gain {
            best_gain = sumqx * sumqx / sumq2;
            best = (sumqx, sumq2);
        }
    };
    consider(sumqx, sumq2);
    for &(_, j) in events.iter() {
        let (j, v) = (j as usize, y[j as usize]);
        let old = KVALUES_NF4[idx[j] as usize] as f32;
        idx[j] = if v > 0.0 { idx[j] + 1 } else { idx[j] - 1 };
        let q = KVALUES_NF4[idx[j] as usize] as f32;
        sumqx += w[j] * (q - old) * v;
        sumq2 += w[j] * (q * q - old * old);
        consider(sumqx, sumq2);
    }
    best
}

/// The error weights of the NF4 scale search: σ + |x| (σ the block's RMS), ggml's weights for
/// its K-quants without an importance matrix (`quantize_row_q4_K_impl`).
fn nf4_error_weights(x: &[f32]) -> [f32; QK_NF4] {
    let sigma = (x.iter().map(|v| v * v).sum::<f32>() / QK_NF4 as f32).sqrt();
    std::array::from_fn(|j| sigma + x[j].abs())
}

/// The block scale minimising the weighted squared error (see the module comment), over both
/// signs of the scale.
fn nf4_block_scale(x: &[f32]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax < GROUP_MAX_EPS || !amax.is_finite() {
        return 0.0;
    }
    let weight = nf4_error_weights(x);
    let (t_lo, t_hi) = (NF4_SEARCH_LO / amax, NF4_SEARCH_HI / amax);
    let (qx_pos, q2_pos) = nf4_best_positive_scale(x, &weight, t_lo, t_hi);
    // NF4 has 8 positive levels and 7 negative ones, so d < 0 is another grid: the best
    // positive scale for -x.
    let neg: [f32; QK_NF4] = std::array::from_fn(|j| -x[j]);
    let (qx_neg, q2_neg) = nf4_best_positive_scale(&neg, &weight, t_lo, t_hi);
    let gain = |qx: f32, q2: f32| if q2 > 0.0 { qx * qx / q2 } else { 0.0 };
    if gain(qx_neg, q2_neg) > gain(qx_pos, q2_pos) {
        -qx_neg / q2_neg
    } else if q2_pos > 0.0 {
        qx_pos / q2_pos
    } else {
        0.0
    }
}

pub fn quantize_row_nf4(x: &[f32], y: &mut [BlockNF4]) {
    check_row(y.len(), QK_NF4, x.len());
    for (x, b) in x.chunks_exact(QK_NF4).zip(y.iter_mut()) {
        b.d = f32_to_f16(nf4_block_scale(x));
        let d = f16_to_f32(b.d);
        let id = if d != 0.0 && d.is_finite() {
            1.0 / d
        } else {
            0.0
        };
        for j in 0..16 {
            let l0 = nf4_index(id * x[j]);
            let l1 = nf4_index(id * x[j + 16]);
            b.qs[j] = l0 | (l1 << 4);
        }
    }
}

/// NF4 weights against Q8_0 activations (the same block size).
pub fn vec_dot_nf4_q8_0(x: &[BlockNF4], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..16 {
            let q = bx.qs[j];
            sumi1 += by.qs[j] as i32 * KVALUES_NF4[(q & 0xf) as usize] as i32;
            sumi2 += by.qs[j + 16] as i32 * KVALUES_NF4[(q >> 4) as usize] as i32;
        }
        let d = f16_to_f32(bx.d) * f16_to_f32(by.d);
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

weight_format!(
    IQ4_NL,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::IQ4_NL),
    BlockIQ4NL,
    dequantize_row_iq4_nl,
    quantize_row_iq4_nl,
    super::legacy::Q8_0,
    vec_dot_iq4_nl_q8_0
);
weight_format!(
    NF4,
    crate::quant::QuantFormat::Nf4,
    BlockNF4,
    dequantize_row_nf4,
    quantize_row_nf4,
    super::legacy::Q8_0,
    vec_dot_nf4_q8_0
);

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

    /// Heavy-tailed blocks, as weight rows are: a few large values among small ones.
    fn heavy_tailed_blocks(n: usize) -> Vec<Vec<f32>> {
        let mut rng = crate::rng::SplitMix64::new(0x2545_f491_4f6c_dd1d);
        let mut next = || 0.5 * rng.unit_f32();
        (0..n)
            .map(|round| {
                (0..QK_NF4)
                    .map(|i| {
                        if (i + round) % 13 == 0 {
                            6.0 * next()
                        } else {
                            next()
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The weighted squared error the search minimises (weights σ + |x|) for the scale `d`
    /// and nearest levels by the binary search.
    fn weighted_error(x: &[f32], d: f32) -> f64 {
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let sigma = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
        x.iter()
            .map(|&v| {
                let q = KVALUES_NF4[best_index_int8(&KVALUES_NF4, id * v) as usize] as f32;
                let e = (v - d * q) as f64;
                (sigma + v.abs()) as f64 * e * e
            })
            .sum()
    }

    /// The scale search never does worse, in the weighted error it minimises, than the
    /// plain absmax / 127 scale (bitsandbytes' choice), and helps on most blocks.
    #[test]
    fn nf4_scale_search_beats_absmax() {
        let mut gained = 0;
        for x in heavy_tailed_blocks(500) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let e_search = weighted_error(&x, nf4_block_scale(&x));
            let e_absmax = weighted_error(&x, amax / 127.0);
            assert!(
                e_search <= e_absmax * (1.0 + 1e-4),
                "{e_search} > {e_absmax}"
            );
            if e_search < e_absmax * 0.99 {
                gained += 1;
            }
        }
        assert!(
            gained > 250,
            "the search helped only {gained} of 500 blocks"
        );
    }

    /// The sweep over level crossings is exact: no scale of a dense scan over the same window
    /// (both signs, each with its nearest levels refitted by weighted least squares) beats it.
    #[test]
    fn nf4_scale_search_is_exact_over_its_window() {
        let mut strictly_better = 0;
        for x in heavy_tailed_blocks(200) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let sigma = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
            let mut e_scan = f64::INFINITY;
            for sign in [1.0f32, -1.0] {
                for i in 0..=4000 {
                    let t = (NF4_SEARCH_LO + (NF4_SEARCH_HI - NF4_SEARCH_LO) * i as f32 / 4000.0)
                        / amax;
                    let (mut sumqx, mut sumq2) = (0.0f64, 0.0f64);
                    for &v in &x {
                        let w = (sigma + v.abs()) as f64;
                        let q = KVALUES_NF4[best_index_int8(&KVALUES_NF4, sign * t * v) as usize]
                            as f64;
                        sumqx += w * q * v as f64;
                        sumq2 += w * q * q;
                    }
                    if sumq2 > 0.0 {
                        e_scan = e_scan.min(weighted_error(&x, (sumqx / sumq2) as f32));
                    }
                }
            }
            let e_search = weighted_error(&x, nf4_block_scale(&x));
            assert!(
                e_search <= e_scan * (1.0 + 1e-4),
                "search {e_search} > scan {e_scan}"
            );
            if e_search < e_scan * (1.0 - 1e-4) {
                strictly_better += 1;
            }
        }
        eprintln!("the sweep beat a 4001-scale scan on {strictly_better} of 200 blocks");
    }

    /// Degenerate blocks: all zero gives a zero scale; a single value, of either sign, is
    /// reproduced exactly (any nonzero level can hold it).
    #[test]
    fn nf4_scale_of_degenerate_blocks() {
        assert_eq!(nf4_block_scale(&[0.0; QK_NF4]), 0.0);
        for v in [0.75f32, -0.75] {
            let mut x = [0.0f32; QK_NF4];
            x[5] = v;
            let d = nf4_block_scale(&x);
            assert!(weighted_error(&x, d) < 1e-12, "v {v} d {d}");
        }
    }

    #[test]
    fn nf4_index_is_the_binary_search() {
        let mut xs: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.25).collect();
        // Every midpoint exactly, and just either side of it.
        for k in 0..15 {
            let m = (KVALUES_NF4[k] as f32 + KVALUES_NF4[k + 1] as f32) * 0.5;
            xs.extend([m, m.next_down(), m.next_up()]);
        }
        let mut rng = crate::rng::SplitMix64::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            xs.push(rng.unit_f32() * 150.0);
        }
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, -0.0]);
        for x in xs {
            assert_eq!(nf4_index(x), best_index_int8(&KVALUES_NF4, x), "x = {x}");
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
