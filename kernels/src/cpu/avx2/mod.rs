//! AVX2 + FMA + F16C kernels.

pub mod dot;
pub(crate) mod fgemm;
pub(crate) mod gemm;
pub mod ops;

use crate::cpu::{GemmKernels, Isa, Kernels, OpKernels};

/// The avx2 table; [`Kernels::get`] hands it out only when the CPU supports [`Isa::Avx2`].
pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    dots: dot::VEC_DOTS,
    quantizers: dot::QUANTIZERS,
    read_probe: dot::read_probe,
    ops: OpKernels {
        rms_norm_inplace: ops::rms_norm_inplace,
        layer_norm_inplace: ops::layer_norm_inplace,
        rope: ops::rope,
        gelu_tanh_inplace: ops::gelu_tanh_inplace,
        gelu_erf_inplace: ops::gelu_erf_inplace,
        swiglu_inplace: ops::swiglu_inplace,
        geglu_tanh_inplace: ops::geglu_tanh_inplace,
        add_inplace: ops::add_inplace,
        scale_inplace: ops::scale_inplace,
        f32_to_f16_row: ops::f32_to_f16_row,
        f16_to_f32_row: ops::f16_to_f32_row,
        attend_group: ops::attend_group,
        attend_tile: ops::attend_tile,
        attend_packed: ops::attend_packed,
        attn_tile_rows: 32,
    },
    gemm: GemmKernels::Rows(gemm::rows_times_tokens),
    float_panel: fgemm::float_panel,
};
