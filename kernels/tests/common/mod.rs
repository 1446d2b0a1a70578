//! Helpers shared by the kernel test binaries (each uses a part of them).
#![allow(dead_code)]

use tinyrt_kernels::cpu::{Isa, Kernels};
use tinyrt_kernels::quant::{GgmlType, QuantFormat};

/// The weight types the GEMM serves (`Kernels::uses_gemm`, the same on every ISA): the tests
/// take them from there rather than keep copies of the list.
pub fn gemm_types() -> Vec<GgmlType> {
    let k = Kernels::get(Isa::Scalar).expect("the scalar table");
    let types: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|&t| k.uses_gemm(QuantFormat::Ggml(t), 1))
        .collect();
    assert!(!types.is_empty(), "no GEMM weight types");
    types
}

/// A small deterministic generator (no dependence on proptest's shrinking for bit checks).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

/// The records of `data/ops-ggml/ops_ggml.bin`: inputs and ggml's CPU outputs, written by
/// `data/ops-ggml/gen_ops_ggml.c` linked against the reference llama.cpp build.
pub fn ggml_records() -> std::collections::HashMap<String, Vec<f32>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ops-ggml/ops_ggml.bin"
    );
    let bytes = std::fs::read(path).expect("read ops_ggml.bin");
    let mut map = std::collections::HashMap::new();
    let mut at = 0usize;
    let u32_at = |at: &mut usize| {
        let v = u32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap()) as usize;
        *at += 4;
        v
    };
    while at < bytes.len() {
        let name_len = u32_at(&mut at);
        let name = String::from_utf8(bytes[at..at + name_len].to_vec()).unwrap();
        at += name_len;
        let n = u32_at(&mut at);
        let data: Vec<f32> = bytes[at..at + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        at += 4 * n;
        map.insert(name, data);
    }
    map
}
