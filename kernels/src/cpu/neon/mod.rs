//! AArch64 kernels: NEON (Advanced SIMD, in every AArch64 CPU) and NEON with the dot-product
//! extension (`sdot`, Armv8.2-A `dotprod`). Two tables share this folder: [`KERNELS`] and
//! [`KERNELS_DOTPROD`]; they differ only in how an integer sum of int8 products is formed
//! (`vmull` + `vpadal` widening, or `sdot`), and integer sums are exact, so both give the bits
//! of the scalar reference.
//!
//! What is NEON so far (issue #27, first slice), everything else is the scalar reference
//! through the table:
//! - the GEMM-form products (Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K, Q6_K; prefill and decode):
//!   the scalar row-by-row GEMM with each sub-block's integer sum in NEON ([`gemm`]);
//! - the dot products of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (· Q8_0 / Q8_1), IQ4_NL and NF4 (· Q8_0),
//!   each the scalar reference's float steps in its order ([`dot`]);
//! - the read probe.
//!
//! The ops (norms, RoPE, activations, attention), the float GEMM, the activation quantizers
//! and the F32/F16/BF16 and K-quant dot products are the scalar references (which the compiler
//! vectorises where it can without reordering).

pub mod dot;
pub(crate) mod gemm;

use crate::cpu::scalar;
use crate::cpu::{GemmKernels, Isa, Kernels, OpKernels};

/// The scalar reference ops (the same bits on every ISA).
const OPS: OpKernels = OpKernels {
    rms_norm_inplace: scalar::ops::rms_norm_inplace,
    layer_norm_inplace: scalar::ops::layer_norm_inplace,
    rope: scalar::ops::rope,
    gelu_tanh_inplace: scalar::ops::gelu_tanh_inplace,
    gelu_erf_inplace: scalar::ops::gelu_erf_inplace,
    swiglu_inplace: scalar::ops::swiglu_inplace,
    geglu_tanh_inplace: scalar::ops::geglu_tanh_inplace,
    add_inplace: scalar::ops::add_inplace,
    scale_inplace: scalar::ops::scale_inplace,
    f32_to_f16_row: scalar::ops::f32_to_f16_row,
    f16_to_f32_row: scalar::ops::f16_to_f32_row,
    attend_group: scalar::ops::attend_group,
    attend_tile: scalar::ops::attend_tile,
    attend_packed: scalar::ops::attend_packed,
    attn_tile_rows: 16,
};

/// The NEON table; [`Kernels::get`] hands it out only when the CPU supports [`Isa::Neon`].
pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Neon,
    dots: dot::VEC_DOTS,
    quantizers: scalar::dot::QUANTIZERS,
    read_probe: dot::read_probe,
    ops: OPS,
    gemm: GemmKernels::Rows(gemm::rows_times_tokens),
    float_panel: crate::cpu::fgemm::panel_ref,
};

/// The NEON + dotprod table; [`Kernels::get`] hands it out only when the CPU supports
/// [`Isa::NeonDotprod`].
pub(crate) static KERNELS_DOTPROD: Kernels = Kernels {
    isa: Isa::NeonDotprod,
    dots: dot::VEC_DOTS_DOTPROD,
    quantizers: scalar::dot::QUANTIZERS,
    read_probe: dot::read_probe,
    ops: OPS,
    gemm: GemmKernels::Rows(gemm::rows_times_tokens_dotprod),
    float_panel: crate::cpu::fgemm::panel_ref,
};
