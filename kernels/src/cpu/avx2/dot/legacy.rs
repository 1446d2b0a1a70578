//! Legacy quants (32-value blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, NF4) against Q8_0 / Q8_1.

use super::*;

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
