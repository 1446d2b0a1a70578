//! The CUDA sources and the one table of kernels.
//!
//! Each `.cu` file under `cuda/kernels/` is embedded here and compiled by NVRTC with
//! `common.cuh` and `quant.cuh` prepended (the NVRTC wheel has no headers to include).

use crate::WeightType;

/// Block structs, type definitions, conversions and reductions.
pub const COMMON_CUH: &str = include_str!("../kernels/common.cuh");
/// Per-format dequantization and dp4a dot products.
pub const QUANT_CUH: &str = include_str!("../kernels/quant.cuh");

/// One `.cu` file: one family of operations, one NVRTC program, one CUDA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceFile {
    Quantize,
    Matvec,
    Matmul,
    Norm,
    Rope,
    Attention,
    Elementwise,
    Lora,
}

impl SourceFile {
    pub const ALL: [SourceFile; 8] = [
        SourceFile::Quantize,
        SourceFile::Matvec,
        SourceFile::Matmul,
        SourceFile::Norm,
        SourceFile::Rope,
        SourceFile::Attention,
        SourceFile::Elementwise,
        SourceFile::Lora,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn file_name(self) -> &'static str {
        match self {
            SourceFile::Quantize => "quantize.cu",
            SourceFile::Matvec => "matvec.cu",
            SourceFile::Matmul => "matmul.cu",
            SourceFile::Norm => "norm.cu",
            SourceFile::Rope => "rope.cu",
            SourceFile::Attention => "attention.cu",
            SourceFile::Elementwise => "elementwise.cu",
            SourceFile::Lora => "lora.cu",
        }
    }

    /// The file's own text.
    pub const fn text(self) -> &'static str {
        match self {
            SourceFile::Quantize => include_str!("../kernels/quantize.cu"),
            SourceFile::Matvec => include_str!("../kernels/matvec.cu"),
            SourceFile::Matmul => include_str!("../kernels/matmul.cu"),
            SourceFile::Norm => include_str!("../kernels/norm.cu"),
            SourceFile::Rope => include_str!("../kernels/rope.cu"),
            SourceFile::Attention => include_str!("../kernels/attention.cu"),
            SourceFile::Elementwise => include_str!("../kernels/elementwise.cu"),
            SourceFile::Lora => include_str!("../kernels/lora.cu"),
        }
    }

    /// The complete program handed to NVRTC: the headers, then the file.
    pub fn program(self) -> String {
        let mut s =
            String::with_capacity(COMMON_CUH.len() + QUANT_CUH.len() + self.text().len() + 64);
        s.push_str(COMMON_CUH);
        s.push('\n');
        s.push_str(QUANT_CUH);
        s.push('\n');
        s.push_str(self.text());
        s
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The kind of one kernel parameter, as the launcher passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A device pointer (possibly null where the kernel says so).
    Ptr,
    I32,
    F32,
}

use ArgKind::{Ptr as P, F32 as F, I32 as I};

const MATVEC_ARGS: &[ArgKind] = &[P, P, P, P, I, I];
const MATVEC_Q_ARGS: &[ArgKind] = &[P, P, P, P, I, I, I];
const MATVEC_GLU_ARGS: &[ArgKind] = &[P, P, P, P, I, I, I, I];
const MATVEC3_ARGS: &[ArgKind] = &[P, P, P, P, P, P, P, I, I, I, I, I];
const MATMUL_ARGS: &[ArgKind] = &[P, P, P, I, I, I];
const GET_ROWS_ARGS: &[ArgKind] = &[P, P, P, I, I];
const UNARY_ARGS: &[ArgKind] = &[P, P, I];
const BINARY_ARGS: &[ArgKind] = &[P, P, P, I];
const KV_STORE_ARGS: &[ArgKind] = &[P, P, P, P, P, I, I, I, I];
const ATTENTION_ARGS: &[ArgKind] = &[P, P, P, P, P, P, I, I, I, I, I, I, I, F];
const ROPE_KV_STORE_ARGS: &[ArgKind] = &[P, P, P, P, P, P, P, I, I, I, I, I, I, I, I, I, I];

