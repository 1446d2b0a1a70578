//! The float GEMM's panel kernel of this ISA (`cpu/fgemm.rs`).

/// The float GEMM's panel kernel: 2 tokens × 32 rows of accumulators
/// (`simd::fgemm::panel`, the bits of `fgemm::panel_ref`).
///
/// # Safety
/// The CPU supports this function's target features; `fgemm::FloatPanelFn`'s contract.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn float_panel(job: &crate::cpu::fgemm::PanelJob) {
    // SAFETY: this function's target features; 4 × Avx2F32's lanes = 32 rows; the caller's
    // contract.
    unsafe { crate::cpu::simd::fgemm::panel::<_, 4, 2>(crate::cpu::avx2::ops::Avx2F32::new(), job) }
}
