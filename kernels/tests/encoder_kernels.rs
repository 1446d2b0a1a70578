//! The encoders' kernels against their references on every ISA this CPU has: the float GEMM
//! (`cpu::fgemm`, bit for bit with `panel_ref` and within float rounding of an f64 product)
//! and the packed bidirectional attention (`cpu::attention::packed`, bit for bit with
//! `attend_packed_ref`, and within rounding of an f64 softmax attention).

use tinyrt_kernels::cpu::attention::packed::{attend_packed_ref, attention_packed, PackedJob};
use tinyrt_kernels::cpu::fgemm::{FloatPanels, PanelJob, FPANEL};
use tinyrt_kernels::cpu::pool::Sequential;
use tinyrt_kernels::cpu::{Isa, Kernels, ThreadPool};
use tinyrt_kernels::rng::SplitMix64 as Rng;

fn gauss(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gauss_f32()).collect()
}

/// The reference product over the whole matrix, panel by panel.
fn reference(w: &FloatPanels, x: &[f32], n_tokens: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n_tokens * w.rows];
    for p in 0..w.n_panels() {
        let r0 = p * FPANEL;
        let job = PanelJob {
            panel: w.panel(p),
            cols: w.cols,
            x,
            n_tokens,
            // SAFETY: r0 < rows, inside `out`.
            out: unsafe { out.as_mut_ptr().add(r0) },
            out_stride: w.rows,
            n_rows: (w.rows - r0).min(FPANEL),
        };
        // SAFETY: the panel holds 32 × cols values, x n_tokens × cols, and the output rows of
        // the panel are inside `out` for every token.
        unsafe { tinyrt_kernels::cpu::fgemm::panel_ref(&job) };
    }
    out
}

