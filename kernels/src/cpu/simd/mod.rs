//! f32 kernels written once over the vector width, for the AVX2 and AVX-512 paths that differ
//! only in it. Each ISA keeps its `#[target_feature]` entry points (the names in its `KERNELS`
//! table); an entry calls a body here with its ISA's [`F32Vec`] token, and the body, its
//! closures and the token's methods are `#[inline(always)]`, so they are compiled inside the
//! entry with that ISA's features, as if written there.
//!
//! Where the two ISAs do a step differently (a horizontal sum, ggml's dot order, the exp
//! rescaling, a masked blend), the step is a method of [`F32Vec`] and each implementation keeps
//! its ISA's operations, so every result has the bits it had when each ISA had its own copy.
//! The methods with an ISA-specific reduction order say so.

pub(crate) mod attention;
pub(crate) mod fgemm;
pub(crate) mod ops;
pub(crate) mod packed;

use crate::cpu::attention::job::KvData;

/// One ISA's f32 vector operations. A value of the type is the proof that the CPU supports
/// that ISA's features, so the methods that touch no memory are safe.
///
/// # Safety
/// An implementation may hand out a value only where the CPU supports every feature its
/// methods use (its constructor is `unsafe` and says so).
pub(crate) unsafe trait F32Vec: Copy {
    /// `LANES` f32 lanes.
    type Reg: Copy;
    /// `LANES` i32 lanes.
    type Int: Copy;
    const LANES: usize;

    fn zero(self) -> Self::Reg;
    fn zero_int(self) -> Self::Int;
    fn splat(self, x: f32) -> Self::Reg;
    fn add(self, a: Self::Reg, b: Self::Reg) -> Self::Reg;
    fn sub(self, a: Self::Reg, b: Self::Reg) -> Self::Reg;
    fn mul(self, a: Self::Reg, b: Self::Reg) -> Self::Reg;
    fn div(self, a: Self::Reg, b: Self::Reg) -> Self::Reg;
    /// `maxps`: `b` where either is NaN.
    fn max(self, a: Self::Reg, b: Self::Reg) -> Self::Reg;
    /// `a * b + c`, one rounding.
    fn fmadd(self, a: Self::Reg, b: Self::Reg, c: Self::Reg) -> Self::Reg;
    /// `a * b - c`, one rounding.
    fn fmsub(self, a: Self::Reg, b: Self::Reg, c: Self::Reg) -> Self::Reg;
    /// `a * b - c` in even lanes, `a * b + c` in odd lanes, one rounding.
    fn fmaddsub(self, a: Self::Reg, b: Self::Reg, c: Self::Reg) -> Self::Reg;
    /// Each even lane copied into the odd lane above it.
    fn dup_even(self, a: Self::Reg) -> Self::Reg;
    /// Each odd lane copied into the even lane below it.
    fn dup_odd(self, a: Self::Reg) -> Self::Reg;
    /// Lanes `2k` and `2k + 1` swapped.
    fn swap_pairs(self, a: Self::Reg) -> Self::Reg;
    /// Lanes `n..` set to 0 (`n < LANES`).
    fn zero_tail(self, a: Self::Reg, n: usize) -> Self::Reg;
    /// `|a|` (the sign bit cleared).
    fn abs(self, a: Self::Reg) -> Self::Reg;
    /// `x` in the lanes where `a < b` (ordered: not where either is NaN), `y` elsewhere.
    fn select_lt(self, a: Self::Reg, b: Self::Reg, x: Self::Reg, y: Self::Reg) -> Self::Reg;
    /// `c` in the lanes where `a == b` (ordered), `a` elsewhere.
    fn replace_eq(self, a: Self::Reg, b: Self::Reg, c: Self::Reg) -> Self::Reg;
    /// Whether any lane of `a` differs from `b`'s (NaN differs).
    fn any_ne(self, a: Self::Reg, b: Self::Reg) -> bool;
    /// `1 / a`, and 0 where `a == 0`.
    fn recip_or_zero(self, a: Self::Reg) -> Self::Reg;
    /// `s` in the lanes where `lo <= key < hi`, `fill` elsewhere.
    fn keep_keys(
        self,
        s: Self::Reg,
        fill: Self::Reg,
        key: i32,
        lo: Self::Int,
        hi: Self::Int,
    ) -> Self::Reg;

