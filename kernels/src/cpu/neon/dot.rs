//! NEON dot products of the legacy formats (32-value blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with
//! Q8_0 / Q8_1 activations; IQ4_NL and NF4 through a `tbl` lookup of their levels) and the read
//! probe. Each block's integer sum is formed in vector registers (exact), then the block goes
//! into the float sum with the scalar reference's operations in its order (`quant/legacy.rs`,
//! `quant/lut4.rs`), so the results are the reference's bits. The dotprod forms differ only in
//! the integer sum (`sdot`). Layouts: ggml-common.h.

use std::arch::aarch64::*;

use half::f16;

use super::gemm::sdot;
use crate::cpu::scalar::dot as scalar;
use crate::cpu::{dot_entry, VecDotEntry};
use crate::quant::{GgmlType, QuantFormat, KVALUES_IQ4NL, KVALUES_NF4};

/// The table rows of one tier: its own kernels for the legacy formats, the scalar references
/// for the rest.
macro_rules! table {
    ($q4_0:ident, $q4_1:ident, $q5_0:ident, $q5_1:ident, $q8_0:ident, $iq4:ident, $nf4:ident) => {
        &[
            dot_entry(GgmlType::F32, GgmlType::F32, scalar::vec_dot_f32),
            dot_entry(GgmlType::F16, GgmlType::F32, scalar::vec_dot_f16_f32),
            dot_entry(GgmlType::BF16, GgmlType::F32, scalar::vec_dot_bf16_f32),
            dot_entry(GgmlType::Q4_0, GgmlType::Q8_0, $q4_0),
            dot_entry(GgmlType::Q4_1, GgmlType::Q8_1, $q4_1),
            dot_entry(GgmlType::Q5_0, GgmlType::Q8_0, $q5_0),
            dot_entry(GgmlType::Q5_1, GgmlType::Q8_1, $q5_1),
            dot_entry(GgmlType::Q8_0, GgmlType::Q8_0, $q8_0),
            dot_entry(GgmlType::Q2_K, GgmlType::Q8_K, scalar::vec_dot_q2_k_q8_k),
            dot_entry(GgmlType::Q3_K, GgmlType::Q8_K, scalar::vec_dot_q3_k_q8_k),
            dot_entry(GgmlType::Q4_K, GgmlType::Q8_K, scalar::vec_dot_q4_k_q8_k),
            dot_entry(GgmlType::Q5_K, GgmlType::Q8_K, scalar::vec_dot_q5_k_q8_k),
            dot_entry(GgmlType::Q6_K, GgmlType::Q8_K, scalar::vec_dot_q6_k_q8_k),
            dot_entry(GgmlType::IQ4_NL, GgmlType::Q8_0, $iq4),
            VecDotEntry {
                weight: QuantFormat::Nf4,
                act: GgmlType::Q8_0,
                f: $nf4,
                f4: None,
            },
        ]
    };
}

/// The NEON kernel table.
pub(crate) const VEC_DOTS: &[VecDotEntry] = table!(
    vec_dot_q4_0_q8_0,
    vec_dot_q4_1_q8_1,
    vec_dot_q5_0_q8_0,
    vec_dot_q5_1_q8_1,
    vec_dot_q8_0_q8_0,
    vec_dot_iq4_nl_q8_0,
    vec_dot_nf4_q8_0
);

/// The NEON + dotprod kernel table.
pub(crate) const VEC_DOTS_DOTPROD: &[VecDotEntry] = table!(
    vec_dot_q4_0_q8_0_dotprod,
    vec_dot_q4_1_q8_1_dotprod,
    vec_dot_q5_0_q8_0_dotprod,
    vec_dot_q5_1_q8_1_dotprod,
    vec_dot_q8_0_q8_0_dotprod,
    vec_dot_iq4_nl_q8_0_dotprod,
    vec_dot_nf4_q8_0_dotprod
);

/// The f16 at `p` as f32 (the reference's conversion).
///
/// # Safety
/// `p..p + 2` is readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller's contract.
    f16::from_bits(u16::from_le_bytes(unsafe { [*p, *p.add(1)] })).to_f32()
}

/// Σ w·y of 32 int8 weights (two vectors) and 32 int8 activations, exact: NEON widening
/// products, or `sdot` with `DP`.
///
/// # Safety
/// With `DP`, the CPU supports `dotprod`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot32<const DP: bool>(w: [int8x16_t; 2], y: [int8x16_t; 2]) -> i32 {
    if DP {
        // SAFETY: the caller's contract.
        unsafe { vaddvq_s32(sdot(sdot(vdupq_n_s32(0), w[0], y[0]), w[1], y[1])) }
    } else {
        // |w·y| ≤ 128 · 128: each i16 product is exact; pairs are summed in i32.
        let mut acc = vdupq_n_s32(0);
        for k in 0..2 {
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w[k]), vget_low_s8(y[k])));
            acc = vpadalq_s16(acc, vmull_high_s8(w[k], y[k]));
        }
        vaddvq_s32(acc)
    }
}

