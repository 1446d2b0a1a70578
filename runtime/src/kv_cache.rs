//! The key/value cache as every backend sees it: its shape and element type, and the memory
//! bound. The storage belongs to the backends (`backend::cpu::CpuKvCache`, device memory on
//! CUDA).
//!
//! The session checks once that a cache of the whole context fits the machine
//! ([`KvCacheSpec::checked_bytes`], [`memory_limit`]); the CPU storage then grows with the
//! positions written (f16 by default, like llama.cpp's), so a large `-c` costs only what the
//! work uses. Positions are written in order and never past `n_ctx` (the session checks the
//! context before any work).

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
