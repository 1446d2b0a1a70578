//! AVX-512 F/BW/VL/DQ + VNNI kernels. (AVX-512 intrinsics are stable since Rust 1.89, the
//! workspace's `rust-version`.)

pub mod dot;
pub(crate) mod fgemm;
pub(crate) mod gemm;
pub mod ops;
pub(crate) mod repack;

use crate::cpu::{GemmKernels, Isa, Kernels, OpKernels, PanelGemm, RepackedGemm};

/// The avx512 table; [`Kernels::get`] hands it out only when the CPU supports [`Isa::Avx512`].
pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
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
        attn_tile_rows: 64,
    },
    gemm: GemmKernels::Panels(PanelGemm {
        one_token: gemm::rows_times_one_token,
        pack_fast: gemm::pack_panel_fast,
        transpose: gemm::transpose_codes,
        multiply: gemm::panel_times_tokens,
        repacked: Some(RepackedGemm {
            repack: repack::repack_rows,
            one_token: repack::repacked_times_one_token,
            pack: repack::pack_repacked,
            tokens: repack::repacked_times_tokens,
        }),
    }),
    float_panel: fgemm::float_panel,
};
