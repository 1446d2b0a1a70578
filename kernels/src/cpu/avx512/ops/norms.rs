//! RMSNorm and LayerNorm (`simd::ops`).

use super::*;
use crate::cpu::simd;

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    // SAFETY: this function's target features are Avx512F32's.
    simd::ops::rms_norm_inplace(unsafe { Avx512F32::new() }, x, weight, eps)
}

/// # Safety
/// The CPU supports this module's target features; `bias`, if any, is as long as `weight`
/// (checked by the caller).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    // SAFETY: this function's target features are Avx512F32's; `bias` is the caller's.
    unsafe { simd::ops::layer_norm_inplace(Avx512F32::new(), x, weight, bias, eps) }
}
