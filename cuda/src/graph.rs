//! CUDA graphs: record a sequence of launches once, replay it with one call.
//!
//! Kernels that must see per-step values (position, token id) read them from device memory,
//! so a decode step captured once replays unchanged: write the new values with
//! [`CudaDevice::write`], then [`DeviceGraph::replay`].

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use crate::{CudaDevice, CudaError};

/// An instantiated graph bound to its device's stream.
pub struct DeviceGraph {
    graph: CudaGraph,
}

// SAFETY: CUDA graph objects are not internally synchronized and must not be used from two
// threads at once; a DeviceGraph is not Sync, so moving it to another thread (a session moved
// to a worker) still leaves one owner using it at a time. cudarc binds the context to the
// calling thread before every launch and on drop, so no call depends on the creating thread.
unsafe impl Send for DeviceGraph {}

impl std::fmt::Debug for DeviceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGraph").finish_non_exhaustive()
    }
}

impl DeviceGraph {
    /// Launches the recorded work on the stream (asynchronously).
    pub fn replay(&self) -> Result<(), CudaError> {
        self.graph.launch()?;
        Ok(())
    }
}

impl CudaDevice {
    /// Records the launches `record` issues into a graph instead of running them. Every
    /// kernel is compiled and loaded before capture begins. Buffers used inside must outlive
    /// the graph, and nothing may be allocated inside `record`.
    pub fn capture<F: FnOnce(&Self) -> Result<(), CudaError>>(
        &self,
        record: F,
    ) -> Result<DeviceGraph, CudaError> {
        self.load_all()?;
        self.synchronize()?;
        self.stream()
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let recorded = record(self);
        // End the capture whatever happened, so the stream is usable again.
        let ended = self.stream().end_capture(CUgraphInstantiate_flags(0));
        recorded?;
        let graph = ended?
            .ok_or_else(|| CudaError::Driver("stream capture produced no graph".to_string()))?;
        Ok(DeviceGraph { graph })
    }
}
