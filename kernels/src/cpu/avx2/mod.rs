pub mod dot;
pub(crate) mod gemm;
pub mod ops;
