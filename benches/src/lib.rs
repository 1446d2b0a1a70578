//! Helpers shared by the tinyrt benchmarks: random weight matrices of any format and an arena
//! larger than the last-level cache, so that matrix × vector timings stream weights from memory
//! the way decode does instead of re-reading a cached copy.

use tinyrt_kernels::quant::{GgmlType, QuantFormat};

/// The seeded generator of the benchmarks' filler data (the workspace's one generator).
pub use tinyrt_kernels::rng::SplitMix64 as Rng;

/// Byte offsets of the f16 scale fields of one block (ggml-common.h layouts).
fn scale_offsets(fmt: QuantFormat) -> &'static [usize] {
    match fmt {
        QuantFormat::Nf4 => &[0],
        QuantFormat::Ggml(t) => match t {
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            _ => &[0],
        },
    }
}

/// `n_blocks` random blocks of `fmt` with small finite scales (speed does not depend on the
/// values, and quantizing hundreds of megabytes with the reference quantizers would take long).
pub fn random_blocks(fmt: QuantFormat, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let ts = fmt.type_size();
    let mut out = vec![0u8; n_blocks * ts];
    match fmt {
        QuantFormat::Ggml(GgmlType::F32) => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.unit_f32().to_le_bytes());
            }
        }
        QuantFormat::Ggml(GgmlType::F16) => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::f16::from_f32(rng.unit_f32()).to_bits().to_le_bytes());
            }
        }
        QuantFormat::Ggml(GgmlType::BF16) => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::bf16::from_f32(rng.unit_f32()).to_bits().to_le_bytes());
            }
        }
        _ => {
            for b in out.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            for blk in out.chunks_exact_mut(ts) {
                for &o in scale_offsets(fmt) {
                    let d = half::f16::from_f32(rng.unit_f32() * 0.01);
                    blk[o..o + 2].copy_from_slice(&d.to_bits().to_le_bytes());
                }
            }
        }
    }
    out
}

/// A large buffer of valid blocks of one format: any block-aligned window is a valid matrix.
pub struct Arena {
    pub fmt: QuantFormat,
    pub data: Vec<u8>,
    next: usize,
}

impl Arena {
    /// At least `min_bytes` bytes of `fmt` blocks (a random 4 MiB pattern, repeated).
    pub fn new(fmt: QuantFormat, min_bytes: usize, seed: u64) -> Arena {
        let ts = fmt.type_size();
        let pattern_blocks = (4 << 20) / ts;
        let pattern = random_blocks(fmt, pattern_blocks, &mut Rng(seed));
        let reps = min_bytes.div_ceil(pattern.len());
        let mut data = Vec::with_capacity(reps * pattern.len());
        for _ in 0..reps {
            data.extend_from_slice(&pattern);
        }
        Arena { fmt, data, next: 0 }
    }

    /// The next window of `len` bytes (a multiple of the block size), walking through the arena
    /// so that consecutive calls do not find the previous window in cache.
    pub fn next_window(&mut self, len: usize) -> &[u8] {
        assert!(len <= self.data.len(), "window larger than the arena");
        if self.next + len > self.data.len() {
            self.next = 0;
        }
        let start = self.next;
        self.next += len;
        &self.data[start..start + len]
    }

    /// The first window of `len` bytes (always the same: cache-resident when it fits).
    pub fn first_window(&self, len: usize) -> &[u8] {
        &self.data[..len]
    }
}
