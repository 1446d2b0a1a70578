//! GFLOP/s of the float GEMM (`Kernels::matmul_panels`) on all-MiniLM-L6-v2's shapes:
//! `cargo run --release -p tinyrt-benches --example fgemm_speed [THREADS]`.

use std::time::Instant;

use tinyrt_kernels::cpu::fgemm::FloatPanels;
use tinyrt_kernels::cpu::{Isa, Kernels, ThreadPool};
use tinyrt_kernels::rng::SplitMix64;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let pool = ThreadPool::new(threads).unwrap();
    let k = Kernels::get(Isa::detect()).unwrap();
    let mut rng = SplitMix64::new(1);
    for &(rows, cols) in &[(384usize, 384usize), (1536, 384), (384, 1536)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.gauss_f32()).collect();
        for f16 in [false, true] {
            let p = FloatPanels::pack(rows, cols, f16, |r, b| {
                b.copy_from_slice(&w[r * cols..(r + 1) * cols])
            });
            for &n in &[16usize, 256, 640] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gauss_f32()).collect();
                let mut out = vec![0.0f32; n * rows];
                k.matmul_panels(&pool, &p, &x, n, &mut out);
                let reps = (2e9 / (2.0 * (rows * cols * n) as f64)).ceil() as usize;
                let t = Instant::now();
                for _ in 0..reps {
                    k.matmul_panels(&pool, &p, &x, n, &mut out);
                }
                let s = t.elapsed().as_secs_f64();
                let gflops = 2.0 * (rows * cols * n * reps) as f64 / s / 1e9;
                println!(
                    "{rows}x{cols} f16={f16} tokens {n}: {gflops:.1} GFLOP/s ({threads} threads)"
                );
            }
        }
    }
}
