//! Matrix products against a naive dequantize-and-dot, for 1 and 2 threads, 1 to 9 tokens and
//! every ISA this CPU has; plus the error cases.

mod common;

use proptest::prelude::*;
use tinyrt_kernels::cpu::{Isa, Kernels, MatmulError, QMatrix, QuantizedActs, ThreadPool};
use tinyrt_kernels::quant::{self, GgmlType, QuantFormat};

use tinyrt_kernels::rng::SplitMix64 as Rng;

const FORMATS: [QuantFormat; 10] = [
    QuantFormat::Ggml(GgmlType::F32),
    QuantFormat::Ggml(GgmlType::F16),
    QuantFormat::Ggml(GgmlType::Q4_0),
    QuantFormat::Ggml(GgmlType::Q4_1),
    QuantFormat::Ggml(GgmlType::Q5_0),
    QuantFormat::Ggml(GgmlType::Q8_0),
    QuantFormat::Ggml(GgmlType::Q4_K),
    QuantFormat::Ggml(GgmlType::Q6_K),
    QuantFormat::Ggml(GgmlType::IQ4_NL),
    QuantFormat::Nf4,
];

/// out[t·rows + r] = Σ dequant(W[r]) · dequant(acts[t]) in f64, and Σ|…| for the tolerance.
fn naive(
    fmt: QuantFormat,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
) -> Vec<(f64, f64)> {
    let mut wd = vec![0f32; rows * cols];
    quant::dequantize_format(fmt, w, &mut wd).unwrap();
    let mut out = Vec::new();
    for t in 0..acts.n_tokens() {
        let mut ad = vec![0f32; cols];
        quant::dequantize(acts.ty(), acts.row(t), &mut ad).unwrap();
        for r in 0..rows {
            let row = &wd[r * cols..(r + 1) * cols];
            let s: f64 = row
                .iter()
                .zip(&ad)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let b: f64 = row
                .iter()
                .zip(&ad)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            out.push((s, b));
        }
    }
    out
}

fn check(
    fmt: QuantFormat,
    rows: usize,
    col_blocks: usize,
    n_tokens: usize,
    seed: u64,
    pools: &[ThreadPool],
) {
    let mut rng = Rng(seed);
    let cols = col_blocks * fmt.block_size().max(32);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.unit_f32()).collect();
    let mut w = vec![0u8; rows * cols / fmt.block_size() * fmt.type_size()];
    quant::quantize_format(fmt, &x, &mut w).unwrap();
    let input: Vec<f32> = (0..n_tokens * cols).map(|_| rng.unit_f32()).collect();
    let m = QMatrix::new(fmt, &w, rows, cols).unwrap();
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        let mut acts = QuantizedActs::new();
        k.quantize_acts(k.act_type(fmt).unwrap(), &input, n_tokens, cols, &mut acts)
            .unwrap();
        let expected = naive(fmt, &w, rows, cols, &acts);
        for pool in pools {
            let mut out = vec![f32::NAN; rows * n_tokens];
            k.matmul_q(pool, &m, &acts, &mut out).unwrap();
            for (i, (o, (e, b))) in out.iter().zip(&expected).enumerate() {
                // Q8_1's f16 block sum adds up to ~1e-3 relative on the *_1 formats.
                let tol = if fmt.vec_dot_type() == Some(GgmlType::Q8_1) {
                    2e-3
                } else {
                    1e-5
                };
                assert!(
                    (*o as f64 - e).abs() <= tol * b + 1e-6,
                    "{fmt} {} threads={} tokens={n_tokens} rows={rows} cols={cols} [{i}]: {o} vs {e}",
                    isa.name(),
                    pool.n_threads()
                );
                // The matmul is exactly the row dot product of the same kernel, or, on the
                // GEMM path, the same integer sums with the float scaling in another order.
                let (t, r) = (i / rows, i % rows);
                let rb = w.len() / rows;
                let d = k
                    .vec_dot(fmt, cols, &w[r * rb..(r + 1) * rb], acts.row(t))
                    .unwrap();
                if k.uses_gemm(fmt, n_tokens) {
                    let s = Kernels::get(Isa::Scalar)
                        .unwrap()
                        .vec_dot(fmt, cols, &w[r * rb..(r + 1) * rb], acts.row(t))
                        .unwrap();
                    assert!(
                        (*o as f64 - s as f64).abs() <= 1e-5 * b + 1e-6,
                        "GEMM {fmt} {} tokens={n_tokens} rows={rows} cols={cols} [{i}]: {o} vs scalar {s}",
                        isa.name()
                    );
                } else {
                    assert_eq!(o.to_bits(), d.to_bits());
                }
            }
            // The convenience form quantizes the same way.
            let mut out2 = vec![f32::NAN; rows * n_tokens];
            k.matmul(pool, &m, &input, n_tokens, &mut out2).unwrap();
            assert_eq!(out, out2);
            // The weights repacked at load (AVX-512) give the same bits.
            if let Some(rp) = k.repack(&m) {
                let mut out3 = vec![f32::NAN; rows * n_tokens];
                let mr = m.with_repacked(&rp).unwrap();
                k.matmul_q(pool, &mr, &acts, &mut out3).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&out),
                    bits(&out3),
                    "repacked {fmt} tokens={n_tokens} rows={rows}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_naive(
        fi in 0usize..FORMATS.len(),
        rows in 1usize..=70,
        col_blocks in 1usize..=3,
        n_tokens in 1usize..=9,
        seed in any::<u64>(),
    ) {
        let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
        let fmt = FORMATS[fi];
        let col_blocks = if fmt.block_size() == 256 { col_blocks.min(2) } else { col_blocks * 3 };
        check(fmt, rows, col_blocks, n_tokens, seed, &pools);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// The weight types of the GEMM (`Kernels::uses_gemm`); token counts around and past the
    /// tile of 8 (ragged tails) and row counts around the panel of 16.
    #[test]
    fn gemm_matches_scalar(
        fi in 0usize..common::gemm_types().len(),
        rows in 1usize..=50,
        col_blocks in 1usize..=15,
        n_tokens in 1usize..=41,
        seed in any::<u64>(),
    ) {
        let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
        let fmt = QuantFormat::Ggml(common::gemm_types()[fi]);
        let col_blocks = if fmt.block_size() == 256 { col_blocks.div_ceil(5) } else { col_blocks };
        check(fmt, rows, col_blocks, n_tokens, seed, &pools);
    }
}

