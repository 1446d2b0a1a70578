//! RMSNorm and LayerNorm.

use super::*;

/// f64 sum of `f(lane)` over `x`, each 8-lane f32 chunk widened to f64 before adding.
macro_rules! sum_f64 {
    ($x:expr, |$v:ident| $e:expr) => {{
        let x: &[f32] = $x;
        let mut acc_lo = _mm256_setzero_pd();
        let mut acc_hi = _mm256_setzero_pd();
        let mut i = 0;
        while i < x.len() {
            // SAFETY: `i < x.len()`; AVX2 is enabled.
            let $v = unsafe { load(x, i) };
            let t: __m256 = $e;
            acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
            acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
            i += LANES;
        }
        let s = _mm256_add_pd(acc_lo, acc_hi);
        let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }};
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        // Zeroed tail lanes add 0.
        let sum = sum_f64!(&*xr, |v| _mm256_mul_ps(v, v));
        let mean = (sum / n as f64) as f32;
        let scale = _mm256_set1_ps(1.0 / (mean + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr` and `weight`.
            unsafe {
                let v = _mm256_mul_ps(load(xr, i), scale);
                store(xr, i, _mm256_mul_ps(v, load(weight, i)));
            }
            i += LANES;
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum = sum_f64!(&*xr, |v| v);
        let mean = sum as f32 / n as f32;
        let vmean = _mm256_set1_ps(mean);
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n`.
            unsafe { store(xr, i, _mm256_sub_ps(load(xr, i), vmean)) };
            i += LANES;
        }
        // Tail lanes load as 0 and add 0.
        let var = sum_f64!(&*xr, |d| _mm256_mul_ps(d, d));
        let variance = (var / n as f64) as f32;
        let scale = _mm256_set1_ps(1.0 / (variance + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr`, `weight` and (checked by the caller) `bias`.
            unsafe {
                let mut v = _mm256_mul_ps(_mm256_mul_ps(load(xr, i), scale), load(weight, i));
                if let Some(b) = bias {
                    v = _mm256_add_ps(v, load(b, i));
                }
                store(xr, i, v);
            }
            i += LANES;
        }
    }
}
