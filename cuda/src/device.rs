//! The device: context, stream, modules and functions (loaded once per context), buffers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::{compile_ptx, CudaError, Kernel, SourceFile};

/// Device memory holding `len` values of `T`.
pub type DeviceBuffer<T> = CudaSlice<T>;

/// Whether the CUDA driver library (libcuda) can be loaded. cudarc (with dynamic loading)
/// panics at the first driver call when it cannot, so check this first.
pub fn driver_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: is_culib_present only tries dlopen on a list of library names and drops the
    // handles; it has no preconditions.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// One GPU: a context, the stream every launch goes to, and the kernels compiled for it.
///
/// All work is issued on one stream, in order; cudarc's per-buffer event tracking is turned
/// off (it would record events into captured graphs and costs a call per argument).
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    /// Compute capability as major * 10 + minor (90 for sm_90).
    sm: u32,
    name: String,
    modules: [OnceLock<Arc<CudaModule>>; SourceFile::COUNT],
    functions: Vec<OnceLock<CudaFunction>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

impl CudaDevice {
    /// Opens device `ordinal`. Errors (never panics) when there is no driver or no such device.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_available() {
            return Err(CudaError::NoDriver);
        }
        let no_device = |reason: String| CudaError::NoDevice { ordinal, reason };
        let ctx = catch_unwind(AssertUnwindSafe(|| CudaContext::new(ordinal)))
            .map_err(|_| CudaError::NoDriver)?
            .map_err(|e| no_device(e.to_string()))?;
        // SAFETY: every buffer of this device is used on `stream` only, so the stream order
        // already orders all reads and writes; no buffer exists yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let (major, minor) = ctx.compute_capability()?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".to_string());
        Ok(CudaDevice {
            ctx,
            stream,
            arch: format!("compute_{major}{minor}"),
            sm: (major * 10 + minor).max(0) as u32,
            name,
            modules: Default::default(),
            functions: (0..Kernel::COUNT).map(|_| OnceLock::new()).collect(),
        })
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// NVRTC's virtual architecture for this device, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Whether the tensor-core `mma.sync` kernel (`matmul_q8_1_mma`) can run:
    /// compute capability 8.0 (Ampere) or newer. Older devices get the f32 tiled kernels.
    pub fn supports_mma(&self) -> bool {
        self.sm >= 80
    }

    /// Number of streaming multiprocessors.
    pub fn multiprocessor_count(&self) -> Result<usize, CudaError> {
        use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        Ok(self
            .ctx
            .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all work issued so far.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize()?;
        Ok(())
    }

    /// Compiles (once per process) and loads (once per device) every source file, so that no
    /// compilation happens later, e.g. inside a graph capture.
    pub fn load_all(&self) -> Result<(), CudaError> {
        for k in Kernel::ALL {
            self.function(*k)?;
        }
        Ok(())
    }

    fn module(&self, file: SourceFile) -> Result<&Arc<CudaModule>, CudaError> {
        let cell = &self.modules[file.index()];
        if let Some(m) = cell.get() {
            return Ok(m);
        }
        let ptx = compile_ptx(file, &self.arch)?;
        let module = self.ctx.load_module(Ptx::from_src(ptx))?;
        Ok(cell.get_or_init(|| module))
    }

    /// The loaded function of `kernel`.
    pub(crate) fn function(&self, kernel: Kernel) -> Result<&CudaFunction, CudaError> {
        let cell = &self.functions[kernel.index()];
        if let Some(f) = cell.get() {
            return Ok(f);
        }
        let f = self.module(kernel.source())?.load_function(kernel.name())?;
        Ok(cell.get_or_init(|| f))
    }

    // ---- buffers ----

    /// A buffer of `len` zeroed values.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>, CudaError> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    /// A new buffer holding a copy of `data`.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        Ok(self.stream.clone_htod(data)?)
    }

    /// Copies `data` into the start of `dst` (which must be at least as long).
    pub fn write<T: DeviceRepr, D: DevicePtrMut<T>>(
        &self,
        data: &[T],
        dst: &mut D,
    ) -> Result<(), CudaError> {
        if dst.len() < data.len() {
            return Err(CudaError::BadArgument {
                kernel: "write",
                what: format!("{} values into a buffer of {}", data.len(), dst.len()),
            });
        }
        self.stream.memcpy_htod(data, dst)?;
        Ok(())
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone, S: DevicePtr<T>>(
        &self,
        src: &S,
    ) -> Result<Vec<T>, CudaError> {
        let v = self.stream.clone_dtoh(src)?;
        self.stream.synchronize()?;
        Ok(v)
    }

    /// Device-to-device copy of all of `src` into the start of `dst`.
    pub fn copy<T, S: DevicePtr<T>, D: DevicePtrMut<T>>(
        &self,
        src: &S,
        dst: &mut D,
    ) -> Result<(), CudaError> {
        if dst.len() < src.len() {
            return Err(CudaError::BadArgument {
                kernel: "copy",
                what: format!("{} values into a buffer of {}", src.len(), dst.len()),
            });
        }
        self.stream.memcpy_dtod(src, dst)?;
        Ok(())
    }

    /// Milliseconds the stream takes to run `f`'s work, measured with CUDA events.
    pub fn time_ms<F: FnOnce(&Self) -> Result<(), CudaError>>(
        &self,
        f: F,
    ) -> Result<f32, CudaError> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = self.ctx.new_event(Some(CU_EVENT_DEFAULT))?;
        let end = self.ctx.new_event(Some(CU_EVENT_DEFAULT))?;
        start.record(&self.stream)?;
        f(self)?;
        end.record(&self.stream)?;
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)?)
    }
}
