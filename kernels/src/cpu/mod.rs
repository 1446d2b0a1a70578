//! CPU kernels. One folder per ISA (`scalar/`, `avx2/`, `avx512/`) with the same function names
//! in each; the ISA is chosen at run time (never with `target-cpu`), so a stock build reaches the
//! fastest path the CPU has.
//!
//! # Dot products and matrix products
//! [`Kernels`] is the table of one ISA: for each weight format its dot-product kernel and the
//! activation type it consumes (ggml's `vec_dot_type`: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/NF4,
//! Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F32 for F32/F16/BF16), plus the activation
//! converters. [`Kernels::get`] hands out a table only when the CPU supports its ISA;
//! [`Kernels::best`] is the process default ([`Isa::default_for_process`]). The matrix products
//! ([`matmul`]) and the thread pool ([`pool`]) sit on top. The matrix products of Q4_0, Q4_1,
//! Q5_0, Q8_0, IQ4_NL, Q4_K and Q6_K take a GEMM instead of the dot products, on every ISA
//! with the same float operations (`gemm.rs` on AVX-512, `gemm_rows.rs` on scalar and AVX2),
//! so their results are the same bits everywhere.
//!
//! | format | scalar | AVX2 | AVX-512 VNNI |
//! | --- | --- | --- | --- |
//! | F32, F16, BF16 (· F32) | reference | FMA | FMA, 512-bit |
//! | Q4_0, Q5_0, Q8_0, IQ4_NL (· Q8_0) | reference | `maddubs` | `vpdpbusd`, 2 blocks / register |
//! | Q4_1, Q5_1 (· Q8_1) | reference | `maddubs` | `vpdpbusd`, 2 blocks / register |
//! | NF4 (· Q8_0) | reference | `maddubs` | `vpdpbusd`, 2 blocks / register (IQ4_NL's, another table) |
//! | Q4_K, Q5_K, Q6_K (· Q8_K) | reference | `maddubs` | `vpdpbusd`, 64 values / register |
//! | Q2_K, Q3_K (· Q8_K) | reference | scalar reference | scalar reference |
//!
//! The scalar dot products are the references of [`crate::quant`]. The activation quantizers
//! (Q8_0, Q8_1, Q8_K) give the same bytes on every ISA; Q8_0/Q8_1 follow what llama.cpp runs on
//! x86 (`127/amax`, round half to even), Q8_K is ggml's reference (see `scalar/dot.rs`).

use std::sync::OnceLock;

use crate::quant::{GgmlType, QuantFormat};

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub(crate) mod gemm;
pub(crate) mod gemm_rows;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod scalar;

pub use matmul::{MatmulError, MatmulJob, QMatrix, QuantizedActs};
pub use pool::ThreadPool;

/// An instruction-set level with its own kernel implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ + VNNI (on top of everything AVX2 needs).
    Avx512,
}

impl Isa {
    /// Every ISA, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the kernels of `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The ISAs this CPU supports, slowest first (tests check every one of them).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The fastest ISA this CPU supports.
    pub fn detect() -> Isa {
        Isa::available()
            .into_iter()
            .next_back()
            .unwrap_or(Isa::Scalar)
    }

