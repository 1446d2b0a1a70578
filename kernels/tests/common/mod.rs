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

/// The workspace's seeded generator (no dependence on proptest's shrinking for bit checks),
/// with the test data helpers the kernel tests share.
pub use tinyrt_kernels::rng::SplitMix64 as Rng;

/// `n` values uniform in [-1, 1).
pub fn uniform_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.unit_f32()).collect()
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