    /// Sum of the lanes, in this ISA's reduction order.
    fn reduce_add(self, a: Self::Reg) -> f32;
    /// f64 sum of `f(chunk)` over `x`, each chunk (zeros past the end) widened to f64, in this
    /// ISA's order.
    fn sum_f64(self, x: &[f32], f: impl Fn(Self::Reg) -> Self::Reg) -> f64;
    /// `scalar::dot_ggml` of one query head and one key row held in vectors.
    fn dot_ggml_nv<const NV: usize>(self, q: &[Self::Reg; NV], k: &[Self::Reg; NV]) -> f32;
    /// `scalar::dot_ggml` over slices of a multiple of `LANES` values.
    fn dot_ggml_slice(self, q: &[f32], k: &[f32]) -> f32;

    /// `scalar::expf_ggml_v`, bit for bit.
    fn exp_ggml(self, a: Self::Reg) -> Self::Reg;
    /// libm's `expf` of each lane.
    fn exp_libm(self, a: Self::Reg) -> Self::Reg;
    /// Each lane rounded to the nearest f16 (ties to even) and back.
    fn round_f16(self, a: Self::Reg) -> Self::Reg;
    /// `scalar::gelu_tanh_ggml` of each lane.
    fn gelu_tanh_ggml(self, a: Self::Reg) -> Self::Reg;
    /// `dst[i] = f16 → f32 of src[i]` over `src.len().min(dst.len())` values.
    fn f16_to_f32_row(self, src: &[u16], dst: &mut [f32]);

    /// `qt[d * rp + r] = q[r * hd + d]` for `r < rows`, `d < hd`.
    ///
    /// # Safety
    /// `rows <= rp`, `rp % LANES == 0`, `q.len() >= rows * hd`, `qt.len() >= hd * rp`.
    unsafe fn transpose_in(self, q: &[f32], rows: usize, hd: usize, qt: &mut [f32], rp: usize);
    /// `out[r * hd + d] = acc[d * rp + r] * inv[r]` for `r < rows`, `d < hd`.
    ///
    /// # Safety
    /// `rows <= rp`, `rp % LANES == 0`, `acc.len() >= hd * rp`, `inv.len() >= rp`,
    /// `out.len() >= rows * hd`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn transpose_out(
        self,
        acc: &[f32],
        rp: usize,
        inv: &[f32],
        rows: usize,
        hd: usize,
        out: &mut [f32],
    );

    /// Lanes `i..i + LANES` of `x`, zeros past its end.
    ///
    /// # Safety
    /// `i < x.len()`.
    unsafe fn load(self, x: &[f32], i: usize) -> Self::Reg;
    /// Stores the lanes into `x[i..]`, as many as fit.
    ///
    /// # Safety
    /// `i < x.len()`.
    unsafe fn store(self, x: &mut [f32], i: usize, a: Self::Reg);
    /// # Safety
    /// `p..p + LANES` is readable.
    unsafe fn loadu(self, p: *const f32) -> Self::Reg;
    /// # Safety
    /// `p..p + LANES` is writable.
    unsafe fn storeu(self, p: *mut f32, a: Self::Reg);
    /// `LANES` f16 values at `p`, as f32.
    ///
    /// # Safety
    /// `p..p + LANES` is readable.
    unsafe fn loadu_f16(self, p: *const u16) -> Self::Reg;
    /// # Safety
    /// `p..p + LANES` is readable.
    unsafe fn loadu_i32(self, p: *const i32) -> Self::Int;
}

/// Copies `dst.len()` cache values from `off` into `dst` as f32.
#[inline(always)]
pub(crate) fn load_kv_row<V: F32Vec>(v: V, data: &KvData, off: usize, dst: &mut [f32]) {
    match data {
        KvData::F32(d) => dst.copy_from_slice(&d[off..off + dst.len()]),
        KvData::F16(d) => v.f16_to_f32_row(&d[off..off + dst.len()], dst),
    }
}