    /// The ISA `TINYRT_ISA=scalar|avx2|avx512` asks for: `Ok(None)` when it is unset, an error
    /// (for the caller to report: the CLI exits with status 2) when it names no ISA or one this
    /// CPU lacks.
    pub fn from_env() -> Result<Option<Isa>, String> {
        let Some(v) = std::env::var_os("TINYRT_ISA") else {
            return Ok(None);
        };
        let v = v.to_string_lossy();
        if v.is_empty() {
            return Ok(None);
        }
        match Isa::from_name(&v) {
            Some(isa) if isa.is_supported() => Ok(Some(isa)),
            Some(isa) => Err(format!(
                "TINYRT_ISA={}: this CPU does not support the {} kernels (it has: {})",
                isa.name(),
                isa.name(),
                Isa::available()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Err(format!(
                "unknown TINYRT_ISA={:?} (expected scalar, avx2 or avx512)",
                v.escape_debug().to_string()
            )),
        }
    }

    /// The process default: `TINYRT_ISA` when it names a supported ISA ([`Isa::from_env`]),
    /// otherwise [`Isa::detect`]. Computed once. Programs check [`Isa::from_env`] first and
    /// report a bad value (the `tinyrt` CLI does, with exit status 2).
    pub fn default_for_process() -> Isa {
        static DEFAULT: OnceLock<Isa> = OnceLock::new();
        *DEFAULT.get_or_init(|| Isa::from_env().ok().flatten().unwrap_or_else(Isa::detect))
    }
}

/// A dot product of `n` values: a weight row `w` (ggml layout of the weight type) with an
/// activation row `a` (ggml layout of the activation type the kernel wants).
///
/// # Safety
/// The CPU supports the ISA of the kernel; `n` is a multiple of the block size of both types;
/// `w` and `a` hold at least the bytes of `n` values of their types.
pub type VecDotFn = unsafe fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Four dot products of one weight row with four activation rows (prefill): the weight row is
/// unpacked once for all four. Each result equals the [`VecDotFn`] result bit for bit.
///
/// # Safety
/// As [`VecDotFn`], for each of the four activation rows.
pub type VecDot4Fn = unsafe fn(n: usize, w: &[u8], a: [&[u8]; 4]) -> [f32; 4];

/// Converts `x` (a multiple of the block size of the activation type) into `out` (at least the
/// bytes of `x.len()` values of that type).
///
/// # Safety
/// The CPU supports the ISA of the kernel and the sizes hold as above.
pub type QuantizeRowFn = unsafe fn(x: &[f32], out: &mut [u8]);

/// One row of a kernel table: the weight type, the activation type its dot product wants
/// (ggml's `vec_dot_type`) and the kernel.
#[derive(Clone, Copy)]
pub(crate) struct VecDotEntry {
    pub weight: QuantFormat,
    pub act: GgmlType,
    pub f: VecDotFn,
    /// The four-token form, where the ISA has one.
    pub f4: Option<VecDot4Fn>,
}

/// A kernel-table row for a ggml weight type.
pub(crate) const fn dot_entry(weight: GgmlType, act: GgmlType, f: VecDotFn) -> VecDotEntry {
    VecDotEntry {
        weight: QuantFormat::Ggml(weight),
        act,
        f,
        f4: None,
    }
}

/// A kernel-table row with a four-token kernel.
pub(crate) const fn dot_entry4(
    weight: GgmlType,
    act: GgmlType,
    f: VecDotFn,
    f4: VecDot4Fn,
) -> VecDotEntry {
    VecDotEntry {
        weight: QuantFormat::Ggml(weight),
        act,
        f,
        f4: Some(f4),
    }
}

/// One activation converter: the activation type and the kernel.
#[derive(Clone, Copy)]
pub(crate) struct QuantizeEntry {
    pub act: GgmlType,
    pub f: QuantizeRowFn,
}

/// Errors of the kernel-level API (single dot products and row conversions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("no {isa} dot-product kernel for weight type {ty}")]
    UnsupportedWeight { isa: &'static str, ty: QuantFormat },
    #[error("{ty} is not an activation type the {isa} kernels can produce")]
    UnsupportedActivation { isa: &'static str, ty: GgmlType },
    #[error("{n} values is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple {
        ty: QuantFormat,
        n: usize,
        block: usize,
    },
    #[error("{what}: need {need} bytes/values, got {got}")]
    Size {
        what: &'static str,
        need: usize,
        got: usize,
    },
}

/// The kernels of one ISA. Handed out only by [`Kernels::get`] / [`Kernels::best`], which check
/// that the CPU supports the ISA first; every method is therefore safe to call.
pub struct Kernels {
    pub isa: Isa,
    dots: &'static [VecDotEntry],
    quantizers: &'static [QuantizeEntry],
    read_probe: unsafe fn(&[u8]) -> u64,
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    dots: scalar::dot::VEC_DOTS,
    quantizers: scalar::dot::QUANTIZERS,
    read_probe: scalar::dot::read_probe,
};
#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    isa: Isa::Avx2,
    dots: avx2::dot::VEC_DOTS,
    quantizers: avx2::dot::QUANTIZERS,
    read_probe: avx2::dot::read_probe,
};
#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels {
    isa: Isa::Avx512,
    dots: avx512::dot::VEC_DOTS,
    quantizers: avx512::dot::QUANTIZERS,
    read_probe: avx512::dot::read_probe,
};

/// Bytes taken by `n` values of `ty`, or an error when `n` is not a whole number of blocks.
pub(crate) fn row_bytes(ty: impl Into<QuantFormat>, n: usize) -> Result<usize, KernelError> {
    let ty = ty.into();
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(KernelError::NotBlockMultiple { ty, n, block });
    }
    (n / block)
        .checked_mul(ty.type_size())
        .ok_or(KernelError::Size {
            what: "row bytes overflow",
            need: usize::MAX,
            got: n,
        })
}

