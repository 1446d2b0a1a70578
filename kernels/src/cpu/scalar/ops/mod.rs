//! Scalar reference implementations of the transformer ops. Every SIMD path in
//! `cpu/{avx2,avx512}/ops/` is tested against these. The numerics follow ggml's CPU backend
//! (llama.cpp build 11434, `ggml/src/ggml-cpu/{ops.cpp,vec.h,vec.cpp}`), which produced the
//! goldens; each function says where it follows ggml and where it deliberately does not.
//!
//! Callers go through [`crate::cpu::ops`], which checks shapes; these functions assume them.

use half::f16;

use crate::cpu::attention::job::{AttnJob, AttnTile, KvData};
use crate::cpu::rope::{RopeCache, RopeMode};

mod activations;
mod attention;
mod elementwise;
mod norms;
mod rope;

pub use self::activations::*;
pub use self::attention::*;
pub use self::elementwise::*;
pub use self::norms::*;
pub use self::rope::*;
