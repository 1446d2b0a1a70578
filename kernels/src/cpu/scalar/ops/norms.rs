//! RMSNorm and LayerNorm (references).

/// ggml's `ggml_rms_norm` followed by `ggml_mul` with the weight, in place on each row of
/// `weight.len()` values: the sum of squares is accumulated in f64 (`ggml_float`),
/// `scale = 1 / sqrt(mean + eps)` in f32, then `x = (x * scale) * weight`.
#[inline]
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (y, &w) in xr.iter_mut().zip(weight) {
            *y = (*y * scale) * w;
        }
    }
}

/// ggml's `ggml_norm` (mean subtraction, variance accumulated in f64) followed by `ggml_mul`
/// with the weight and `ggml_add` of the bias, in place.
#[inline]
pub fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum: f64 = xr.iter().map(|&v| v as f64).sum();
        let mean = sum as f32 / n as f32;
        let mut var = 0.0f64;
        for y in xr.iter_mut() {
            *y -= mean;
            var += (*y * *y) as f64;
        }
        let variance = (var / n as f64) as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for (y, &w) in xr.iter_mut().zip(weight) {
            *y = (*y * scale) * w;
        }
        if let Some(b) = bias {
            for (y, &bv) in xr.iter_mut().zip(b) {
                *y += bv;
            }
        }
    }
}
