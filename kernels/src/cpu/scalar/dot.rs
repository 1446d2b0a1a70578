//! Portable dot products and activation converters: the reference every SIMD path is tested
//! against, and the fallback on CPUs without AVX2.
//!
//! The quantized dot products delegate to the scalar references of [`crate::quant`] (the format
//! specification). The activation quantizers here reproduce what llama.cpp's CPU backend runs on
//! x86 (ggml-cpu/arch/x86/quants.c), which is what the golden outputs were produced with:
//! Q8_0/Q8_1 use `id = 127 / amax` and round half to even (`_mm256_round_ps`), Q8_K is
//! `quantize_row_q8_K_ref` (ggml-quants.c). The SIMD versions produce the same bytes.

use std::borrow::Cow;

use bytemuck::Pod;
use half::f16;

use crate::cpu::{dot_entry, QuantizeEntry, VecDotEntry};
use crate::quant::{self, GgmlType, QuantFormat};

/// The scalar kernel table: ggml's scalar references from [`crate::quant`].
pub(crate) const VEC_DOTS: &[VecDotEntry] = &[
    dot_entry(GgmlType::F32, GgmlType::F32, vec_dot_f32),
    dot_entry(GgmlType::F16, GgmlType::F32, vec_dot_f16_f32),
    dot_entry(GgmlType::BF16, GgmlType::F32, vec_dot_bf16_f32),
    dot_entry(GgmlType::Q4_0, GgmlType::Q8_0, vec_dot_q4_0_q8_0),
    dot_entry(GgmlType::Q4_1, GgmlType::Q8_1, vec_dot_q4_1_q8_1),
    dot_entry(GgmlType::Q5_0, GgmlType::Q8_0, vec_dot_q5_0_q8_0),
    dot_entry(GgmlType::Q5_1, GgmlType::Q8_1, vec_dot_q5_1_q8_1),
    dot_entry(GgmlType::Q8_0, GgmlType::Q8_0, vec_dot_q8_0_q8_0),
    dot_entry(GgmlType::Q2_K, GgmlType::Q8_K, vec_dot_q2_k_q8_k),
    dot_entry(GgmlType::Q3_K, GgmlType::Q8_K, vec_dot_q3_k_q8_k),
    dot_entry(GgmlType::Q4_K, GgmlType::Q8_K, vec_dot_q4_k_q8_k),
    dot_entry(GgmlType::Q5_K, GgmlType::Q8_K, vec_dot_q5_k_q8_k),
    dot_entry(GgmlType::Q6_K, GgmlType::Q8_K, vec_dot_q6_k_q8_k),
    dot_entry(GgmlType::IQ4_NL, GgmlType::Q8_0, vec_dot_iq4_nl_q8_0),
    VecDotEntry {
        weight: QuantFormat::Nf4,
        act: GgmlType::Q8_0,
        f: vec_dot_nf4_q8_0,
        f4: None,
    },
];