#[test]
fn gemm_on_large_matrices_with_both_threads() {
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    for ty in common::gemm_types() {
        let fmt = QuantFormat::Ggml(ty);
        let col_blocks = if fmt.block_size() == 256 { 3 } else { 20 };
        check(fmt, 133, col_blocks, 27, 11, &pools);
    }
}

/// Every token count of a server's decode step (2..=16, and 17 past the fused kernel's limit)
/// on every repackable type, with a last partial panel (37 rows): the repacked weights
/// (`RepackedGemm::tokens` up to 16 tokens, AVX-512) give the bits of the GGUF blocks, and a
/// token's results do not depend on the tokens beside it.
#[test]
fn few_tokens_on_repacked_weights() {
    let pools = [ThreadPool::new(1).unwrap()];
    let pool = &pools[0];
    let rows = 37;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q6_K,
    ] {
        let fmt = QuantFormat::Ggml(ty);
        let col_blocks = if fmt.block_size() == 256 { 2 } else { 9 };
        for n_tokens in 2..=17 {
            check(
                fmt,
                rows,
                col_blocks,
                n_tokens,
                100 + n_tokens as u64,
                &pools,
            );
        }
        // Batch invariance on the repacked weights, 16 tokens against each one alone.
        let cols = col_blocks * fmt.block_size().max(32);
        let mut rng = Rng(9);
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.unit_f32()).collect();
        let mut w = vec![0u8; rows * cols / fmt.block_size() * fmt.type_size()];
        quant::quantize_format(fmt, &x, &mut w).unwrap();
        let m = QMatrix::new(fmt, &w, rows, cols).unwrap();
        let n_tokens = 16;
        let input: Vec<f32> = (0..n_tokens * cols).map(|_| rng.unit_f32()).collect();
        for isa in Isa::available() {
            let k = Kernels::get(isa).unwrap();
            let Some(rp) = k.repack(&m) else { continue };
            let mr = m.with_repacked(&rp).unwrap();
            let mut all = vec![0f32; rows * n_tokens];
            k.matmul(pool, &mr, &input, n_tokens, &mut all).unwrap();
            for t in 0..n_tokens {
                let mut one = vec![0f32; rows];
                k.matmul(pool, &mr, &input[t * cols..(t + 1) * cols], 1, &mut one)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&one),
                    bits(&all[t * rows..(t + 1) * rows]),
                    "repacked {fmt} {} token {t}",
                    isa.name()
                );
            }
        }
    }
}

