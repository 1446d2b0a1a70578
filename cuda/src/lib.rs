//! `tinyrt-cuda`: hand-written CUDA kernels for tinyrt, compiled with NVRTC and launched
//! through cudarc.
//!
//! - [`source`]: the `.cu` sources (embedded) and the one table of kernels ([`Kernel`]) with
//!   their names, source files and argument lists. Always compiled, so tools can inspect them.
//! - With feature `cuda`: [`CudaDevice`] (context, stream, NVRTC compilation cached per
//!   process and per context, device buffers), typed launch wrappers for every kernel, and
//!   CUDA graph capture/replay ([`DeviceGraph`]).
//!
//! Without the feature (or without a driver at run time) [`CudaDevice::new`] is unavailable
//! or returns [`CudaError::NoDriver`]; nothing panics.

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

#[cfg(feature = "cuda")]
pub use compile::{compile_ptx, nvrtc_available};
#[cfg(feature = "cuda")]
pub use device::{driver_available, CudaDevice, DeviceBuffer};
#[cfg(feature = "cuda")]
pub use graph::DeviceGraph;
#[cfg(feature = "cuda")]
pub use launch::{
    matvec_threads_per_row, AttentionShape, DevicePtrF32, GluActivation, RopeMode, Q8_1_BLOCK_BYTES,
};
