//! The float GEMM's panel kernel of this ISA (`cpu/fgemm.rs`).

/// The float GEMM's panel kernel: 6 tokens × 32 rows of accumulators
/// (`simd::fgemm::panel`, the bits of `fgemm::panel_ref`).
///
/// # Safety
/// The CPU supports this function's target features; `fgemm::FloatPanelFn`'s contract.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn float_panel(job: &crate::cpu::fgemm::PanelJob) {
    // SAFETY: this function's target features; 2 × Avx512F32's lanes = 32 rows; the caller's
    // contract.
    unsafe {
        crate::cpu::simd::fgemm::panel::<_, 2, 6>(crate::cpu::avx512::ops::Avx512F32::new(), job)
    }
}
