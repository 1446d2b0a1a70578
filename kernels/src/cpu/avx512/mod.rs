// AVX-512 intrinsics are stable since Rust 1.89 (above the workspace's declared 1.85).
#[clippy::msrv = "1.89"]
pub mod dot;
#[clippy::msrv = "1.89"]
pub(crate) mod gemm;
#[clippy::msrv = "1.89"]
pub mod ops;
