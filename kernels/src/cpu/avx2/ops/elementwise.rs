//! Element-wise arithmetic and f16 row conversion.

use super::*;

/// Ops the compiler vectorises well from the scalar reference once the target features are
/// enabled: the body is the scalar reference, inlined and compiled for this ISA.
macro_rules! compiled_for_isa {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ); )*) => {$(
        /// The scalar reference compiled for this ISA.
        ///
        /// # Safety
        /// The CPU supports this module's target features.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name($($arg: $ty),*) {
            scalar::$name($($arg),*)
        }
    )*};
}

compiled_for_isa! {
    add_inplace(x: &mut [f32], y: &[f32]);
    scale_inplace(x: &mut [f32], s: f32);
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: `i + 8 <= n`: 8 f32 read, 8 u16 written, all in bounds.
        unsafe {
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        }
        i += LANES;
    }
    scalar::f32_to_f16_row(&src[i..n], &mut dst[i..n]);
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: `i + 8 <= n`: 8 u16 read, 8 f32 written, all in bounds.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += LANES;
    }
    scalar::f16_to_f32_row(&src[i..n], &mut dst[i..n]);
}
