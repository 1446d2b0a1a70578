//! RMSNorm and LayerNorm.

use super::*;

/// f64 sum of `f(lane)` over `x`, each 16-lane f32 chunk widened to f64 before adding.
macro_rules! sum_f64 {
    ($x:expr, |$v:ident| $e:expr) => {{
        let x: &[f32] = $x;
        let mut acc_lo = _mm512_setzero_pd();
        let mut acc_hi = _mm512_setzero_pd();
        let mut i = 0;
        while i < x.len() {
            // SAFETY: `i < x.len()`; AVX-512F is enabled.
            let $v = unsafe { load(x, i) };
            let t: __m512 = $e;
            acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
            acc_hi = _mm512_add_pd(
                acc_hi,
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                    _mm512_castps_pd(t),
                ))),
            );
            i += LANES;
        }
        _mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi))
    }};
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        // Zeroed tail lanes add 0.
        let sum = sum_f64!(&*xr, |v| _mm512_mul_ps(v, v));
        let mean = (sum / n as f64) as f32;
        let scale = _mm512_set1_ps(1.0 / (mean + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr` and `weight`.
            unsafe {
                let v = _mm512_mul_ps(load(xr, i), scale);
                store(xr, i, _mm512_mul_ps(v, load(weight, i)));
            }
            i += LANES;
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum = sum_f64!(&*xr, |v| v);
        let mean = sum as f32 / n as f32;
        let vmean = _mm512_set1_ps(mean);
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n`.
            unsafe { store(xr, i, _mm512_sub_ps(load(xr, i), vmean)) };
            i += LANES;
        }
        // Tail lanes load as 0 and add 0.
        let var = sum_f64!(&*xr, |d| _mm512_mul_ps(d, d));
        let variance = (var / n as f64) as f32;
        let scale = _mm512_set1_ps(1.0 / (variance + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr`, `weight` and (checked by the caller) `bias`.
            unsafe {
                let mut v = _mm512_mul_ps(_mm512_mul_ps(load(xr, i), scale), load(weight, i));
                if let Some(b) = bias {
                    v = _mm512_add_ps(v, load(b, i));
                }
                store(xr, i, v);
            }
            i += LANES;
        }
    }
}