/// A batch gives bit for bit the results of its tokens one at a time (so a prompt's logits do
/// not depend on how it is split into batches), on every ISA and for every format.
#[test]
fn a_batch_equals_its_tokens_one_by_one() {
    let pool = ThreadPool::new(2).unwrap();
    let (rows, n_tokens) = (300, 21);
    for fmt in FORMATS {
        let cols = 4 * fmt.block_size().max(32);
        let mut rng = Rng(5);
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.unit_f32()).collect();
        let mut w = vec![0u8; rows * cols / fmt.block_size() * fmt.type_size()];
        quant::quantize_format(fmt, &x, &mut w).unwrap();
        let m = QMatrix::new(fmt, &w, rows, cols).unwrap();
        let input: Vec<f32> = (0..n_tokens * cols).map(|_| rng.unit_f32()).collect();
        for isa in Isa::available() {
            let k = Kernels::get(isa).unwrap();
            let mut all = vec![0f32; rows * n_tokens];
            k.matmul(&pool, &m, &input, n_tokens, &mut all).unwrap();
            for t in 0..n_tokens {
                let mut one = vec![0f32; rows];
                k.matmul(&pool, &m, &input[t * cols..(t + 1) * cols], 1, &mut one)
                    .unwrap();
                assert_eq!(
                    one,
                    all[t * rows..(t + 1) * rows],
                    "{fmt} {} token {t}",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn large_matrices_use_both_threads_and_agree() {
    // Large enough to take the threaded path (more than 32 KiB of weights).
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    for fmt in [
        QuantFormat::Ggml(GgmlType::Q4_0),
        QuantFormat::Ggml(GgmlType::Q6_K),
    ] {
        for n_tokens in [1, 5] {
            check(fmt, 300, 2, n_tokens, 7, &pools);
        }
    }
}

#[test]
fn errors_are_values() {
    let pool = ThreadPool::new(2).unwrap();
    let k = Kernels::best();
    let w = vec![0u8; 4 * 18];
    // cols not a whole number of blocks; data too short.
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, &w, 2, 48),
        Err(MatmulError::Kernel(_))
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, &w, 3, 64),
        Err(MatmulError::WeightSize { .. })
    ));
    let m = QMatrix::new(GgmlType::Q4_0, &w, 2, 64).unwrap();
    let mut out = vec![0f32; 2];
    // Wrong input length, short output, wrong activation type.
    assert!(matches!(
        k.matmul(&pool, &m, &[0.0; 63], 1, &mut out),
        Err(MatmulError::InputSize { .. })
    ));
    assert!(matches!(
        k.matmul(&pool, &m, &[0.0; 128], 2, &mut out),
        Err(MatmulError::OutputSize { .. })
    ));
    let mut acts = QuantizedActs::new();
    k.quantize_acts(GgmlType::Q8_1, &[0.0; 64], 1, 64, &mut acts)
        .unwrap();
    assert!(matches!(
        k.matmul_q(&pool, &m, &acts, &mut out),
        Err(MatmulError::ActsMismatch { .. })
    ));
    // An unsupported weight type.
    let bad = QMatrix {
        ty: GgmlType::IQ2_XXS.into(),
        data: &[0u8; 66],
        rows: 1,
        cols: 256,
        repacked: None,
    };
    assert!(k.matmul(&pool, &bad, &[0.0; 256], 1, &mut out).is_err());
    // A struct built by hand with too little data is caught too.
    let short = QMatrix {
        ty: GgmlType::Q4_0.into(),
        data: &w[..10],
        rows: 2,
        cols: 64,
        repacked: None,
    };
    assert!(k.matmul(&pool, &short, &[0.0; 64], 1, &mut out).is_err());
    // A repacked form of another matrix is refused.
    if let Some(rp) = k.repack(&m) {
        let other = QMatrix {
            rows: 1,
            repacked: Some(&rp),
            ..m
        };
        assert!(matches!(
            k.matmul(&pool, &other, &[0.0; 64], 1, &mut out),
            Err(MatmulError::RepackMismatch)
        ));
    }
    // Zero tokens: nothing to do.
    assert!(k.matmul(&pool, &m, &[], 0, &mut []).is_ok());
}

