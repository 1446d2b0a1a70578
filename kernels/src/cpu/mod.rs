//! CPU kernels. One folder per ISA (`scalar/`, `avx2/`, `avx512/`) with the same function names
//! in each; the ISA is chosen at run time (never with `target-cpu`), so a stock build reaches the
//! fastest path the CPU has. Adding an ISA is one folder with its `static KERNELS`, one [`Isa`]
//! variant (with its feature check in [`Isa::is_supported`]) and one arm in [`Kernels::get`].
//!
//! # Dot products and matrix products
//! [`Kernels`] (`cpu/table.rs`) is the table of one ISA, filled by the `static KERNELS` of its
//! folder: the transformer ops, the GEMM kernels, the read probe and, for each weight format,
//! its dot-product kernel and the activation type it consumes (ggml's `vec_dot_type`: Q8_0 for
//! Q4_0/Q5_0/Q8_0/IQ4_NL/NF4, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F32 for F32/F16/BF16),
//! plus the activation converters. [`Kernels::get`] hands out a table only when the CPU
//! supports its ISA, the one such check (everything else calls through a table);
//! [`Kernels::best`] is the fastest table this CPU has. The matrix products
//! ([`matmul`]), the ops ([`ops`], [`attention`]) and the thread pool ([`pool`]) sit on top and
//! never name an ISA. The matrix products of Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K and Q6_K take
//! a GEMM instead of the dot products, on every ISA with the same float operations (packed
//! panels on AVX-512, row by row on scalar and AVX2; `gemm.rs`),
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

// The panel GEMM, the repacking and a few helpers serve only the x86 tables so far.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod fgemm;
pub(crate) mod gemm;
pub mod matmul;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod ops;
pub mod pool;
pub mod repack;
pub mod rope;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
pub(crate) mod table;

pub use matmul::{MatmulError, MatmulJob, QMatrix, QuantizedActs};
pub use pool::ThreadPool;
pub use repack::Repacked;
pub(crate) use table::{
    dot_entry, dot_entry4, row_bytes, GemmKernels, OpKernels, PanelGemm, QuantizeEntry,
    RepackedGemm, VecDotEntry,
};
pub use table::{KernelError, Kernels, QuantizeRowFn, VecDot4Fn, VecDotFn};

/// An instruction-set level with its own kernel implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ + VNNI (on top of everything AVX2 needs).
    Avx512,
    /// AArch64 Advanced SIMD (NEON, part of every AArch64 CPU).
    Neon,
    /// NEON with the dot-product extension (`sdot`, Armv8.2-A `dotprod`).
    NeonDotprod,
}

impl Isa {
    /// Every ISA, slowest first within each architecture (a CPU supports those of one only).
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Neon,
        Isa::NeonDotprod,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
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
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => {
                Isa::Neon.is_supported() && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
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

    /// The ISA `TINYRT_ISA=scalar|avx2|avx512|neon|neon-dotprod` asks for: `Ok(None)` when it is unset, an error
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
        let setting = format!("TINYRT_ISA={}", v.escape_debug());
        Isa::parse_supported(&v, &setting).map(Some)
    }

    /// The ISA `name` names, when this CPU supports it; otherwise an error that starts with
    /// `setting` (how the user gave the name, e.g. `--isa "neon"`), says what is wrong and lists
    /// what this CPU has.
    pub fn parse_supported(name: &str, setting: &str) -> Result<Isa, String> {
        let available = || {
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match Isa::from_name(name) {
            Some(isa) if isa.is_supported() => Ok(isa),
            Some(isa) => Err(format!(
                "{setting}: this CPU does not support the {} kernels (it has: {})",
                isa.name(),
                available()
            )),
            None => Err(format!(
                "{setting}: unknown ISA (expected scalar, avx2, avx512, neon or neon-dotprod; this CPU has: {})",
                available()
            )),
        }
    }
}

impl Kernels {
    /// The table of `isa`, or `None` when this CPU cannot run it.
    pub fn get(isa: Isa) -> Option<&'static Kernels> {
        if !isa.is_supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(&scalar::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&avx2::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(&avx512::KERNELS),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Some(&neon::KERNELS),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => Some(&neon::KERNELS_DOTPROD),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The table of the fastest ISA this CPU has ([`Isa::detect`]). The library reads no
    /// environment: programs that honour `TINYRT_ISA` read it at their edge with
    /// [`Isa::from_env`] and pass the ISA down.
    pub fn best() -> &'static Kernels {
        Kernels::get(Isa::detect()).unwrap_or(&scalar::KERNELS)
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
        assert_eq!(Isa::from_name("Neon-Dotprod"), Some(Isa::NeonDotprod));
        assert_eq!(Isa::from_name("sve"), None);
    }

    /// Every ISA table has a kernel for every weight format of `quant::FORMATS`, taking its
    /// `vec_dot_type`, and the AVX2 / AVX-512 tables have their own kernel exactly for the
    /// formats marked `simd` (the others run the scalar reference). The NEON tables are being
    /// filled in (issue #27): they have their own kernels for a subset of the `simd` formats
    /// and the scalar reference for the rest, never an own kernel for a format not marked `simd`.
    #[test]
    fn every_table_covers_the_format_table() {
        let scalar = Kernels::get(Isa::Scalar).unwrap();
        for isa in Isa::available() {
            let k = Kernels::get(isa).unwrap();
            for f in crate::quant::FORMATS.iter().filter(|f| f.vec_dot.is_some()) {
                let e = k
                    .entry_for(f.format)
                    .unwrap_or_else(|| panic!("{} has no {} dot product", isa.name(), f.format));
                assert_eq!(Some(e.act), f.vec_dot_type, "{} {}", isa.name(), f.format);
                if isa != Isa::Scalar {
                    let own = e.f as usize != scalar.entry_for(f.format).unwrap().f as usize;
                    if matches!(isa, Isa::Neon | Isa::NeonDotprod) {
                        assert!(
                            f.simd || !own,
                            "{} {}: own SIMD kernel",
                            isa.name(),
                            f.format
                        );
                    } else {
                        assert_eq!(own, f.simd, "{} {}: own SIMD kernel", isa.name(), f.format);
                    }
                }
            }
            assert_eq!(
                k.weight_types().count(),
                crate::quant::weight_formats().count(),
                "{}: a dot product for a format outside FORMATS",
                isa.name()
            );
        }
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
        #[cfg(target_arch = "aarch64")]
        {
            let best = Isa::detect();
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                assert_eq!(best, Isa::NeonDotprod);
            } else {
                assert_eq!(best, Isa::Neon);
            }
        }
    }
}