/// The 32 nibbles of 16 bytes at `p`: low nibbles (values 0..16), then high (16..32).
///
/// # Safety
/// `p..p + 16` is readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    // SAFETY: the caller's contract.
    let v = unsafe { vld1q_u8(p) };
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// 0x10 in byte `j` where bit `j` of the little-endian u32 at `p` is set, for `j` in 0..32.
///
/// # Safety
/// `p..p + 4` is readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn high_bits(p: *const u8) -> [uint8x16_t; 2] {
    // SAFETY: the caller's contract.
    let qh = u32::from_le_bytes(unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] });
    let bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    const IDX: [[u8; 16]; 2] = [
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
        [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
    ];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: the constants are 16 bytes each.
    let bit = unsafe { vld1q_u8(BIT.as_ptr()) };
    IDX.map(|idx| {
        // SAFETY: as above.
        let spread = vqtbl1q_u8(bytes, unsafe { vld1q_u8(idx.as_ptr()) });
        vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10))
    })
}

/// The 32 int8 activations of the Q8_0 / Q8_1 block at `p` (values at offset `at`).
///
/// # Safety
/// `p + at .. p + at + 32` is readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn acts(p: *const u8, at: usize) -> [int8x16_t; 2] {
    // SAFETY: the caller's contract.
    unsafe { [vld1q_s8(p.add(at).cast()), vld1q_s8(p.add(at + 16).cast())] }
}

#[inline]
#[target_feature(enable = "neon")]
fn sub_u8(v: [uint8x16_t; 2], o: u8) -> [int8x16_t; 2] {
    v.map(|x| vreinterpretq_s8_u8(vsubq_u8(x, vdupq_n_u8(o))))
}

#[inline]
#[target_feature(enable = "neon")]
fn as_s8(v: [uint8x16_t; 2]) -> [int8x16_t; 2] {
    v.map(|x| vreinterpretq_s8_u8(x))
}

/// The levels `table[nibble]` of the 16 bytes at `p` (low nibbles then high).
///
/// # Safety
/// `p..p + 16` is readable.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn lut(p: *const u8, table: &[i8; 16]) -> [int8x16_t; 2] {
    // SAFETY: the caller's contract; the table has 16 bytes.
    let (n, t) = unsafe { (nibbles(p), vld1q_s8(table.as_ptr())) };
    n.map(|i| vqtbl1q_s8(t, i))
}

/// The bodies, written once for both tiers (`DP`: `sdot`).
mod body {
    use super::*;

    /// # Safety
    /// `w`, `a` hold `n / 32` blocks; with `DP` the CPU supports `dotprod`.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn q4_0<const DP: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 18 && a.len() >= nb * 34);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: block i lies within both rows (asserted above); the caller's contract.
            unsafe {
                let (x, y) = (w.as_ptr().add(18 * i), a.as_ptr().add(34 * i));
                let sumi = dot32::<DP>(sub_u8(nibbles(x.add(2)), 8), acts(y, 2));
                sumf += sumi as f32 * f16_at(x) * f16_at(y);
            }
        }
        sumf
    }

    /// # Safety
    /// As [`q4_0`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn q4_1<const DP: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 20 && a.len() >= nb * 36);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: as in `q4_0`.
            unsafe {
                let (x, y) = (w.as_ptr().add(20 * i), a.as_ptr().add(36 * i));
                let sumi = dot32::<DP>(as_s8(nibbles(x.add(4))), acts(y, 4));
                sumf += (f16_at(x) * f16_at(y)) * sumi as f32 + f16_at(x.add(2)) * f16_at(y.add(2));
            }
        }
        sumf
    }

    /// # Safety
    /// As [`q4_0`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn q5_0<const DP: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 22 && a.len() >= nb * 34);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: as in `q4_0`.
            unsafe {
                let (x, y) = (w.as_ptr().add(22 * i), a.as_ptr().add(34 * i));
                let (lo, hb) = (nibbles(x.add(6)), high_bits(x.add(2)));
                let q = [vorrq_u8(lo[0], hb[0]), vorrq_u8(lo[1], hb[1])];
                let sumi = dot32::<DP>(sub_u8(q, 16), acts(y, 2));
                sumf += (f16_at(x) * f16_at(y)) * sumi as f32;
            }
        }
        sumf
    }

    /// # Safety
    /// As [`q4_0`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn q5_1<const DP: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 24 && a.len() >= nb * 36);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: as in `q4_0`.
            unsafe {
                let (x, y) = (w.as_ptr().add(24 * i), a.as_ptr().add(36 * i));
                let (lo, hb) = (nibbles(x.add(8)), high_bits(x.add(4)));
                let q = [vorrq_u8(lo[0], hb[0]), vorrq_u8(lo[1], hb[1])];
                let sumi = dot32::<DP>(as_s8(q), acts(y, 4));
                sumf += (f16_at(x) * f16_at(y)) * sumi as f32 + f16_at(x.add(2)) * f16_at(y.add(2));
            }
        }
        sumf
    }

    /// # Safety
    /// As [`q4_0`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn q8_0<const DP: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 34 && a.len() >= nb * 34);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: as in `q4_0`.
            unsafe {
                let (x, y) = (w.as_ptr().add(34 * i), a.as_ptr().add(34 * i));
                let sumi = dot32::<DP>(acts(x, 2), acts(y, 2));
                sumf += sumi as f32 * (f16_at(x) * f16_at(y));
            }
        }
        sumf
    }

    /// IQ4_NL or NF4 (`table`: the 16 levels) · Q8_0.
    ///
    /// # Safety
    /// As [`q4_0`].
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn lut4<const DP: bool>(
        n: usize,
        w: &[u8],
        a: &[u8],
        table: &[i8; 16],
    ) -> f32 {
        let nb = n / 32;
        assert!(w.len() >= nb * 18 && a.len() >= nb * 34);
        let mut sumf = 0.0f32;
        for i in 0..nb {
            // SAFETY: as in `q4_0`.
            unsafe {
                let (x, y) = (w.as_ptr().add(18 * i), a.as_ptr().add(34 * i));
                let sumi = dot32::<DP>(lut(x.add(2), table), acts(y, 2));
                let d = f16_at(x) * f16_at(y);
                sumf += d * sumi as f32;
            }
        }
        sumf
    }
}

