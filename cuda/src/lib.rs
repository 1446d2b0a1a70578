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
//! # What the runtime calls
//! `tinyrt`'s CUDA backend (`runtime/src/backend/cuda/`) is the one user of these wrappers.
//! At load: `upload` of every weight, `repack_q4_0_planar` (a planar copy of each Q4_0 matrix
//! for 128-bit loads) and `load_all` (every kernel compiled before the first token).
//!
//! Decode (one token), recorded and run at the next sync point as one captured graph:
//! `get_rows` (embedding) → `rms_norm_f32_q8_1` (the normalised row and its Q8_1 copy) →
//! `matvec3_q8_1` (Q, K and V in one launch) → `rope_kv_store` (RoPE of Q and K from a
//! cos/sin table, and the KV-cache write, f16 or f32 cache) → `attention_q8_1` (split over
//! the KV range, GQA, optional sliding window; the combine pass also writes the Q8_1 input of
//! the output projection) → `matvec_q8_1` with `accumulate` (projection + residual add) →
//! `rms_norm_f32_q8_1` → `matvec_glu_q8_1` (gate, up and SwiGLU/GeGLU) → `quantize_q8_1` →
//! `matvec_q8_1` accumulating → … → final norm → output `matvec_q8_1` or
//! `matvec_q4_0_planar` → `argmax`. Where a fusion does not apply (`TINYRT_CUDA_FUSE=0`,
//! other shapes or types): `rms_norm`, `quantize_q8_1`, `matvec_q8_1`,
//! `matvec_q4_0_planar`, `matvec_f32_input` (F32/F16 weights), `rope_cached`, `kv_store`,
//! `attention`, `swiglu`/`geglu`, `add`.
//!
//! Prefill (many tokens), launched at once: `get_rows`, `rms_norm`, `quantize_q8_1` +
//! `matmul_q8_1_mma` (int8 tensor cores, compute capability 8.0+, the types of
//! [`Kernel::matmul_mmq`]; `TINYRT_CUDA_MMQ=0` or other types: `matmul`, f32 tiles),
//! `rope_cached`, `kv_store`, `attention` with `ntok > 1`, `swiglu`/`geglu`, `add`.
//! Either path, after each product whose weight has a LoRA term of the session: `lora_down`
//! (`t = A·x`) and `lora_up` (`out += s·B·t`).
//! Either path, by architecture: `layer_norm`, `add_rows` (biases), `scale`, `gelu`, `copy`.
//! Encoders (BERT), launched at once: `attention_packed` (bidirectional attention of packed
//! sequences, boundaries in device memory), `pool_rows` (mean / first / last row per
//! sequence), `gelu_erf`, besides `get_rows`, `layer_norm` (with bias), `matmul`, `add_rows`.
//!
//! Not on those paths: `rms_norm_q8_1` and `rope` (angles computed on the device) serve the
//! GPU tests' hand-built decode layer (`cuda/tests/gpu/graph.rs`) and `gpu_bench`;
//! `matvec_q8_1_tpr` is `matvec_q8_1` with a chosen number of threads per row, for the bench.
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
    matvec_threads_per_row, AttentionShape, DevicePtrF32, GluActivation, KvElement,
    PackedAttentionShape, PoolMode, RopeKvShape, RopeMode, LORA_MAX_RANK, Q8_1_BLOCK_BYTES,
};