impl Kernels {
    /// The table of `isa`, or `None` when this CPU cannot run it.
    pub fn get(isa: Isa) -> Option<&'static Kernels> {
        if !isa.is_supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&AVX2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(&AVX512),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The table of [`Isa::default_for_process`] (the fastest ISA unless `TINYRT_ISA` says otherwise).
    pub fn best() -> &'static Kernels {
        Kernels::get(Isa::default_for_process()).unwrap_or(&SCALAR)
    }

    pub(crate) fn entry_for(&self, weight: QuantFormat) -> Option<VecDotEntry> {
        self.dots.iter().copied().find(|e| e.weight == weight)
    }

    pub(crate) fn quantize_entry(&self, act: GgmlType) -> Option<QuantizeEntry> {
        self.quantizers.iter().copied().find(|e| e.act == act)
    }

    /// The weight types this table has a dot-product kernel for.
    pub fn weight_types(&self) -> impl Iterator<Item = QuantFormat> + '_ {
        self.dots.iter().map(|e| e.weight)
    }

    /// The activation type the dot product of weight type `weight` consumes (ggml's
    /// `vec_dot_type`), or `None` when there is no kernel for `weight`.
    pub fn act_type(&self, weight: impl Into<QuantFormat>) -> Option<GgmlType> {
        self.entry_for(weight.into()).map(|e| e.act)
    }

    /// Converts `x` to activation type `act` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K) into `out`.
    pub fn quantize_row(
        &self,
        act: GgmlType,
        x: &[f32],
        out: &mut [u8],
    ) -> Result<(), KernelError> {
        let e = self
            .quantize_entry(act)
            .ok_or(KernelError::UnsupportedActivation {
                isa: self.isa.name(),
                ty: act,
            })?;
        let need = row_bytes(act, x.len())?;
        if out.len() < need {
            return Err(KernelError::Size {
                what: "quantized row buffer",
                need,
                got: out.len(),
            });
        }
        // SAFETY: `self` was handed out by `Kernels::get`, which checked that the CPU supports
        // `self.isa`; the length of `x` is a whole number of blocks and `out` is large enough.
        unsafe { (e.f)(x, out) };
        Ok(())
    }

    /// The dot product of `n` values of weight row `w` (type `weight`) with activation row `a`
    /// (already in [`Kernels::act_type`] of `weight`).
    pub fn vec_dot(
        &self,
        weight: impl Into<QuantFormat>,
        n: usize,
        w: &[u8],
        a: &[u8],
    ) -> Result<f32, KernelError> {
        let (e, need_w, need_a) = self.checked_row(weight.into(), n, w)?;
        if a.len() < need_a {
            return Err(KernelError::Size {
                what: "activation row",
                need: need_a,
                got: a.len(),
            });
        }
        // SAFETY: the CPU supports `self.isa` (checked by `Kernels::get`), `n` is a whole number
        // of blocks of both types (row_bytes succeeded) and both rows have exactly their bytes.
        Ok(unsafe { (e.f)(n, &w[..need_w], &a[..need_a]) })
    }

    /// The dot-product entry of `weight`, and the bytes of one weight row and one activation
    /// row of `n` values, after checking that `w` holds the weight row.
    fn checked_row(
        &self,
        weight: QuantFormat,
        n: usize,
        w: &[u8],
    ) -> Result<(VecDotEntry, usize, usize), KernelError> {
        let e = self
            .entry_for(weight)
            .ok_or(KernelError::UnsupportedWeight {
                isa: self.isa.name(),
                ty: weight,
            })?;
        let need_w = row_bytes(weight, n)?;
        let need_a = row_bytes(e.act, n)?;
        if w.len() < need_w {
            return Err(KernelError::Size {
                what: "weight row",
                need: need_w,
                got: w.len(),
            });
        }
        Ok((e, need_w, need_a))
    }

    /// Whether the kernel of `weight` has a four-token (prefill) form on this ISA.
    pub fn has_vec_dot4(&self, weight: impl Into<QuantFormat>) -> bool {
        self.entry_for(weight.into())
            .is_some_and(|e| e.f4.is_some())
    }

    /// [`Kernels::vec_dot`] of one weight row against four activation rows (the four-token
    /// kernel where there is one, otherwise four single calls; the results are the same).
    pub fn vec_dot4(
        &self,
        weight: impl Into<QuantFormat>,
        n: usize,
        w: &[u8],
        a: [&[u8]; 4],
    ) -> Result<[f32; 4], KernelError> {
        let (e, need_w, need_a) = self.checked_row(weight.into(), n, w)?;
        if let Some(short) = a.iter().find(|a| a.len() < need_a) {
            return Err(KernelError::Size {
                what: "activation row",
                need: need_a,
                got: short.len(),
            });
        }
        let a = a.map(|a| &a[..need_a]);
        let w = &w[..need_w];
        // SAFETY: as in `vec_dot`, for each of the four activation rows.
        Ok(unsafe {
            match e.f4 {
                Some(f4) => f4(n, w, a),
                None => a.map(|a| (e.f)(n, w, a)),
            }
        })
    }
}

impl Kernels {
    /// Reads every byte of `data` with this ISA's widest loads and returns an XOR of its 64-bit
    /// words (a memory read-bandwidth probe for the benchmarks; the result only keeps the
    /// reads from being optimised away). A tail of fewer than 8 bytes is ignored.
    pub fn read_probe(&self, data: &[u8]) -> u64 {
        // SAFETY: the CPU supports `self.isa` (checked by `Kernels::get`); the probe reads only
        // within `data`.
        unsafe { (self.read_probe)(data) }
    }
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("AVX512"), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("neon"), None);
    }

    #[test]
    fn detection_never_picks_scalar_on_a_simd_cpu() {
        #[cfg(target_arch = "x86_64")]
        {
            let best = Isa::detect();
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
                assert_eq!(best, Isa::Avx512);
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                assert_eq!(best, Isa::Avx2);
            }
            assert!(Isa::available().contains(&best));
        }
    }
}
