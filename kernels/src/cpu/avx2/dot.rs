//! AVX2 + FMA + F16C dot products and activation converters.
//!
//! Integer dot products use `maddubs` (u8 × s8 → i16 pairs) and `madd` (→ i32). 4- and 5-bit
//! codes are unsigned bytes as they are, with the offset removed through a second `maddubs`
//! of the offset against the activations (or the Q8_K sums); signed 8-bit weights (Q8_0,
//! IQ4_NL levels) use the sign trick (|x| × sign(x)·y), which keeps `maddubs` from saturating.
//! One 32-value block per step; i32 within a block, f32 across blocks. Layouts: ggml-common.h.

use std::arch::x86_64::*;

use crate::cpu::scalar::dot as scalar;
use crate::cpu::{dot_entry, QuantizeEntry, VecDotEntry};
use crate::quant::{GgmlType, QuantFormat, KVALUES_IQ4NL, KVALUES_NF4};

/// The AVX2 kernel table.
pub(crate) const VEC_DOTS: &[VecDotEntry] = &[
    dot_entry(GgmlType::F32, GgmlType::F32, vec_dot_f32),
    dot_entry(GgmlType::F16, GgmlType::F32, vec_dot_f16_f32),
    dot_entry(GgmlType::BF16, GgmlType::F32, vec_dot_bf16_f32),
    dot_entry(GgmlType::Q4_0, GgmlType::Q8_0, vec_dot_q4_0_q8_0),
    dot_entry(GgmlType::Q4_1, GgmlType::Q8_1, vec_dot_q4_1_q8_1),
    dot_entry(GgmlType::Q5_0, GgmlType::Q8_0, vec_dot_q5_0_q8_0),
    dot_entry(GgmlType::Q5_1, GgmlType::Q8_1, vec_dot_q5_1_q8_1),
    dot_entry(GgmlType::Q8_0, GgmlType::Q8_0, vec_dot_q8_0_q8_0),
    // No SIMD kernel yet: the scalar reference.
    dot_entry(GgmlType::Q2_K, GgmlType::Q8_K, scalar::vec_dot_q2_k_q8_k),
    dot_entry(GgmlType::Q3_K, GgmlType::Q8_K, scalar::vec_dot_q3_k_q8_k),
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

/// The AVX2 activation converters.
pub(crate) const QUANTIZERS: &[QuantizeEntry] = &[
    QuantizeEntry {
        act: GgmlType::F32,
        f: scalar::convert_row_f32,
    },
    QuantizeEntry {
        act: GgmlType::F16,
        f: convert_row_f16,
    },
    QuantizeEntry {
        act: GgmlType::BF16,
        f: scalar::convert_row_bf16,
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
// Helpers.

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at `p`.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at `p`.
    unsafe { p.cast::<f32>().read_unaligned() }
}

#[inline]
pub(super) unsafe fn u32_at(p: *const u8) -> u32 {
    // SAFETY: the caller guarantees four readable bytes at `p`.
    u32::from_le(unsafe { p.cast::<u32>().read_unaligned() })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// 16 nibble bytes (ggml order) as 32 codes in value order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles_16(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let q = unsafe { _mm_loadu_si128(p.cast()) };
    let m4 = _mm_set1_epi8(0x0F);
    _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16(q, 4), m4),
        _mm_and_si128(q, m4),
    )
}

/// Σ u·s over 32 bytes as 8 i32 lanes (pairs must not saturate i16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Σ (u - off)·s over 32 bytes as 8 i32 lanes, for small `off` and unsigned `u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_off_i8(u: __m256i, off: __m256i, s: __m256i) -> __m256i {
    let d = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(off, s));
    _mm256_madd_epi16(d, _mm256_set1_epi16(1))
}

/// Σ x·y of signed bytes (x ≠ -128 or y ≠ -128) as 8 i32 lanes, through |x| · sign(x)·y.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// Bit j of `bits` as byte j (0x10 when set, 0 otherwise).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bits_to_0x10(bits: u32) -> __m256i {
    let t = _mm256_set1_epi32(bits as i32);
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let t = _mm256_shuffle_epi8(t, shuf);
    let t = _mm256_or_si256(t, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    let t = _mm256_cmpeq_epi8(t, _mm256_set1_epi64x(-1));
    _mm256_and_si256(t, _mm256_set1_epi8(0x10))
}

