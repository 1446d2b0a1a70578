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
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i < n {
        let rem = n - i;
        // SAFETY: `i < n`; full accesses only when 16 values remain, masked otherwise.
        unsafe {
            let v = load(&src[..n], i);
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            if rem >= LANES {
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
            } else {
                _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(i) as *mut i16, tail_mask(rem), h);
            }
        }
        i += LANES;
    }
}

/// Loads 16 f16 values at `src[i..]` (zeros past the end) as f32.
///
/// # Safety
/// `i < src.len()`; the CPU supports AVX-512F/BW/VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_f16(src: &[u16], i: usize) -> __m512 {
    let rem = src.len() - i;
    // SAFETY: as in `load`.
    unsafe {
        let h = if rem >= LANES {
            _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i)
        } else {
            _mm256_maskz_loadu_epi16(tail_mask(rem), src.as_ptr().add(i) as *const i16)
        };
        _mm512_cvtph_ps(h)
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let dst = &mut dst[..n];
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`.
        unsafe { store(dst, i, load_f16(&src[..n], i)) };
        i += LANES;
    }
}
