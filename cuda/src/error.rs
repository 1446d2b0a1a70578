//! The crate's error type.

/// Everything that can go wrong on the CUDA side, as a value.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// `libcuda.so.1` could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver: libcuda could not be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    /// `libnvrtc.so` could not be loaded.
    #[error("no NVRTC: libnvrtc could not be loaded (install the CUDA toolkit or put its lib folder on LD_LIBRARY_PATH)")]
    NoNvrtc,
    /// The driver loaded but reports no usable device with this ordinal.
    #[error("no CUDA device {ordinal}: {reason}")]
    NoDevice { ordinal: usize, reason: String },
    /// A driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(String),
    /// NVRTC rejected a kernel source (a bug in tinyrt, or an NVRTC too old for the device).
    #[error("NVRTC failed to compile {file} for {arch}: {log}")]
    Compile {
        file: &'static str,
        arch: String,
        log: String,
    },
    /// A launch wrapper was handed buffers or sizes that do not fit the kernel.
    #[error("{kernel}: {what}")]
    BadArgument { kernel: &'static str, what: String },
}

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}
