//! The key/value cache: its shape, element type, and the CPU storage.
//!
//! The session checks once that a cache of the whole context fits the machine
//! ([`KvCacheSpec::checked_bytes`], [`memory_limit`]); the CPU storage then grows with the
//! positions written (f16 by default, like llama.cpp's), so a large `-c` costs only what the
//! work uses. Positions are written in order and never past `n_ctx` (the session checks the
//! context before any work).

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
    /// Total bytes of keys and values (see [`KvCacheSpec::checked_bytes`] for a spec from
    /// user input).
    pub fn bytes(&self) -> usize {
        self.checked_bytes().unwrap_or(usize::MAX)
    }

    /// Total bytes of keys and values, `None` when the size overflows.
    pub fn checked_bytes(&self) -> Option<usize> {
        self.n_layer
            .checked_mul(self.n_ctx)?
            .checked_mul(self.k_width.checked_add(self.v_width)?)?
            .checked_mul(self.ty.bytes())
    }
}

/// The most bytes a new allocation of this process can have: the smaller of the memory the
/// kernel says is available (`MemAvailable`) and what the address-space limit (`ulimit -v`)
/// leaves. `None` when neither can be read (not Linux).
pub fn memory_limit() -> Option<u64> {
    let field = |text: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| field(&t, "MemAvailable:"));
    let address_space = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max address space"))?;
            // "Max address space  <soft> <hard> bytes"; "unlimited" parses as nothing.
            line["Max address space".len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map(|limit| {
            let used = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|t| field(&t, "VmSize:"))
                .unwrap_or(0);
            limit.saturating_sub(used)
        });
    match (available, address_space) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

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