#[test]
fn float_gemm_matches_its_reference_bit_for_bit_on_every_isa() {
    let mut rng = Rng::new(17);
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    for &(rows, cols) in &[(1, 1), (5, 3), (32, 64), (45, 384), (100, 17), (384, 1536)] {
        let wv = gauss(&mut rng, rows * cols);
        for f16 in [false, true] {
            let w = FloatPanels::pack(rows, cols, f16, |r, buf| {
                buf.copy_from_slice(&wv[r * cols..(r + 1) * cols])
            });
            for n_tokens in [1usize, 2, 5, 6, 7, 13, 40] {
                let x = gauss(&mut rng, n_tokens * cols);
                let want = reference(&w, &x, n_tokens);
                // The reference against an f64 product of the same (rounded) weights.
                for t in 0..n_tokens {
                    for r in 0..rows {
                        let (mut dot, mut mag) = (0.0f64, 0.0f64);
                        for c in 0..cols {
                            let wr = wv[r * cols + c];
                            let wr = if f16 {
                                half::f16::from_f32(wr).to_f32()
                            } else {
                                wr
                            };
                            let p = wr as f64 * x[t * cols + c] as f64;
                            dot += p;
                            mag += p.abs();
                        }
                        let got = want[t * rows + r] as f64;
                        assert!(
                            (got - dot).abs() <= 1e-6 * mag + 1e-30,
                            "{rows}x{cols} t{t} r{r}: {got} vs {dot}"
                        );
                    }
                }
                for isa in Isa::available() {
                    let k = Kernels::get(isa).unwrap();
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n_tokens * rows];
                        k.matmul_panels(pool, &w, &x, n_tokens, &mut out);
                        assert!(
                            out.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{isa:?} {rows}x{cols} f16={f16} tokens {n_tokens} threads {}",
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn float_gemm_group_equals_its_products_one_by_one() {
    let mut rng = Rng::new(5);
    let (cols, n) = (64, 9);
    let mats: Vec<FloatPanels> = [40usize, 64, 7]
        .iter()
        .map(|&rows| {
            let v = gauss(&mut rng, rows * cols);
            FloatPanels::pack(rows, cols, false, |r, b| {
                b.copy_from_slice(&v[r * cols..][..cols])
            })
        })
        .collect();
    let x = gauss(&mut rng, n * cols);
    let pool = ThreadPool::new(2).unwrap();
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0; n * m.rows]).collect();
        {
            let mut jobs: Vec<(&FloatPanels, &mut [f32])> = mats
                .iter()
                .zip(outs.iter_mut())
                .map(|(m, o)| (m, &mut o[..]))
                .collect();
            k.matmul_panels_group(&pool, &mut jobs, &x, n);
        }
        for (m, got) in mats.iter().zip(&outs) {
            assert_eq!(got, &reference(m, &x, n), "{isa:?}");
        }
    }
}

/// f64 softmax attention of one (sequence, head).
fn attention_f64(job: &PackedJob) -> Vec<f64> {
    let (hd, n) = (job.head_dim, job.len());
    let mut out = vec![0.0f64; n * hd];
    for t in 0..n {
        let q = job.q_row(t);
        let s: Vec<f64> = (0..n)
            .map(|j| {
                let k = &job.k[job.kv_offset(j)..][..hd];
                q.iter()
                    .zip(k)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * job.scale as f64
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for d in 0..hd {
            out[t * hd + d] = (0..n)
                .map(|j| e[j] * job.v[job.kv_offset(j) + d] as f64)
                .sum::<f64>()
                / sum;
        }
    }
    out
}

#[test]
fn packed_attention_matches_its_reference_on_every_isa() {
    let mut rng = Rng::new(29);
    let pool = ThreadPool::new(2).unwrap();
    for &(n_heads, n_kv, hd) in &[(1, 1, 8), (4, 4, 64), (6, 2, 32), (2, 1, 40), (3, 3, 7)] {
        for lens in [vec![1u32], vec![3, 1, 17], vec![300], vec![16, 0, 33, 2]] {
            let mut seqs = vec![0u32];
            for l in &lens {
                seqs.push(seqs.last().unwrap() + l);
            }
            let n = *seqs.last().unwrap() as usize;
            let q = gauss(&mut rng, n * n_heads * hd);
            let k = gauss(&mut rng, n * n_kv * hd);
            let v = gauss(&mut rng, n * n_kv * hd);
            let scale = 1.0 / (hd as f32).sqrt();
            // The reference, job by job, and against f64.
            let mut want = vec![0.0f32; n * n_heads * hd];
            for s in 0..lens.len() {
                for h in 0..n_heads {
                    let job = PackedJob {
                        q: &q,
                        k: &k,
                        v: &v,
                        n_heads,
                        n_kv_heads: n_kv,
                        head_dim: hd,
                        scale,
                        rows: seqs[s] as usize..seqs[s + 1] as usize,
                        head: h,
                    };
                    let mut o = vec![0.0f32; job.len() * hd];
                    attend_packed_ref(&job, &mut o);
                    let exact = attention_f64(&job);
                    for (t, r) in job.rows.clone().enumerate() {
                        for d in 0..hd {
                            let (a, b) = (o[t * hd + d] as f64, exact[t * hd + d]);
                            assert!((a - b).abs() < 1e-5, "ref vs f64: {a} {b}");
                            want[r * n_heads * hd + h * hd + d] = o[t * hd + d];
                        }
                    }
                }
            }
            for isa in Isa::available() {
                for par in [
                    &Sequential as &dyn tinyrt_kernels::cpu::pool::ParallelRun,
                    &pool,
                ] {
                    let mut out = vec![f32::NAN; n * n_heads * hd];
                    attention_packed(
                        isa,
                        &q,
                        &k,
                        &v,
                        &seqs,
                        (n_heads, n_kv, hd),
                        scale,
                        &mut out,
                        par,
                    );
                    assert!(
                        out.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} heads {n_heads}/{n_kv} hd {hd} lens {lens:?}"
                    );
                }
            }
        }
    }
}