/// The f16 values at `base + idx[k]` (k = 0..8, byte offsets) as 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gather_f16(base: *const u8, idx: __m256i) -> __m256 {
    // SAFETY: the caller guarantees 4 readable bytes at every base + idx[k].
    let g = unsafe { _mm256_i32gather_epi32::<1>(base.cast(), idx) };
    let g = _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF));
    let p = _mm256_permute4x64_epi64::<0b10_00>(_mm256_packus_epi32(g, g));
    _mm256_cvtph_ps(_mm256_castsi256_si128(p))
}

/// Shared loop of the 32-value block kernels: `block(i)` returns block i's i32 sums (8 lanes).
/// Scales are the f16 at offset 0 of each weight block (`w_ts` bytes) and activation block
/// (`a_ts` bytes); with `mins`, Σ m·s is added (m at offset 2 of the weight block, s = d·Σq at
/// offset 2 of the Q8_1 block). Groups of 8 blocks gather their scales at once.
///
/// # Safety
/// `wp` and `ap` point to `nb` blocks of `w_ts` and `a_ts` (≥ 18) bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_loop(
    nb: usize,
    wp: *const u8,
    w_ts: usize,
    ap: *const u8,
    a_ts: usize,
    mins: bool,
    block: impl Fn(usize) -> __m256i,
) -> f32 {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let widx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(w_ts as i32));
    let aidx = _mm256_mullo_epi32(lane, _mm256_set1_epi32(a_ts as i32));
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    let mut tail = 0f32;
    let mut i = 0;
    // SAFETY (whole loop): block indices stay below nb; the gathers read 4 bytes at offsets 0
    // and 2 of blocks of at least 18 bytes.
    unsafe {
        while i + 8 <= nb {
            let (wb, ab) = (wp.add(w_ts * i), ap.add(a_ts * i));
            let s = _mm256_mul_ps(gather_f16(wb, widx), gather_f16(ab, aidx));
            if mins {
                accm = _mm256_fmadd_ps(
                    gather_f16(wb.add(2), widx),
                    gather_f16(ab.add(2), aidx),
                    accm,
                );
            }
            for k in (0..8).step_by(2) {
                let s0 = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(k as i32));
                let s1 = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(k as i32 + 1));
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block(i + k)), s0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block(i + k + 1)), s1, acc1);
            }
            i += 8;
        }
        while i < nb {
            let (x, y) = (wp.add(w_ts * i), ap.add(a_ts * i));
            let d = f16_at(x) * f16_at(y);
            if mins {
                tail += f16_at(x.add(2)) * f16_at(y.add(2));
            }
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block(i)), _mm256_set1_ps(d), acc0);
            i += 1;
        }
    }
    hsum_ps(_mm256_add_ps(acc0, acc1)) + hsum_ps(accm) + tail
}

// ---------------------------------------------------------------------------------------------
// Float dot products.

/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (loads): values i..i+8k lie within both slices (i + 32 <= n or i + 8 <= n).
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(wp.add(i + 8 * k)),
                    _mm256_loadu_ps(ap.add(i + 8 * k)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        let (x, y) = unsafe { (_mm256_loadu_ps(wp.add(i)), _mm256_loadu_ps(ap.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += scalar::read_f32(w, 4 * i) * scalar::read_f32(a, 4 * i);
        i += 1;
    }
    sum
}

/// F16 weights · F32 activations.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: values i..i+16 lie within both slices.
        let (x0, x1, y0, y1) = unsafe {
            (
                _mm_loadu_si128(wp.add(2 * i).cast()),
                _mm_loadu_si128(wp.add(2 * i + 16).cast()),
                _mm256_loadu_ps(ap.add(i)),
                _mm256_loadu_ps(ap.add(i + 8)),
            )
        };
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(x0), y0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(x1), y1, acc1);
        i += 16;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += scalar::read_f16(w, 2 * i) * scalar::read_f32(a, 4 * i);
        i += 1;
    }
    sum
}

