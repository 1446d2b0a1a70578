//! NVRTC compilation of the kernel sources, cached per process.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{CompileError, CompileOptions};

use crate::{CudaError, SourceFile};

/// Whether the NVRTC library can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: is_culib_present only tries dlopen on a list of library names and drops the
    // handles; it has no preconditions.
    *PRESENT.get_or_init(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
}

type PtxCache = Mutex<HashMap<(SourceFile, String), String>>;

fn cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// PTX text of `file` for a virtual architecture such as `"compute_90"`, compiled once per
/// process (later calls return the cached text).
pub fn compile_ptx(file: SourceFile, arch: &str) -> Result<String, CudaError> {
    let key = (file, arch.to_string());
    if let Some(ptx) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(ptx);
    }
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
        ],
        name: Some(file.file_name().to_string()),
        ..Default::default()
    };
    let program = file.program();
    // cudarc panics when a symbol is missing from the loaded library; turn that into an error.
    let result = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(program, opts)
    }))
    .map_err(|_| CudaError::NoNvrtc)?;
    let ptx = result.map_err(|e| CudaError::Compile {
        file: file.file_name(),
        arch: arch.to_string(),
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        },
    })?;
    let text = ptx.to_src();
    if let Ok(mut c) = cache().lock() {
        c.insert(key, text.clone());
    }
    Ok(text)
}
