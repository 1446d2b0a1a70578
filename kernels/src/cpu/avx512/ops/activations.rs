//! GELU (ggml's f16 table), SiLU and the gated forms SwiGLU and GeGLU (`simd::ops`).

use super::*;
use crate::cpu::simd;
use crate::cpu::simd::F32Vec;

/// ggml's f16-table GELU (see `scalar::gelu_tanh_ggml`): the f16 bits of x index the table
/// with a gather, so every ISA gives ggml's bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub(super) fn gelu_tanh_ggml_ps(x: __m512) -> __m512 {
    let table = scalar::gelu_f16_table();
    let bits = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let idx = _mm512_cvtepu16_epi32(bits);
    // SAFETY: every index is a u16 and the table has 65536 entries.
    let g = unsafe { _mm512_i32gather_ps::<4>(idx, table.as_ptr()) };
    // Outside (-10, 10) ggml bypasses its table: 0 below, x itself above.
    let lo = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_set1_ps(-10.0));
    let hi = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(10.0));
    let g = _mm512_mask_blend_ps(lo, g, _mm512_setzero_ps());
    _mm512_mask_blend_ps(hi, g, x)
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn gelu_tanh_inplace(x: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's.
    let v = unsafe { Avx512F32::new() };
    simd::ops::map_inplace(v, x, |a| v.gelu_tanh_ggml(a))
}

/// The exact GELU, `scalar::gelu_erf`'s bits.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn gelu_erf_inplace(x: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's.
    let v = unsafe { Avx512F32::new() };
    simd::ops::map_inplace(v, x, |a| simd::ops::gelu_erf(v, a))
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    // SAFETY: this function's target features are Avx512F32's.
    let v = unsafe { Avx512F32::new() };
    simd::ops::map_gated(v, gate, up, |a| simd::ops::silu(v, a))
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn geglu_tanh_inplace(gate: &mut [f32], up: &[f32]) {
    // SAFETY: this function's target features are Avx512F32's.
    let v = unsafe { Avx512F32::new() };
    simd::ops::map_gated(v, gate, up, |a| v.gelu_tanh_ggml(a))
}