macro_rules! kernels {
    ($($variant:ident => ($name:literal, $file:ident, $args:expr),)*) => {
        /// Every CUDA kernel tinyrt launches: its symbol, its source file, its parameters.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum Kernel { $($variant,)* }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$variant,)*];

            /// The `extern "C"` symbol in the source file.
            pub const fn name(self) -> &'static str {
                match self { $(Kernel::$variant => $name,)* }
            }

            pub const fn source(self) -> SourceFile {
                match self { $(Kernel::$variant => SourceFile::$file,)* }
            }

            /// The parameter list, in order (checked at every launch).
            pub const fn args(self) -> &'static [ArgKind] {
                match self { $(Kernel::$variant => $args,)* }
            }
        }
    };
}

kernels! {
    QuantizeQ8_1 => ("quantize_q8_1", Quantize, &[P, P, I]),
    RmsNorm => ("rms_norm", Norm, &[P, P, P, I, F]),
    LayerNorm => ("layer_norm", Norm, &[P, P, P, P, I, F]),
    RmsNormQ8_1 => ("rms_norm_q8_1", Norm, &[P, P, P, I, F]),
    RmsNormF32Q8_1 => ("rms_norm_f32_q8_1", Norm, &[P, P, P, P, I, F]),
    Rope => ("rope", Rope, &[P, P, I, I, I, I, I, I, F, F]),
    RopeCached => ("rope_cached", Rope, &[P, P, P, I, I, I, I, I, I, I]),
    RopeKvStoreF16 => ("rope_kv_store_f16", Rope, ROPE_KV_STORE_ARGS),
    RopeKvStoreF32 => ("rope_kv_store_f32", Rope, ROPE_KV_STORE_ARGS),
    MatvecF32 => ("matvec_f32", Matvec, MATVEC_ARGS),
    MatvecF16 => ("matvec_f16", Matvec, MATVEC_ARGS),
    MatvecQ4_0 => ("matvec_q4_0", Matvec, MATVEC_Q_ARGS),
    MatvecQ4_1 => ("matvec_q4_1", Matvec, MATVEC_Q_ARGS),
    MatvecQ5_0 => ("matvec_q5_0", Matvec, MATVEC_Q_ARGS),
    MatvecQ8_0 => ("matvec_q8_0", Matvec, MATVEC_Q_ARGS),
    MatvecQ4_K => ("matvec_q4_k", Matvec, MATVEC_Q_ARGS),
    MatvecQ5_K => ("matvec_q5_k", Matvec, MATVEC_Q_ARGS),
    MatvecQ6_K => ("matvec_q6_k", Matvec, MATVEC_Q_ARGS),
    MatvecIQ4_NL => ("matvec_iq4_nl", Matvec, MATVEC_Q_ARGS),
    MatvecNF4 => ("matvec_nf4", Matvec, MATVEC_Q_ARGS),
    MatvecGluQ4_0 => ("matvec_glu_q4_0", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ4_1 => ("matvec_glu_q4_1", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ5_0 => ("matvec_glu_q5_0", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ8_0 => ("matvec_glu_q8_0", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ4_K => ("matvec_glu_q4_k", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ5_K => ("matvec_glu_q5_k", Matvec, MATVEC_GLU_ARGS),
    MatvecGluQ6_K => ("matvec_glu_q6_k", Matvec, MATVEC_GLU_ARGS),
    MatvecGluIQ4_NL => ("matvec_glu_iq4_nl", Matvec, MATVEC_GLU_ARGS),
    MatvecGluNF4 => ("matvec_glu_nf4", Matvec, MATVEC_GLU_ARGS),
    Matvec3Q4_0 => ("matvec3_q4_0", Matvec, MATVEC3_ARGS),
    Matvec3Q4_1 => ("matvec3_q4_1", Matvec, MATVEC3_ARGS),
    Matvec3Q5_0 => ("matvec3_q5_0", Matvec, MATVEC3_ARGS),
    Matvec3Q8_0 => ("matvec3_q8_0", Matvec, MATVEC3_ARGS),
    Matvec3Q4_K => ("matvec3_q4_k", Matvec, MATVEC3_ARGS),
    Matvec3Q5_K => ("matvec3_q5_k", Matvec, MATVEC3_ARGS),
    Matvec3Q6_K => ("matvec3_q6_k", Matvec, MATVEC3_ARGS),
    Matvec3IQ4_NL => ("matvec3_iq4_nl", Matvec, MATVEC3_ARGS),
    Matvec3NF4 => ("matvec3_nf4", Matvec, MATVEC3_ARGS),
    Matvec3Q4_0Planar => ("matvec3_q4_0_planar", Matvec, MATVEC3_ARGS),
    RepackQ4_0Planar => ("repack_q4_0_planar", Matvec, &[P, P, I]),
    MatvecQ4_0Planar => ("matvec_q4_0_planar", Matvec, MATVEC_Q_ARGS),
    MatmulF32 => ("matmul_f32", Matmul, MATMUL_ARGS),
    MatmulF16 => ("matmul_f16", Matmul, MATMUL_ARGS),
    MatmulQ4_0 => ("matmul_q4_0", Matmul, MATMUL_ARGS),
    MatmulQ4_1 => ("matmul_q4_1", Matmul, MATMUL_ARGS),
    MatmulQ5_0 => ("matmul_q5_0", Matmul, MATMUL_ARGS),
    MatmulQ8_0 => ("matmul_q8_0", Matmul, MATMUL_ARGS),
    MatmulQ4_K => ("matmul_q4_k", Matmul, MATMUL_ARGS),
    MatmulQ5_K => ("matmul_q5_k", Matmul, MATMUL_ARGS),
    MatmulQ6_K => ("matmul_q6_k", Matmul, MATMUL_ARGS),
    MatmulIQ4_NL => ("matmul_iq4_nl", Matmul, MATMUL_ARGS),
    MatmulNF4 => ("matmul_nf4", Matmul, MATMUL_ARGS),
    MatmulMmqQ4_0 => ("matmul_mmq_q4_0", Matmul, MATMUL_ARGS),
    MatmulMmqQ4_1 => ("matmul_mmq_q4_1", Matmul, MATMUL_ARGS),
    MatmulMmqQ5_0 => ("matmul_mmq_q5_0", Matmul, MATMUL_ARGS),
    MatmulMmqQ8_0 => ("matmul_mmq_q8_0", Matmul, MATMUL_ARGS),
    MatmulMmqIQ4_NL => ("matmul_mmq_iq4_nl", Matmul, MATMUL_ARGS),
    MatmulMmqQ4_K => ("matmul_mmq_q4_k", Matmul, MATMUL_ARGS),
    MatmulMmqQ5_K => ("matmul_mmq_q5_k", Matmul, MATMUL_ARGS),
    KvStoreF16 => ("kv_store_f16", Attention, KV_STORE_ARGS),
    KvStoreF32 => ("kv_store_f32", Attention, KV_STORE_ARGS),
    AttentionSplit => ("attention_split", Attention, ATTENTION_ARGS),
    AttentionSplitF32 => ("attention_split_f32", Attention, ATTENTION_ARGS),
    AttentionCombine => ("attention_combine", Attention, &[P, P, P, P, I, I, I, I]),
    AttentionPacked => ("attention_packed", Attention, &[P, P, P, P, P, I, I, I, I, I, I, I, I, F]),
    Gelu => ("gelu", Elementwise, UNARY_ARGS),
    GeluErf => ("gelu_erf", Elementwise, UNARY_ARGS),
    Swiglu => ("swiglu", Elementwise, BINARY_ARGS),
    Geglu => ("geglu", Elementwise, BINARY_ARGS),
    Add => ("add", Elementwise, BINARY_ARGS),
    AddRows => ("add_rows", Elementwise, &[P, P, P, I, I]),
    Scale => ("scale", Elementwise, &[P, P, F, I]),
    Argmax => ("argmax", Elementwise, &[P, P, I]),
    PoolRows => ("pool_rows", Elementwise, &[P, P, P, I, I, I, I, I]),
    GetRowsF32 => ("get_rows_f32", Elementwise, GET_ROWS_ARGS),
    GetRowsF16 => ("get_rows_f16", Elementwise, GET_ROWS_ARGS),
    GetRowsQ4_0 => ("get_rows_q4_0", Elementwise, GET_ROWS_ARGS),
    GetRowsQ4_1 => ("get_rows_q4_1", Elementwise, GET_ROWS_ARGS),
    GetRowsQ5_0 => ("get_rows_q5_0", Elementwise, GET_ROWS_ARGS),
    GetRowsQ8_0 => ("get_rows_q8_0", Elementwise, GET_ROWS_ARGS),
    GetRowsQ4_K => ("get_rows_q4_k", Elementwise, GET_ROWS_ARGS),
    GetRowsQ5_K => ("get_rows_q5_k", Elementwise, GET_ROWS_ARGS),
    GetRowsQ6_K => ("get_rows_q6_k", Elementwise, GET_ROWS_ARGS),
    GetRowsIQ4_NL => ("get_rows_iq4_nl", Elementwise, GET_ROWS_ARGS),
    GetRowsNF4 => ("get_rows_nf4", Elementwise, GET_ROWS_ARGS),
    LoraDown => ("lora_down", Lora, &[P, P, P, I, I, I, I]),
    LoraUp => ("lora_up", Lora, &[P, P, P, F, I, I, I, I]),
}

impl Kernel {
    pub const COUNT: usize = Self::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }

    /// The "hot" kernels: the ones a decode step spends its time in, where a register spill
    /// is a bug (checked by the NVRTC/ptxas test).
    pub fn is_hot(self) -> bool {
        matches!(
            self.source(),
            SourceFile::Matvec | SourceFile::Attention | SourceFile::Quantize
        ) || matches!(
            self,
            Kernel::RmsNormQ8_1
                | Kernel::RmsNormF32Q8_1
                | Kernel::Argmax
                | Kernel::MatmulMmqQ4_0
                | Kernel::MatmulMmqQ4_1
                | Kernel::MatmulMmqQ5_0
                | Kernel::MatmulMmqQ8_0
                | Kernel::MatmulMmqIQ4_NL
                | Kernel::MatmulMmqQ4_K
                | Kernel::MatmulMmqQ5_K
                | Kernel::RopeCached
                | Kernel::RopeKvStoreF16
                | Kernel::RopeKvStoreF32
                | Kernel::LoraDown
                | Kernel::LoraUp
        )
    }

    pub const fn matvec(t: WeightType) -> Kernel {
        match t {
            WeightType::F32 => Kernel::MatvecF32,
            WeightType::F16 => Kernel::MatvecF16,
            WeightType::Q4_0 => Kernel::MatvecQ4_0,
            WeightType::Q4_1 => Kernel::MatvecQ4_1,
            WeightType::Q5_0 => Kernel::MatvecQ5_0,
            WeightType::Q8_0 => Kernel::MatvecQ8_0,
            WeightType::Q4_K => Kernel::MatvecQ4_K,
            WeightType::Q5_K => Kernel::MatvecQ5_K,
            WeightType::Q6_K => Kernel::MatvecQ6_K,
            WeightType::IQ4_NL => Kernel::MatvecIQ4_NL,
            WeightType::NF4 => Kernel::MatvecNF4,
        }
    }

    /// The fused gate/up kernel of a quantized type (`None` for F32/F16).
    pub const fn matvec_glu(t: WeightType) -> Option<Kernel> {
        Some(match t {
            WeightType::Q4_0 => Kernel::MatvecGluQ4_0,
            WeightType::Q4_1 => Kernel::MatvecGluQ4_1,
            WeightType::Q5_0 => Kernel::MatvecGluQ5_0,
            WeightType::Q8_0 => Kernel::MatvecGluQ8_0,
            WeightType::Q4_K => Kernel::MatvecGluQ4_K,
            WeightType::Q5_K => Kernel::MatvecGluQ5_K,
            WeightType::Q6_K => Kernel::MatvecGluQ6_K,
            WeightType::IQ4_NL => Kernel::MatvecGluIQ4_NL,
            WeightType::NF4 => Kernel::MatvecGluNF4,
            WeightType::F32 | WeightType::F16 => return None,
        })
    }

    /// The kernel of up to three products of one Q8_1 input (`None` for F32/F16); `planar`:
    /// the Q4_0 planar-layout one.
    pub const fn matvec3(t: WeightType, planar: bool) -> Option<Kernel> {
        Some(match t {
            WeightType::Q4_0 if planar => Kernel::Matvec3Q4_0Planar,
            WeightType::Q4_0 => Kernel::Matvec3Q4_0,
            WeightType::Q4_1 => Kernel::Matvec3Q4_1,
            WeightType::Q5_0 => Kernel::Matvec3Q5_0,
            WeightType::Q8_0 => Kernel::Matvec3Q8_0,
            WeightType::Q4_K => Kernel::Matvec3Q4_K,
            WeightType::Q5_K => Kernel::Matvec3Q5_K,
            WeightType::Q6_K => Kernel::Matvec3Q6_K,
            WeightType::IQ4_NL => Kernel::Matvec3IQ4_NL,
            WeightType::NF4 => Kernel::Matvec3NF4,
            WeightType::F32 | WeightType::F16 => return None,
        })
    }

    pub const fn matmul(t: WeightType) -> Kernel {
        match t {
            WeightType::F32 => Kernel::MatmulF32,
            WeightType::F16 => Kernel::MatmulF16,
            WeightType::Q4_0 => Kernel::MatmulQ4_0,
            WeightType::Q4_1 => Kernel::MatmulQ4_1,
            WeightType::Q5_0 => Kernel::MatmulQ5_0,
            WeightType::Q8_0 => Kernel::MatmulQ8_0,
            WeightType::Q4_K => Kernel::MatmulQ4_K,
            WeightType::Q5_K => Kernel::MatmulQ5_K,
            WeightType::Q6_K => Kernel::MatmulQ6_K,
            WeightType::IQ4_NL => Kernel::MatmulIQ4_NL,
            WeightType::NF4 => Kernel::MatmulNF4,
        }
    }

    /// The int8 tensor-core prefill kernel over Q8_1 activations (`None`: no such kernel for
    /// the type; use [`Kernel::matmul`]).
    pub const fn matmul_mmq(t: WeightType) -> Option<Kernel> {
        Some(match t {
            WeightType::Q4_0 => Kernel::MatmulMmqQ4_0,
            WeightType::Q4_1 => Kernel::MatmulMmqQ4_1,
            WeightType::Q5_0 => Kernel::MatmulMmqQ5_0,
            WeightType::Q8_0 => Kernel::MatmulMmqQ8_0,
            WeightType::IQ4_NL => Kernel::MatmulMmqIQ4_NL,
            WeightType::Q4_K => Kernel::MatmulMmqQ4_K,
            WeightType::Q5_K => Kernel::MatmulMmqQ5_K,
            _ => return None,
        })
    }

    pub const fn get_rows(t: WeightType) -> Kernel {
        match t {
            WeightType::F32 => Kernel::GetRowsF32,
            WeightType::F16 => Kernel::GetRowsF16,
            WeightType::Q4_0 => Kernel::GetRowsQ4_0,
            WeightType::Q4_1 => Kernel::GetRowsQ4_1,
            WeightType::Q5_0 => Kernel::GetRowsQ5_0,
            WeightType::Q8_0 => Kernel::GetRowsQ8_0,
            WeightType::Q4_K => Kernel::GetRowsQ4_K,
            WeightType::Q5_K => Kernel::GetRowsQ5_K,
            WeightType::Q6_K => Kernel::GetRowsQ6_K,
            WeightType::IQ4_NL => Kernel::GetRowsIQ4_NL,
            WeightType::NF4 => Kernel::GetRowsNF4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_in_its_source_file() {
        for k in Kernel::ALL {
            let needle = format!("{}(", k.name());
            let text = k.source().text();
            // The name appears as `name(` (plain kernels) or as a macro argument `(name,`.
            let macro_use = format!("({},", k.name());
            assert!(
                text.contains(&needle) || text.contains(&macro_use),
                "{} not found in {}",
                k.name(),
                k.source().file_name()
            );
        }
    }

    #[test]
    fn kernel_names_are_unique() {
        let mut names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