/// BF16 weights · F32 activations.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_bf16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let widen = |v: __m128i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i+8 lie within both slices.
        let (x, y) = unsafe {
            (
                _mm_loadu_si128(wp.add(2 * i).cast()),
                _mm256_loadu_ps(ap.add(i)),
            )
        };
        acc0 = _mm256_fmadd_ps(widen(x), y, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        let x = f32::from_bits((scalar::read_u16(w, 2 * i) as u32) << 16);
        sum += x * scalar::read_f32(a, 4 * i);
        i += 1;
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Activation converters (same bytes as cpu/scalar/dot.rs).

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn convert_row_f16(x: &[f32], out: &mut [u8]) {
    debug_assert!(out.len() >= 2 * x.len());
    let mut i = 0;
    while i + 8 <= x.len() {
        // SAFETY: values i..i+8 lie within `x`, their bytes within `out`.
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(2 * i).cast(), h);
        }
        i += 8;
    }
    scalar::convert_row_f16(&x[i..], &mut out[2 * i..]);
}

/// Quantizes one 32-value block at `x` into 32 bytes at `qs`; returns (d, Σq).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_q8(x: *const f32, qs: *mut u8) -> (f32, i32) {
    // SAFETY: the caller guarantees 32 readable floats at `x`.
    let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(8 * k)) });
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vk in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vk));
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    let amax = _mm_cvtss_f32(m4);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    // cvtps2dq rounds half to even under the default MXCSR, like _mm256_round_ps in ggml.
    let q: [__m256i; 4] = std::array::from_fn(|k| {
        _mm256_max_epi32(
            _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)), hi),
            lo,
        )
    });
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(q[0], q[1]),
        _mm256_add_epi32(q[2], q[3]),
    ));
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(p01, p23);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: the caller guarantees 32 writable bytes at `qs`.
    unsafe { _mm256_storeu_si256(qs.cast(), p) };
    (d, sum)
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(32) && out.len() >= x.len() / 32 * 34);
    for b in 0..x.len() / 32 {
        // SAFETY: block b's 32 floats lie within `x`, its 34 bytes within `out`.
        unsafe {
            let o = out.as_mut_ptr().add(34 * b);
            let (d, _) = quantize_block_q8(x.as_ptr().add(32 * b), o.add(2));
            o.cast::<u16>()
                .write_unaligned(half::f16::from_f32(d).to_bits().to_le());
        }
    }
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(32) && out.len() >= x.len() / 32 * 36);
    for b in 0..x.len() / 32 {
        // SAFETY: block b's 32 floats lie within `x`, its 36 bytes within `out`.
        unsafe {
            let o = out.as_mut_ptr().add(36 * b);
            let (d, sum) = quantize_block_q8(x.as_ptr().add(32 * b), o.add(4));
            o.cast::<u16>()
                .write_unaligned(half::f16::from_f32(d).to_bits().to_le());
            o.add(2)
                .cast::<u16>()
                .write_unaligned(half::f16::from_f32(d * sum as f32).to_bits().to_le());
        }
    }
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(256) && out.len() >= x.len() / 256 * 292);
    let sign = _mm256_set1_ps(-0.0);
    for b in 0..x.len() / 256 {
        let xb = &x[256 * b..256 * b + 256];
        let o = &mut out[292 * b..292 * b + 292];
        // SAFETY: values 8k..8k+8 lie within the 256 of `xb`.
        let v: [__m256; 32] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * k)) });
        let mut m = _mm256_setzero_ps();
        for vk in &v {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vk));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if amax == 0.0 {
            o.fill(0);
            continue;
        }
        // The first element of the largest magnitude keeps its sign (ggml keeps the first).
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let isv = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12582912.0);
        for k in 0..16 {
            let mut q = [_mm256_setzero_si256(); 2];
            for (h, q) in q.iter_mut().enumerate() {
                // ggml's nearest_int, then clamped to [-128, 127].
                let t = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(v[2 * k + h], isv), magic));
                let t = _mm256_sub_epi32(
                    _mm256_and_si256(t, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x0040_0000),
                );
                *q = _mm256_max_epi32(
                    _mm256_min_epi32(t, _mm256_set1_epi32(127)),
                    _mm256_set1_epi32(-128),
                );
            }
            let sum = hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            let p = _mm256_packs_epi32(q[0], q[1]);
            let p = _mm256_permute4x64_epi64(p, 0b11_01_10_00);
            let p8 = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            // SAFETY: bytes 4 + 16k .. 4 + 16k + 16 lie within the 292-byte block.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().add(4 + 16 * k).cast(), p8) };
            o[260 + 2 * k..262 + 2 * k].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        o[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy quants (32-value blocks) against Q8_0 / Q8_1.

/// Q4_0 · Q8_0. See the AVX-512 file for the layouts.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 18 && a.len() >= nb * 34);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let off = _mm256_set1_epi8(8);
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(18 * i);
            let q = nibbles_16(x.add(2));
            let yv = _mm256_loadu_si256(ap.add(34 * i + 2).cast());
            dot_u8_off_i8(q, off, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 18, ap, 34, false, block) }
}

