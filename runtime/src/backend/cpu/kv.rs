//! The CPU backend's KV cache: one key and one value matrix per layer in host memory, grown as
//! positions are written (the backend-neutral spec and the memory bound are in
//! `crate::kv_cache`).

use crate::kernels::cpu::ops::{self, KvData};
use crate::kernels::cpu::Isa;
use crate::kv_cache::{KvCacheSpec, KvType};

/// Rows of one layer's keys or values, `n_ctx × width`.
#[derive(Clone, Debug)]
pub enum KvRows {
    /// IEEE half-precision bit patterns.
    F16(Vec<u16>),
    F32(Vec<f32>),
}

/// Positions the CPU storage grows by at least (then by doubling).
const GROW_POSITIONS: usize = 256;

impl KvRows {
    fn new(ty: KvType) -> KvRows {
        match ty {
            KvType::F16 => KvRows::F16(Vec::new()),
            KvType::F32 => KvRows::F32(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            KvRows::F16(d) => d.len(),
            KvRows::F32(d) => d.len(),
        }
    }

    /// Grows the rows to hold at least `len` elements (at most `cap`).
    fn reserve_to(&mut self, len: usize, step: usize, cap: usize) {
        let have = self.len();
        if len <= have {
            return;
        }
        let new_len = len.max(have * 2).max(step).min(cap).max(len);
        match self {
            KvRows::F16(d) => d.resize(new_len, 0),
            KvRows::F32(d) => d.resize(new_len, 0.0),
        }
    }

    /// Write `src` starting at element `at` (rounded to f16 for an f16 cache); the rows must
    /// hold it ([`CpuKvCache::reserve`]).
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
    /// An empty cache of `spec` (nothing allocated until positions are written).
    pub fn new(spec: KvCacheSpec) -> CpuKvCache {
        CpuKvCache {
            spec,
            k: (0..spec.n_layer).map(|_| KvRows::new(spec.ty)).collect(),
            v: (0..spec.n_layer).map(|_| KvRows::new(spec.ty)).collect(),
        }
    }

    /// Makes room in `layer` for positions `..end` (at most `n_ctx`).
    pub fn reserve(&mut self, layer: usize, end: usize) {
        let s = self.spec;
        let end = end.min(s.n_ctx);
        self.k[layer].reserve_to(
            end * s.k_width,
            GROW_POSITIONS * s.k_width,
            s.n_ctx * s.k_width,
        );
        self.v[layer].reserve_to(
            end * s.v_width,
            GROW_POSITIONS * s.v_width,
            s.n_ctx * s.v_width,
        );
    }
}
