//! The key/value cache: its shape, element type, and the CPU storage.
//!
//! The cache is preallocated for the whole context once per session (f16 by default, like
//! llama.cpp's); positions are written in order and never past `n_ctx` (the session checks
//! the context before any work).

use crate::kernels::cpu::ops::{self, KvData};
use crate::kernels::cpu::Isa;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            other => Err(format!(
                "unknown KV cache type {other:?} (expected f16 or f32)"
            )),
        }
    }
}

/// Shape of a session's KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheSpec {
    pub n_layer: usize,
    /// Positions held per layer.
    pub n_ctx: usize,
    /// Width of one position's keys (`n_head_kv * head_dim_k`).
    pub k_width: usize,
    /// Width of one position's values (`n_head_kv * head_dim_v`).
    pub v_width: usize,
    pub ty: KvType,
}

impl KvCacheSpec {
    /// Total bytes of keys and values.
    pub fn bytes(&self) -> usize {
        self.n_layer * self.n_ctx * (self.k_width + self.v_width) * self.ty.bytes()
    }
}

/// Rows of one layer's keys or values, `n_ctx × width`.
#[derive(Clone, Debug)]
pub enum KvRows {
    /// IEEE half-precision bit patterns.
    F16(Vec<u16>),
    F32(Vec<f32>),
}

impl KvRows {
    fn new(ty: KvType, len: usize) -> KvRows {
        match ty {
            KvType::F16 => KvRows::F16(vec![0; len]),
            KvType::F32 => KvRows::F32(vec![0.0; len]),
        }
    }

    /// Write `src` starting at element `at` (rounded to f16 for an f16 cache).
    pub fn write(&mut self, isa: Isa, at: usize, src: &[f32]) {
        match self {
            KvRows::F16(d) => ops::f32_to_f16_row(isa, src, &mut d[at..at + src.len()]),
            KvRows::F32(d) => d[at..at + src.len()].copy_from_slice(src),
        }
    }

    /// The kernels' view of these rows.
    pub fn data(&self) -> KvData<'_> {
        match self {
            KvRows::F16(d) => KvData::F16(d),
            KvRows::F32(d) => KvData::F32(d),
        }
    }
}

/// A KV cache in host memory: one key and one value matrix per layer.
#[derive(Clone, Debug)]
pub struct CpuKvCache {
    pub spec: KvCacheSpec,
    pub k: Vec<KvRows>,
    pub v: Vec<KvRows>,
}

impl CpuKvCache {
    pub fn new(spec: KvCacheSpec) -> CpuKvCache {
        CpuKvCache {
            spec,
            k: (0..spec.n_layer)
                .map(|_| KvRows::new(spec.ty, spec.n_ctx * spec.k_width))
                .collect(),
            v: (0..spec.n_layer)
                .map(|_| KvRows::new(spec.ty, spec.n_ctx * spec.v_width))
                .collect(),
        }
    }
}
