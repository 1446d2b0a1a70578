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

mod convert;
mod kquants;
mod legacy;

pub use self::convert::*;
pub use self::kquants::*;
pub use self::legacy::*;

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
