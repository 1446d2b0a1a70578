//! Element-wise arithmetic and f16 row conversion (references).

use super::*;

#[inline]
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[inline]
pub fn mul_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a *= b;
    }
}

#[inline]
pub fn scale_inplace(x: &mut [f32], s: f32) {
    for a in x {
        *a *= s;
    }
}

/// Round to nearest even, like F16C's `vcvtps2ph` with imm 0.
#[inline]
pub fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s).to_bits();
    }
}

#[inline]
pub fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_bits(s).to_f32();
    }
}