/// Q4_1 · Q8_1.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 20 && a.len() >= nb * 36);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(20 * i);
            let q = nibbles_16(x.add(4));
            let yv = _mm256_loadu_si256(ap.add(36 * i + 4).cast());
            dot_u8_i8(q, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 20, ap, 36, true, block) }
}

/// Q5_0 · Q8_0.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 22 && a.len() >= nb * 34);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let off = _mm256_set1_epi8(16);
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(22 * i);
            let q = _mm256_or_si256(nibbles_16(x.add(6)), bits_to_0x10(u32_at(x.add(2))));
            let yv = _mm256_loadu_si256(ap.add(34 * i + 2).cast());
            dot_u8_off_i8(q, off, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 22, ap, 34, false, block) }
}

/// Q5_1 · Q8_1.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 24 && a.len() >= nb * 36);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(24 * i);
            let q = _mm256_or_si256(nibbles_16(x.add(8)), bits_to_0x10(u32_at(x.add(4))));
            let yv = _mm256_loadu_si256(ap.add(36 * i + 4).cast());
            dot_u8_i8(q, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 24, ap, 36, true, block) }
}

/// Q8_0 · Q8_0.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 34 && a.len() >= nb * 34);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(34 * i);
            let q = _mm256_loadu_si256(x.add(2).cast());
            let yv = _mm256_loadu_si256(ap.add(34 * i + 2).cast());
            dot_i8_i8(q, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 34, ap, 34, false, block) }
}

/// IQ4_NL · Q8_0.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 18 && a.len() >= nb * 34);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // SAFETY: the table has 16 bytes.
    let t = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
    let table = _mm256_set_m128i(t, t);
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(18 * i);
            let q = _mm256_shuffle_epi8(table, nibbles_16(x.add(2)));
            let yv = _mm256_loadu_si256(ap.add(34 * i + 2).cast());
            dot_i8_i8(q, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 18, ap, 34, false, block) }
}

/// NF4 · Q8_0: IQ4_NL's kernel with the NF4 table (the same 18-byte block layout).
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_nf4_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 32;
    debug_assert!(w.len() >= nb * 18 && a.len() >= nb * 34);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // SAFETY: the table has 16 bytes.
    let t = unsafe { _mm_loadu_si128(KVALUES_NF4.as_ptr().cast()) };
    let table = _mm256_set_m128i(t, t);
    let block = |i: usize| {
        // SAFETY: `blocks_loop` passes i < nb, so block i lies within both slices.
        unsafe {
            let x = wp.add(18 * i);
            let q = _mm256_shuffle_epi8(table, nibbles_16(x.add(2)));
            let yv = _mm256_loadu_si256(ap.add(34 * i + 2).cast());
            dot_i8_i8(q, yv)
        }
    };
    // SAFETY: the rows hold nb blocks (caller contract).
    unsafe { blocks_loop(nb, wp, 18, ap, 34, false, block) }
}

// ---------------------------------------------------------------------------------------------
// K-quants against Q8_K.

/// Σ mins[k]·(bsums[2k] + bsums[2k+1]) as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mins_dot_bsums(mins8: &[u8], bsums: *const u8) -> __m256i {
    // SAFETY: `mins8` has 8 bytes; the caller guarantees 32 readable bytes at `bsums`.
    unsafe {
        let m = _mm_loadl_epi64(mins8.as_ptr().cast());
        let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(_mm256_loadu_si256(bsums.cast()), m16)
    }
}

