//! Transformer ops compiled for AVX2 (see `cpu/ops.rs` for the API and `cpu/scalar/ops.rs`
//! for the reference numerics).
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU supports the features (`cpu::ops` dispatch does).

use crate::cpu::ops::{AttnJob, RopeCache};
use crate::cpu::scalar::ops as scalar;

/// Ops whose scalar loops the compiler vectorises well once the target features are enabled:
/// the body is the scalar reference, inlined and compiled for this ISA.
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
    rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]);
    layer_norm(x: &[f32], weight: &[f32], bias: Option<&[f32]>, eps: f32, out: &mut [f32]);
    rope(x: &mut [f32], n_heads: usize, head_dim: usize, positions: &[usize], cache: &RopeCache);
    softmax_inplace(x: &mut [f32]);
    silu_inplace(x: &mut [f32]);
    gelu_tanh_inplace(x: &mut [f32]);
    gelu_erf_inplace(x: &mut [f32]);
    swiglu(gate: &[f32], up: &[f32], out: &mut [f32]);
    geglu_tanh(gate: &[f32], up: &[f32], out: &mut [f32]);
    add_inplace(x: &mut [f32], y: &[f32]);
    mul_inplace(x: &mut [f32], y: &[f32]);
    scale_inplace(x: &mut [f32], s: f32);
    f32_to_f16_row(src: &[f32], dst: &mut [u16]);
    f16_to_f32_row(src: &[u16], dst: &mut [f32]);
    attend_group(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]);
}
