//! The GEMM weight types give the same bits on every ISA: scalar and AVX2 compute the AVX-512
//! GEMM's float operations (`RowsJob` in `cpu/gemm.rs`), for every token count (decode
//! included), every row count (ragged 8- and 16-row groups) and 1 or 2 threads. Both quantized weights of random
//! floats and raw random blocks (every code, e.g. Q8_0's −128, with finite scales) are used; the
//! results are also checked against the scalar dot products within float rounding.

mod common;

use common::Rng;
use tinyrt_kernels::cpu::{Isa, Kernels, QMatrix, QuantizedActs, ThreadPool};
use tinyrt_kernels::quant::{self, GgmlType, QuantFormat};

/// `rows × cols` weights of `ty`: quantized random floats, or (`raw`) random bytes whose f16
/// scales are kept finite (the top exponent bit of d, and of Q4_0..Q5_1's m / Q4_K's dmin,
/// cleared).
fn weights(ty: GgmlType, rows: usize, cols: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
    let fmt = QuantFormat::Ggml(ty);
    let n = rows * cols / fmt.block_size() * fmt.type_size();
    if raw {
        let ts = fmt.type_size();
        (0..n)
            .map(|i| {
                let b = ((rng.next_u64() >> 32) as u32 >> 8) as u8;
                let o = i % ts;
                let scale_hi = if ty == GgmlType::Q6_K {
                    o == 209
                } else {
                    o == 1 || o == 3
                };
                if scale_hi {
                    b & 0x3F
                } else {
                    b
                }
            })
            .collect()
    } else {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.unit_f32()).collect();
        let mut w = vec![0u8; n];
        quant::quantize_format(fmt, &x, &mut w).unwrap();
        w
    }
}

#[test]
fn gemm_types_give_the_same_bits_on_every_isa() {
    let isas = Isa::available();
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    let scalar = Kernels::get(Isa::Scalar).unwrap();
    let mut rng = Rng(0x5eed);
    let mut checked = 0;
    for ty in common::gemm_types() {
        let fmt = QuantFormat::Ggml(ty);
        let col_counts: &[usize] = if fmt.block_size() == 256 {
            &[256, 512, 768]
        } else {
            &[32, 96, 256, 608]
        };
        for &cols in col_counts {
            for rows in [1, 15, 16, 17, 40] {
                for raw in [false, true] {
                    let w = weights(ty, rows, cols, raw, &mut rng);
                    let m = QMatrix::new(fmt, &w, rows, cols).unwrap();
                    let rb = w.len() / rows;
                    for n_tokens in [1, 2, 3, 5, 8, 9, 17] {
                        let input: Vec<f32> =
                            (0..n_tokens * cols).map(|_| 4.0 * rng.unit_f32()).collect();
                        let mut want: Option<(Isa, Vec<f32>)> = None;
                        for &isa in &isas {
                            let k = Kernels::get(isa).unwrap();
                            assert!(k.uses_gemm(fmt, n_tokens), "{ty} {}", isa.name());
                            for pool in &pools {
                                let mut out = vec![f32::NAN; rows * n_tokens];
                                k.matmul(pool, &m, &input, n_tokens, &mut out).unwrap();
                                let Some((isa0, ref w0)) = want else {
                                    want = Some((isa, out));
                                    continue;
                                };
                                for (i, (a, b)) in out.iter().zip(w0).enumerate() {
                                    assert_eq!(
                                        a.to_bits(),
                                        b.to_bits(),
                                        "{ty} raw={raw} rows={rows} cols={cols} tokens={n_tokens} \
                                         [{i}]: {} ({} threads) {a} vs {} {b}",
                                        isa.name(),
                                        pool.n_threads(),
                                        isa0.name()
                                    );
                                }
                                checked += 1;
                            }
                        }
                        // Against the scalar dot products (the same integer sums, the float
                        // steps in another order).
                        let (_, out) = want.unwrap();
                        let mut acts = QuantizedActs::new();
                        scalar
                            .quantize_acts(
                                scalar.act_type(fmt).unwrap(),
                                &input,
                                n_tokens,
                                cols,
                                &mut acts,
                            )
                            .unwrap();
                        let mut wd = vec![0f32; rows * cols];
                        quant::dequantize_format(fmt, &w, &mut wd).unwrap();
                        let mut ad = vec![0f32; cols];
                        for (i, o) in out.iter().enumerate() {
                            let (t, r) = (i / rows, i % rows);
                            if r == 0 {
                                quant::dequantize(acts.ty(), acts.row(t), &mut ad).unwrap();
                            }
                            let wr = &w[r * rb..(r + 1) * rb];
                            let d = scalar.vec_dot(fmt, cols, wr, acts.row(t)).unwrap();
                            // Float rounding relative to the sum of the magnitudes.
                            let mag: f32 = wd[r * cols..(r + 1) * cols]
                                .iter()
                                .zip(&ad)
                                .map(|(a, b)| (a * b).abs())
                                .sum();
                            let tol = 1e-5 * mag + 1e-6;
                            assert!(
                                (o - d).abs() <= tol,
                                "{ty} raw={raw} rows={rows} cols={cols} tokens={n_tokens} [{i}]: \
                                 {o} vs scalar dot {d}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(isas.len() == 1 || checked > 0);
}