/// Q4_K and Q5_K share everything but the fifth bit: `qh` is null for Q4_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_k_superblock(
    x: &[u8],
    qs: usize,
    qh: Option<usize>,
    y: &[u8],
) -> (__m256i, __m256i, f32, f32) {
    let m4 = _mm256_set1_epi8(0x0F);
    // SAFETY: x holds a whole Q4_K/Q5_K super-block and y a Q8_K one; offsets below are inside.
    unsafe {
        let yd = f32_at(y.as_ptr());
        let d = f16_at(x.as_ptr()) * yd;
        let dmin = f16_at(x.as_ptr().add(2)) * yd;
        let sm = scalar::unpack_scales_mins_k4(&x[4..16]);
        let hv = qh.map(|o| _mm256_loadu_si256(x.as_ptr().add(o).cast()));
        let mut isum = _mm256_setzero_si256();
        for j in 0..4 {
            let qb = _mm256_loadu_si256(x.as_ptr().add(qs + 32 * j).cast());
            let mut lo = _mm256_and_si256(qb, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            if let Some(h) = hv {
                let b0 = _mm256_set1_epi8(1 << (2 * j));
                let b1 = _mm256_set1_epi8((1u8 << (2 * j + 1)) as i8);
                let sixteen = _mm256_set1_epi8(16);
                lo = _mm256_or_si256(
                    lo,
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b0), b0), sixteen),
                );
                hi = _mm256_or_si256(
                    hi,
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b1), b1), sixteen),
                );
            }
            let y0 = _mm256_loadu_si256(y.as_ptr().add(4 + 64 * j).cast());
            let y1 = _mm256_loadu_si256(y.as_ptr().add(36 + 64 * j).cast());
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(sm[2 * j] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(sm[2 * j + 1] as i16),
            );
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        let m = mins_dot_bsums(&sm[8..16], y.as_ptr().add(260));
        (isum, m, d, dmin)
    }
}

/// Q4_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: the sliced super-blocks are whole (bounds-checked slicing).
        let (isum, m, d, dmin) = unsafe {
            q45_k_superblock(
                &w[144 * i..144 * i + 144],
                16,
                None,
                &a[292 * i..292 * i + 292],
            )
        };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(m), accm);
    }
    hsum_ps(acc) - hsum_ps(accm)
}

/// Q5_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: the sliced super-blocks are whole (bounds-checked slicing).
        let (isum, m, d, dmin) = unsafe {
            q45_k_superblock(
                &w[176 * i..176 * i + 176],
                48,
                Some(16),
                &a[292 * i..292 * i + 292],
            )
        };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(m), accm);
    }
    hsum_ps(acc) - hsum_ps(accm)
}

/// Q6_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = _mm256_setzero_ps();
    let mut accc = _mm256_setzero_ps();
    for i in 0..nb {
        let x = &w[210 * i..210 * i + 210];
        let y = &a[292 * i..292 * i + 292];
        let sc = &x[192..208];
        // SAFETY: x has 210 bytes and y 292 (sliced above); every load below stays inside.
        unsafe {
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let d = f16_at(xp.add(208)) * f32_at(yp);
            let mut isum = _mm256_setzero_si256();
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(xp.add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(xp.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(xp.add(128 + 32 * h).cast());
                let v = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                    ),
                ];
                for (k, v) in v.iter().enumerate() {
                    let yv = _mm256_loadu_si256(yp.add(4 + 128 * h + 32 * k).cast());
                    let s = 8 * h + 2 * k;
                    let scv = _mm256_set_m128i(
                        _mm_set1_epi16(sc[s + 1] as i8 as i16),
                        _mm_set1_epi16(sc[s] as i8 as i16),
                    );
                    isum = _mm256_add_epi32(
                        isum,
                        _mm256_madd_epi16(_mm256_maddubs_epi16(*v, yv), scv),
                    );
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr().cast()));
            let corr = _mm256_madd_epi16(_mm256_loadu_si256(yp.add(260).cast()), sc16);
            accc = _mm256_fmadd_ps(_mm256_set1_ps(32.0 * d), _mm256_cvtepi32_ps(corr), accc);
        }
    }
    hsum_ps(acc) - hsum_ps(accc)
}

/// XOR of the u64 words of `data` with 256-bit loads, four independent streams (a read
/// bandwidth probe; see [`crate::cpu::Kernels::read_probe`]).
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn read_probe(data: &[u8]) -> u64 {
    let p = data.as_ptr();
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    while i + 128 <= data.len() {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: bytes i + 32k .. i + 32k + 32 lie within `data` (i + 128 <= len).
            *a = _mm256_xor_si256(*a, unsafe { _mm256_loadu_si256(p.add(i + 32 * k).cast()) });
        }
        i += 128;
    }
    let v = _mm256_xor_si256(
        _mm256_xor_si256(acc[0], acc[1]),
        _mm256_xor_si256(acc[2], acc[3]),
    );
    let mut words = [0u64; 4];
    // SAFETY: `words` has 32 writable bytes.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) };
    words
        .iter()
        .fold(scalar::read_probe(&data[i..]), |a, b| a ^ b)
}
