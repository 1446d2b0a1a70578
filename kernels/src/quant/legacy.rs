//! ggml's original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Layouts are `block_q*` of ggml's `ggml-common.h`; quantizers follow `quantize_row_*_ref` of
//! `ggml-quants.c` operation for operation (same f32 arithmetic, same truncating casts) so the
//! bytes equal `llama-quantize`'s; dot products follow ggml's scalar `ggml_vec_dot_*_generic`.
//!
//! In the 4- and 5-bit formats byte `j` of `qs` holds element `j` in its low nibble and element
//! `j + 16` in its high nibble; bit `j` of the little-endian `qh` word is element `j`'s fifth bit.

// Index loops mirror ggml's element layout formulas, which is what makes them checkable.
#![allow(clippy::needless_range_loop)]

use super::{f16_to_f32, f32_to_f16};
use bytemuck::{Pod, Zeroable};

pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;

/// 32 weights: `(nibble - 8) * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// 32 weights: `nibble * d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// 32 weights: `(5-bit value - 16) * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Fifth bits, a little-endian u32 (kept as bytes: the block is only 2-aligned).
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// 32 weights: `5-bit value * d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    /// Fifth bits, a little-endian u32.
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// 32 weights: `q * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 18 + 16);

/// 32 activations: `q * d`, plus `s = d * Σq` for the minimum term of Q4_1 / Q5_1 dots.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// `d * Σ qs`, f16 bits.
    pub s: u16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

fn check_row(n_blocks: usize, qk: usize, n_values: usize) {
    assert_eq!(
        n_blocks * qk,
        n_values,
        "row length must be the block count times {qk}"
    );
}

/// The value of largest magnitude (the first one on ties), as ggml's `amax`/`max` loops.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

// ---------------------------------------------------------------- Q4_0

pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    check_row(x.len(), QK4_0, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0xf) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    check_row(y.len(), QK4_0, x.len());
    for (x, b) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for j in 0..16 {
            // ggml: MIN(15, (int8_t)(x*id + 8.5f)), a truncating cast.
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = bx.qs[j];
            sumi += ((q & 0xf) as i32 - 8) * by.qs[j] as i32;
            sumi += ((q >> 4) as i32 - 8) * by.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * f16_to_f32(bx.d) * f16_to_f32(by.d);
    }
    sumf
}

// ---------------------------------------------------------------- Q4_1

pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    check_row(x.len(), QK4_1, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0xf) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

pub fn quantize_row_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    check_row(y.len(), QK4_1, x.len());
    for (x, b) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let q = bx.qs[j];
            sumi += (q & 0xf) as i32 * by.qs[j] as i32;
            sumi += (q >> 4) as i32 * by.qs[j + 16] as i32;
        }
        sumf += (f16_to_f32(bx.d) * f16_to_f32(by.d)) * sumi as f32
            + f16_to_f32(bx.m) * f16_to_f32(by.s);
    }
    sumf
}

// ---------------------------------------------------------------- Q5_0

pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    check_row(x.len(), QK5_0, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = f16_to_f32(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = (((q & 0xf) as u32 | h0) as i32 - 16) as f32 * d;
            y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

pub fn quantize_row_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    check_row(y.len(), QK5_0, x.len());
    for (x, b) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// The 32 five-bit values of a Q5_0 / Q5_1 block in element order (0..=31).
#[inline]
pub fn unpack_5bit(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut out = [0u8; 32];
    let (lo, hi) = out.split_at_mut(16);
    for (j, ((lo, hi), &q)) in lo.iter_mut().zip(hi).zip(qs).enumerate() {
        *lo = (q & 0xf) | ((((qh >> j) & 1) as u8) << 4);
        *hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    out
}

pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack_5bit(bx.qh, &bx.qs);
        let sumi: i32 = q
            .iter()
            .zip(&by.qs)
            .map(|(&q, &a)| (q as i32 - 16) * a as i32)
            .sum();
        sumf += (f16_to_f32(bx.d) * f16_to_f32(by.d)) * sumi as f32;
    }
    sumf
}

// ---------------------------------------------------------------- Q5_1

pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    check_row(x.len(), QK5_1, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            y[j] = ((q & 0xf) as u32 | h0) as f32 * d + m;
            y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

pub fn quantize_row_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    check_row(y.len(), QK5_1, x.len());
    for (x, b) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let mut qh = 0u32;
        for j in 0..16 {
            // ggml: (uint8_t)(x + 0.5f), no clamp (the value cannot exceed 31.5).
            let q0 = ((x[j] - min) * id + 0.5) as u8;
            let q1 = ((x[j + 16] - min) * id + 0.5) as u8;
            b.qs[j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
            qh |= ((q0 as u32 & 0x10) >> 4) << j;
            qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
        }
        b.qh = qh.to_le_bytes();
    }
}

pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack_5bit(bx.qh, &bx.qs);
        let sumi: i32 = q
            .iter()
            .zip(&by.qs)
            .map(|(&q, &a)| q as i32 * a as i32)
            .sum();
        sumf += (f16_to_f32(bx.d) * f16_to_f32(by.d)) * sumi as f32
            + f16_to_f32(bx.m) * f16_to_f32(by.s);
    }
    sumf
}

// ---------------------------------------------------------------- Q8_0

pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    check_row(x.len(), QK8_0, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Also the activation quantizer of Q4_0 / Q5_0 / Q8_0 / IQ4_NL / NF4 dot products.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    check_row(y.len(), QK8_0, x.len());
    for (x, b) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi: i32 = bx
            .qs
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf += sumi as f32 * (f16_to_f32(bx.d) * f16_to_f32(by.d));
    }
    sumf
}

// ---------------------------------------------------------------- Q8_1

pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    check_row(x.len(), QK8_1, y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = f16_to_f32(b.d);
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// The activation quantizer of Q4_1 / Q5_1 dot products.
pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    check_row(y.len(), QK8_1, x.len());
    for (x, b) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.s = f32_to_f16(sum as f32 * d);
    }
}

weight_format!(
    Q4_0,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q4_0),
    BlockQ4_0,
    dequantize_row_q4_0,
    quantize_row_q4_0,
    Q8_0,
    vec_dot_q4_0_q8_0
);
weight_format!(
    Q4_1,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q4_1),
    BlockQ4_1,
    dequantize_row_q4_1,
    quantize_row_q4_1,
    Q8_1,
    vec_dot_q4_1_q8_1
);
weight_format!(
    Q5_0,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q5_0),
    BlockQ5_0,
    dequantize_row_q5_0,
    quantize_row_q5_0,
    Q8_0,
    vec_dot_q5_0_q8_0
);
weight_format!(
    Q5_1,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q5_1),
    BlockQ5_1,
    dequantize_row_q5_1,
    quantize_row_q5_1,
    Q8_1,
    vec_dot_q5_1_q8_1
);
weight_format!(
    Q8_0,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q8_0),
    BlockQ8_0,
    dequantize_row_q8_0,
    quantize_row_q8_0,
    Q8_0,
    vec_dot_q8_0_q8_0
);
block_format!(
    Q8_1,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q8_1),
    BlockQ8_1,
    dequantize_row_q8_1,
    quantize_row_q8_1
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_known_block() {
        // max = -4 → d = 0.5, values -4..3.5 map to nibbles 0..15.
        let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32 * 0.5 - 4.0).collect();
        let mut b = [BlockQ4_0::zeroed()];
        quantize_row_q4_0(&x, &mut b);
        assert_eq!(f16_to_f32(b[0].d), 0.5);
        let mut y = [0f32; 32];
        dequantize_row_q4_0(&b, &mut y);
        assert_eq!(&y[..], &x[..]);
    }

    #[test]
    fn q8_1_sum_is_scaled_sum() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let mut b = [BlockQ8_1::zeroed()];
        quantize_row_q8_1(&x, &mut b);
        let sum: i32 = b[0].qs.iter().map(|&q| q as i32).sum();
        // ggml scales the sum by the f32 scale, before its rounding to f16.
        assert_eq!(b[0].s, f32_to_f16(sum as f32 * (21.0 / 127.0)));
    }
}