/// Views raw bytes as blocks, copying them out when they are not aligned for `B`.
fn blocks_of<B: Pod>(data: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(data) {
        Ok(blocks) => Cow::Borrowed(blocks),
        Err(_) => Cow::Owned(
            data.chunks_exact(std::mem::size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    }
}

/// Defines a byte-level scalar dot product over a typed reference of [`crate::quant`].
macro_rules! reference_dot {
    ($(#[$doc:meta])* $name:ident, $wfmt:expr, $act:expr, $W:ty, $A:ty, $reference:path) => {
        $(#[$doc])*
        pub fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (wf, af): (QuantFormat, QuantFormat) = ($wfmt.into(), $act.into());
            let wb = n / wf.block_size() * wf.type_size();
            let ab = n / af.block_size() * af.type_size();
            $reference(&blocks_of::<$W>(&w[..wb]), &blocks_of::<$A>(&a[..ab]))
        }
    };
}

reference_dot!(
    /// F32 · F32 (f64 accumulation).
    vec_dot_f32, GgmlType::F32, GgmlType::F32, f32, f32, quant::vec_dot_f32
);
reference_dot!(
    /// F16 · F32 (f64 accumulation).
    vec_dot_f16_f32, GgmlType::F16, GgmlType::F32, u16, f32, quant::vec_dot_f16_f32
);
reference_dot!(
    /// BF16 · F32 (f64 accumulation).
    vec_dot_bf16_f32, GgmlType::BF16, GgmlType::F32, u16, f32, quant::vec_dot_bf16_f32
);
reference_dot!(
    vec_dot_q4_0_q8_0,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    quant::BlockQ4_0,
    quant::BlockQ8_0,
    quant::vec_dot_q4_0_q8_0
);
reference_dot!(
    vec_dot_q4_1_q8_1,
    GgmlType::Q4_1,
    GgmlType::Q8_1,
    quant::BlockQ4_1,
    quant::BlockQ8_1,
    quant::vec_dot_q4_1_q8_1
);
reference_dot!(
    vec_dot_q5_0_q8_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    quant::BlockQ5_0,
    quant::BlockQ8_0,
    quant::vec_dot_q5_0_q8_0
);
reference_dot!(
    vec_dot_q5_1_q8_1,
    GgmlType::Q5_1,
    GgmlType::Q8_1,
    quant::BlockQ5_1,
    quant::BlockQ8_1,
    quant::vec_dot_q5_1_q8_1
);
reference_dot!(
    vec_dot_q8_0_q8_0,
    GgmlType::Q8_0,
    GgmlType::Q8_0,
    quant::BlockQ8_0,
    quant::BlockQ8_0,
    quant::vec_dot_q8_0_q8_0
);
reference_dot!(
    vec_dot_q2_k_q8_k,
    GgmlType::Q2_K,
    GgmlType::Q8_K,
    quant::BlockQ2K,
    quant::BlockQ8K,
    quant::vec_dot_q2_K_q8_K
);
reference_dot!(
    vec_dot_q3_k_q8_k,
    GgmlType::Q3_K,
    GgmlType::Q8_K,
    quant::BlockQ3K,
    quant::BlockQ8K,
    quant::vec_dot_q3_K_q8_K
);
reference_dot!(
    vec_dot_q4_k_q8_k,
    GgmlType::Q4_K,
    GgmlType::Q8_K,
    quant::BlockQ4K,
    quant::BlockQ8K,
    quant::vec_dot_q4_K_q8_K
);
reference_dot!(
    vec_dot_q5_k_q8_k,
    GgmlType::Q5_K,
    GgmlType::Q8_K,
    quant::BlockQ5K,
    quant::BlockQ8K,
    quant::vec_dot_q5_K_q8_K
);
reference_dot!(
    vec_dot_q6_k_q8_k,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    quant::BlockQ6K,
    quant::BlockQ8K,
    quant::vec_dot_q6_K_q8_K
);
reference_dot!(
    vec_dot_iq4_nl_q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q8_0,
    quant::BlockIQ4NL,
    quant::BlockQ8_0,
    quant::vec_dot_iq4_nl_q8_0
);
reference_dot!(
    vec_dot_nf4_q8_0,
    QuantFormat::Nf4,
    GgmlType::Q8_0,
    quant::BlockNF4,
    quant::BlockQ8_0,
    quant::vec_dot_nf4_q8_0
);

/// The scalar activation converters.
pub(crate) const QUANTIZERS: &[QuantizeEntry] = &[
    QuantizeEntry {
        act: GgmlType::F32,
        f: convert_row_f32,
    },
    QuantizeEntry {
        act: GgmlType::F16,
        f: convert_row_f16,
    },
    QuantizeEntry {
        act: GgmlType::BF16,
        f: convert_row_bf16,
    },
    QuantizeEntry {
        act: GgmlType::Q8_0,
        f: quantize_row_q8_0,
    },
    QuantizeEntry {
        act: GgmlType::Q8_1,
        f: quantize_row_q8_1,
    },
    QuantizeEntry {
        act: GgmlType::Q8_K,
        f: quantize_row_q8_k,
    },
];

// ---------------------------------------------------------------------------------------------
// Little helpers shared with the SIMD files (tails, scales).

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(read_u16(b, at)).to_f32()
}

#[inline]
pub(crate) fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// x86 `cvtps2dq` (round half to even, out-of-range and NaN give `i32::MIN`) followed by a
/// saturating narrowing to i8 (`packs` / `vpmovsdb`).
#[inline]
pub(crate) fn cvt_round_sat_i8(v: f32) -> i8 {
    let r = v.round_ties_even();
    let i = if r.is_nan() || !(-2147483648.0..2147483648.0).contains(&r) {
        i32::MIN
    } else {
        r as i32
    };
    i.clamp(-128, 127) as i8
}

/// ggml's `nearest_int` (ggml-quants.c): round half to even through the 1.5·2²³ trick, with its
/// exact bit behaviour for values outside ±2²² (they occur only for subnormal block maxima).
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let t = v + 12582912.0;
    (t.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The 6-bit scales and mins of Q4_K / Q5_K (12 bytes, ggml's `get_scale_min_k4` packing) as
/// 8 scales then 8 mins.
#[inline]
pub(crate) fn unpack_scales_mins_k4(s: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for j in 0..8 {
        if j < 4 {
            out[j] = s[j] & 63;
            out[8 + j] = s[j + 4] & 63;
        } else {
            out[j] = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            out[8 + j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Activation converters.

pub fn convert_row_f32(x: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Round to nearest even, like F16C's `vcvtps2ph` with rounding mode 0.
///
pub fn convert_row_f16(x: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

/// Round to nearest even (ggml's `GGML_FP32_TO_BF16`; NaN stays a quiet NaN).
///
pub fn convert_row_bf16(x: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&bf16_bits(*v).to_le_bytes());
    }
}

/// ggml_compute_fp32_to_bf16 (ggml-impl.h).
#[inline]
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Q8_0 (34 bytes: f16 d, 32 × i8) the way ggml's x86 `quantize_row_q8_0` does it.
///
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let (d, _) = quantize_block_q8(xb, &mut ob[2..34]);
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    }
}

/// Q8_1 (36 bytes: f16 d, f16 s = d·Σq, 32 × i8), ggml's x86 `quantize_row_q8_1`.
///
pub fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let (d, sum) = quantize_block_q8(xb, &mut ob[4..36]);
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_bits().to_le_bytes());
    }
}

/// One block of 32: returns (d, Σq).
fn quantize_block_q8(xb: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(xb) {
        let qi = cvt_round_sat_i8(v * id);
        sum += qi as i32;
        *q = qi as u8;
    }
    (d, sum)
}

/// Q8_K (292 bytes: f32 d, 256 × i8, 16 × i16 sums of 16), `quantize_row_q8_K_ref`, with the
/// codes clamped to [-128, 127] like [`crate::quant::quantize_row_q8_K`].
///
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; 256];
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (o, q) in ob[4..260].iter_mut().zip(qs) {
            *o = q as u8;
        }
        for (j, s) in ob[260..292].chunks_exact_mut(2).enumerate() {
            let sum: i32 = qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
    }
}

/// XOR of the little-endian u64 words of `data` (a read-bandwidth probe; see
/// [`crate::cpu::Kernels::read_probe`]).
pub fn read_probe(data: &[u8]) -> u64 {
    data.chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .fold(0, |a, b| a ^ b)
}
