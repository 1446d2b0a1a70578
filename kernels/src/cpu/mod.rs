//! CPU kernels. One folder per ISA (`scalar/`, `avx2/`, `avx512/`) with the same function names
//! in each; the ISA is chosen at run time (never with `target-cpu`), so a stock build reaches the
//! fastest path the CPU has.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod ops;
pub mod scalar;

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

    /// The process default: `TINYRT_ISA=scalar|avx2|avx512` when set (and supported), otherwise
    /// [`Isa::detect`]. Computed once.
    pub fn default_for_process() -> Isa {
        static DEFAULT: OnceLock<Isa> = OnceLock::new();
        *DEFAULT.get_or_init(|| match std::env::var("TINYRT_ISA") {
            Ok(v) => match Isa::from_name(&v) {
                Some(isa) if isa.is_supported() => isa,
                Some(isa) => {
                    eprintln!(
                        "tinyrt: TINYRT_ISA={} is not supported by this CPU, using {}",
                        isa.name(),
                        Isa::detect().name()
                    );
                    Isa::detect()
                }
                None => {
                    eprintln!(
                        "tinyrt: unknown TINYRT_ISA={v:?} (expected scalar, avx2 or avx512), using {}",
                        Isa::detect().name()
                    );
                    Isa::detect()
                }
            },
            Err(_) => Isa::detect(),
        })
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