/// A group of products (one pool hand-out for the GEMM ones) gives bit for bit the results of
/// its products one at a time, whatever the mix of formats; a bad job fails the whole group
/// before anything runs.
#[test]
fn a_group_equals_its_products_one_by_one() {
    use tinyrt_kernels::cpu::MatmulJob;
    let pool = ThreadPool::new(2).unwrap();
    let fmts = [
        QuantFormat::Ggml(GgmlType::Q4_K),
        QuantFormat::Ggml(GgmlType::F16),
        QuantFormat::Ggml(GgmlType::Q4_0),
        QuantFormat::Ggml(GgmlType::Q6_K),
        QuantFormat::Ggml(GgmlType::Q8_0),
    ];
    let cols = 512;
    let rows = [97, 33, 200, 16, 5];
    let mut rng = Rng(77);
    let weights: Vec<Vec<u8>> = fmts
        .iter()
        .zip(rows)
        .map(|(&fmt, r)| {
            let x: Vec<f32> = (0..r * cols).map(|_| rng.unit_f32()).collect();
            let mut w = vec![0u8; r * cols / fmt.block_size() * fmt.type_size()];
            quant::quantize_format(fmt, &x, &mut w).unwrap();
            w
        })
        .collect();
    let mats: Vec<QMatrix> = fmts
        .iter()
        .zip(&weights)
        .zip(rows)
        .map(|((&fmt, w), r)| QMatrix::new(fmt, w, r, cols).unwrap())
        .collect();
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        for n_tokens in [1, 3, 12] {
            let input: Vec<f32> = (0..n_tokens * cols).map(|_| rng.unit_f32()).collect();
            let acts: Vec<QuantizedActs> = fmts
                .iter()
                .map(|&fmt| {
                    let mut a = QuantizedActs::new();
                    k.quantize_acts(k.act_type(fmt).unwrap(), &input, n_tokens, cols, &mut a)
                        .unwrap();
                    a
                })
                .collect();
            let mut outs: Vec<Vec<f32>> =
                rows.iter().map(|&r| vec![f32::NAN; r * n_tokens]).collect();
            let mut jobs: Vec<MatmulJob> = mats
                .iter()
                .zip(&acts)
                .zip(outs.iter_mut())
                .map(|((w, acts), out)| MatmulJob { w, acts, out })
                .collect();
            k.matmul_q_group(&pool, &mut jobs).unwrap();
            for ((m, a), out) in mats.iter().zip(&acts).zip(&outs) {
                let mut one = vec![f32::NAN; m.rows * n_tokens];
                k.matmul_q(&pool, m, a, &mut one).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(out),
                    bits(&one),
                    "{} {} tokens={n_tokens}",
                    m.ty,
                    isa.name()
                );
            }
            // The last job's activations are of the wrong type for its weights (when the
            // types differ): the group fails and leaves every output untouched.
            let mut fresh: Vec<Vec<f32>> =
                rows.iter().map(|&r| vec![f32::NAN; r * n_tokens]).collect();
            let wrong = &acts[1];
            if wrong.ty() != acts[4].ty() {
                let mut jobs: Vec<MatmulJob> = mats
                    .iter()
                    .zip(acts.iter().take(4).chain([wrong]))
                    .zip(fresh.iter_mut())
                    .map(|((w, acts), out)| MatmulJob { w, acts, out })
                    .collect();
                assert!(matches!(
                    k.matmul_q_group(&pool, &mut jobs),
                    Err(MatmulError::ActsMismatch { .. })
                ));
                assert!(fresh.iter().flatten().all(|x| x.is_nan()));
            }
        }
    }
}

/// Converting a batch's activations on the pool gives the bytes of converting them on one
/// thread, for every activation type and batch size.
#[test]
fn pooled_activation_conversion_equals_serial() {
    let pool = ThreadPool::new(2).unwrap();
    let cols = 512;
    let mut rng = Rng(3);
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            for n_tokens in [0, 1, 2, 15, 16, 17, 40] {
                let x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.unit_f32()).collect();
                let (mut a, mut b) = (QuantizedActs::new(), QuantizedActs::new());
                k.quantize_acts(act, &x, n_tokens, cols, &mut a).unwrap();
                k.quantize_acts_on(Some(&pool), act, &x, n_tokens, cols, &mut b)
                    .unwrap();
                assert_eq!(a.n_tokens(), b.n_tokens());
                for t in 0..n_tokens {
                    assert_eq!(a.row(t), b.row(t), "{act} {} tokens={n_tokens}", isa.name());
                }
            }
        }
    }
}
