//! `tinyrt-cuda`: hand-written CUDA kernels for tinyrt, compiled with NVRTC and launched
//! through cudarc.
//!
//! - [`source`]: the `.cu` sources (embedded) and the one table of kernels ([`Kernel`]) with
//!   their names, source files and argument lists. Always compiled, so tools can inspect them.
//! - With feature `cuda`: `CudaDevice` (context, stream, NVRTC compilation cached per
//!   process and per context, device buffers), typed launch wrappers for every kernel, and
//!   CUDA graph capture/replay (`DeviceGraph`).
//!
//! Without the feature the device API is absent; without a driver or NVRTC at run time,
//! `CudaDevice::new` and the first compilation return [`CudaError::NoDriver`] /
//! [`CudaError::NoNvrtc`]; nothing panics.
//!
//! # A decode step with these kernels
//! hidden x (f32) → `rms_norm_q8_1` → `matvec_q8_1` for Q, K, V → `rope` (positions read from
//! device memory) → `kv_store_f16` → `attention` (split over the KV range, GQA, optional
//! sliding window) → `quantize_q8_1` → `matvec_q8_1` with `accumulate = true` (the residual
//! add) → `rms_norm_q8_1` → `matvec_glu_q8_1` (gate, up and SwiGLU/GeGLU in one launch) →
//! `quantize_q8_1` → `matvec_q8_1` accumulating → … → final norm → output `matvec_q8_1` →
//! `argmax`. Record it once with `CudaDevice::capture` and replay the graph every token after
//! writing the position (and token id, for `get_rows`) with `CudaDevice::write`; the test
//! `a_decode_layer_graph_matches_the_cpu_layer_over_several_tokens` in `cuda/tests/gpu/graph.rs`
//! does exactly this. Prefill: `matmul_q8_1_mma` (int8 tensor cores over Q8_1 activations,
//! Q4_0/Q4_1/Q5_0/Q8_0/IQ4_NL/Q4_K/Q5_K), `matmul` (f32 tiles) or `matmul_f16_mma` (f16 tensor cores)
//! over [ntok, ncols] activations, and `attention` with `ntok > 1`. The runtime's decode path
//! also uses the fused `rms_norm_f32_q8_1`, `matvec3_*` (Q, K and V in one launch) and
//! `rope_kv_store_*` (RoPE from a cos/sin table + KV-cache write, f16 or f32 cache).
//!
//! Weight formats: see [`WeightType`] (F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K,
//! IQ4_NL, NF4), as raw GGUF bytes; Q4_0 also in a planar layout for 128-bit loads.

mod error;
pub mod source;
mod weight;

pub use error::CudaError;
pub use source::{ArgKind, Kernel, SourceFile};
pub use weight::WeightType;

#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod graph;
#[cfg(feature = "cuda")]
mod launch;

/// The cudarc version this crate is built against (buffers, views and the raw driver API).
#[cfg(feature = "cuda")]
pub use cudarc;

#[cfg(feature = "cuda")]
pub use compile::{compile_ptx, nvrtc_available};
#[cfg(feature = "cuda")]
pub use device::{driver_available, CudaDevice, DeviceBuffer};
#[cfg(feature = "cuda")]
pub use graph::DeviceGraph;
#[cfg(feature = "cuda")]
pub use launch::{
    matvec_threads_per_row, AttentionShape, DevicePtrF32, GluActivation, KvElement, RopeKvShape,
    RopeMode, Q8_1_BLOCK_BYTES,
};
