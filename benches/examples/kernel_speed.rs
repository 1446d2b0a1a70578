//! Quick kernel speed table that tolerates a busy host: every case is timed many times and the
//! *minimum* is reported (preemptions only ever add time).
//!
//! `cargo run -p tinyrt-benches --example kernel_speed --release [-- FILTER]`
//!
//! Build it optimised (`--release`): the `ci` profile keeps debug assertions, whose checks inside
//! every SIMD load make the kernels several times slower.
//!
//! Columns: the read bandwidth probe; matvec of an L2-resident 576×1536 matrix on one thread
//! ("hot", compute speed of the kernel); matvec of 2048×5632 streamed from a 1 GiB arena on 2
//! threads ("stream", what decode sees); prefill of 16 tokens × 2048×2048 on one thread
//! (GFLOP/s); and how much faster the four-token kernel is than four single-token calls.

use std::time::{Duration, Instant};

use tinyrt_benches::{Arena, Rng};
use tinyrt_kernels::cpu::{Isa, Kernels, QMatrix, QuantizedActs, ThreadPool};
use tinyrt_kernels::quant::{GgmlType, QuantFormat};

fn min_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut n = 0;
    while n < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        n += 1;
    }
    best
}

fn acts_for(k: &Kernels, fmt: QuantFormat, cols: usize, n_tokens: usize) -> QuantizedActs {
    let mut rng = Rng(3);
    let x: Vec<f32> = (0..cols * n_tokens).map(|_| rng.unit_f32()).collect();
    let mut acts = QuantizedActs::new();
    k.quantize_acts(
        k.act_type(fmt).expect("kernel"),
        &x,
        n_tokens,
        cols,
        &mut acts,
    )
    .expect("quantize");
    acts
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let pool1 = ThreadPool::new(1).expect("pool");
    let pool2 = ThreadPool::new(2).expect("pool");
    let budget = Duration::from_millis(400);

    // The probe reads the same 6.5 MB windows of a 1 GiB buffer as the streamed matvec below,
    // so that both minimums are taken over calls of the same length.
    let best = Kernels::best();
    let mut probe_arena = Arena::new(GgmlType::Q4_0.into(), 1 << 30, 1);
    let win = 2048 * 5632 / 32 * 18;
    let t2 = min_time(Duration::from_secs(1), || {
        let w = probe_arena.next_window(win);
        pool2.run_dynamic(|i, n| {
            let c = w.len() / n;
            std::hint::black_box(best.read_probe(&w[i * c..(i + 1) * c]));
        })
    });
    let t1 = min_time(Duration::from_secs(1), || {
        std::hint::black_box(best.read_probe(probe_arena.next_window(win)));
    });
    drop(probe_arena);
    let gbs = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / 1e9;
    println!(
        "read bandwidth ({}, {:.1} MB windows of a 1 GiB buffer): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s",
        best.isa.name(),
        win as f64 / 1e6,
        gbs(win, t1),
        gbs(win, t2)
    );
    println!("| type | ISA | hot 576x1536 1t GB/s | stream 2048x5632 1t / 2t GB/s | prefill 16 tok 2048x2048 1t GFLOP/s | 4-token kernel speed-up |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let formats: Vec<QuantFormat> = vec![
        GgmlType::Q4_0.into(),
        GgmlType::Q4_1.into(),
        GgmlType::Q5_0.into(),
        GgmlType::Q5_1.into(),
        GgmlType::Q8_0.into(),
        GgmlType::Q4_K.into(),
        GgmlType::Q5_K.into(),
        GgmlType::Q6_K.into(),
        GgmlType::IQ4_NL.into(),
        QuantFormat::Nf4,
        GgmlType::F16.into(),
    ];
    for fmt in formats {
        if !fmt.name().contains(filter.as_str()) {
            continue;
        }
        let mut arena = Arena::new(fmt, 1 << 30, 11);
        for isa in Isa::available().into_iter().rev() {
            let k = Kernels::get(isa).expect("available");
            let bytes_of = |r: usize, c: usize| r * c / fmt.block_size() * fmt.type_size();
            // Hot: one small matrix, one thread.
            let (r, c) = (576, 1536);
            let acts = acts_for(k, fmt, c, 1);
            let mut out = vec![0f32; r];
            let w = QMatrix::new(fmt, arena.first_window(bytes_of(r, c)), r, c).expect("matrix");
            let hot = min_time(budget, || {
                k.matmul_q(&pool1, &w, &acts, &mut out).expect("matmul")
            });
            // Stream: a large matrix from the arena, two threads.
            let (r, c) = (2048, 5632);
            let acts = acts_for(k, fmt, c, 1);
            let mut out = vec![0f32; r];
            let stream = min_time(budget, || {
                let w = QMatrix::new(fmt, arena.next_window(bytes_of(r, c)), r, c).expect("matrix");
                k.matmul_q(&pool2, &w, &acts, &mut out).expect("matmul")
            });
            let stream1 = min_time(budget, || {
                let w = QMatrix::new(fmt, arena.next_window(bytes_of(r, c)), r, c).expect("matrix");
                k.matmul_q(&pool1, &w, &acts, &mut out).expect("matmul")
            });
            // Prefill, one thread (short calls: the minimum is meaningful on a busy host).
            let (r, c, n) = (2048, 2048, 16);
            let pre = if isa == Isa::Scalar {
                None
            } else {
                let acts = acts_for(k, fmt, c, n);
                let mut out = vec![0f32; r * n];
                let w =
                    QMatrix::new(fmt, arena.first_window(bytes_of(r, c)), r, c).expect("matrix");
                let t = min_time(budget, || {
                    k.matmul_q(&pool1, &w, &acts, &mut out).expect("matmul")
                });
                Some(2.0 * (r * c * n) as f64 / t.as_secs_f64() / 1e9)
            };
            // The four-token kernel against four single-token calls, over a hot 576x1536 matrix.
            let speedup = if k.has_vec_dot4(fmt) {
                let (r, c) = (576, 1536);
                let acts = acts_for(k, fmt, c, 4);
                let rb = bytes_of(1, c);
                let w = arena.first_window(bytes_of(r, c));
                let a = [acts.row(0), acts.row(1), acts.row(2), acts.row(3)];
                let t1 = min_time(budget, || {
                    for row in w.chunks_exact(rb) {
                        for a in a {
                            std::hint::black_box(k.vec_dot(fmt, c, row, a).expect("dot"));
                        }
                    }
                });
                let t4 = min_time(budget, || {
                    for row in w.chunks_exact(rb) {
                        std::hint::black_box(k.vec_dot4(fmt, c, row, a).expect("dot"));
                    }
                });
                format!("{:.2}x", t1.as_secs_f64() / t4.as_secs_f64())
            } else {
                "-".to_string()
            };
            println!(
                "| {fmt} | {} | {:.1} | {:.1} / {:.1} | {} | {speedup} |",
                isa.name(),
                gbs(bytes_of(576, 1536), hot),
                gbs(bytes_of(2048, 5632), stream1),
                gbs(bytes_of(2048, 5632), stream),
                pre.map_or("-".to_string(), |g| format!("{g:.0}"))
            );
        }
    }
}