/// Defines the NEON and the dotprod entry of one body.
macro_rules! entries {
    ($(#[$doc:meta])* $neon:ident, $dp:ident, |$n:ident, $w:ident, $a:ident, $D:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// See [`crate::cpu::VecDotFn`]; the CPU supports NEON.
        #[target_feature(enable = "neon")]
        pub unsafe fn $neon($n: usize, $w: &[u8], $a: &[u8]) -> f32 {
            const $D: bool = false;
            // SAFETY: the caller's contract.
            unsafe { $body }
        }

        $(#[$doc])*
        /// With `sdot`.
        ///
        /// # Safety
        /// See [`crate::cpu::VecDotFn`]; the CPU supports NEON and `dotprod`.
        #[target_feature(enable = "neon,dotprod")]
        pub unsafe fn $dp($n: usize, $w: &[u8], $a: &[u8]) -> f32 {
            const $D: bool = true;
            // SAFETY: the caller's contract.
            unsafe { $body }
        }
    };
}

entries!(
    /// Q4_0 · Q8_0.
    vec_dot_q4_0_q8_0, vec_dot_q4_0_q8_0_dotprod, |n, w, a, D| body::q4_0::<D>(n, w, a)
);
entries!(
    /// Q4_1 · Q8_1.
    vec_dot_q4_1_q8_1, vec_dot_q4_1_q8_1_dotprod, |n, w, a, D| body::q4_1::<D>(n, w, a)
);
entries!(
    /// Q5_0 · Q8_0.
    vec_dot_q5_0_q8_0, vec_dot_q5_0_q8_0_dotprod, |n, w, a, D| body::q5_0::<D>(n, w, a)
);
entries!(
    /// Q5_1 · Q8_1.
    vec_dot_q5_1_q8_1, vec_dot_q5_1_q8_1_dotprod, |n, w, a, D| body::q5_1::<D>(n, w, a)
);
entries!(
    /// Q8_0 · Q8_0.
    vec_dot_q8_0_q8_0, vec_dot_q8_0_q8_0_dotprod, |n, w, a, D| body::q8_0::<D>(n, w, a)
);
entries!(
    /// IQ4_NL · Q8_0.
    vec_dot_iq4_nl_q8_0, vec_dot_iq4_nl_q8_0_dotprod,
    |n, w, a, D| body::lut4::<D>(n, w, a, &KVALUES_IQ4NL)
);
entries!(
    /// NF4 · Q8_0.
    vec_dot_nf4_q8_0, vec_dot_nf4_q8_0_dotprod,
    |n, w, a, D| body::lut4::<D>(n, w, a, &KVALUES_NF4)
);

/// XOR of the 64-bit words of `data` with 128-bit loads (see
/// [`crate::cpu::Kernels::read_probe`]); a tail of fewer than 8 bytes is ignored.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub unsafe fn read_probe(data: &[u8]) -> u64 {
    let mut acc = vdupq_n_u64(0);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` has 16 bytes.
        acc = veorq_u64(acc, unsafe { vld1q_u64(c.as_ptr().cast()) });
    }
    let mut x = vgetq_lane_u64::<0>(acc) ^ vgetq_lane_u64::<1>(acc);
    // Little-endian words, as the scalar probe reads them.
    x ^= scalar::read_probe(chunks.remainder());
    x
}
