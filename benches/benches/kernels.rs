//! Kernel microbenchmarks: `cargo bench -p tinyrt-benches --bench kernels [-- FILTER]`.
//!
//! - `read_bw/{1,2}t`: read bandwidth of a 1 GiB buffer with the widest loads (the ceiling for
//!   decode); run in the same process as the matvecs so that the numbers are comparable.
//! - `matvec/{type}/{isa}/{rows}x{cols}`: one token, 2 threads, weights streamed from a 1 GiB
//!   arena (a different window each call, so they come from memory as in decode). Reported as
//!   bytes of weights per second.
//! - `matmul/{type}/{isa}/{rows}x{cols}x{tokens}`: prefill, 2 threads, reported as elements
//!   per second where one element is one FLOP (2·rows·cols·tokens per call).
//!
//! Shapes (rows × cols = outputs × inputs): SmolLM2-135M (576×1536 down, 1536×576 gate/up,
//! 576×576 attention, 49152×576 output) and TinyLlama-1.1B (2048×5632, 5632×2048, 2048×2048,
//! 32000×2048). Measurement times are short: these are for comparisons on a noisy host, not
//! for precision.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tinyrt_benches::{Arena, Rng};
use tinyrt_kernels::cpu::{Isa, Kernels, QMatrix, QuantizedActs, ThreadPool};
use tinyrt_kernels::quant::{GgmlType, QuantFormat};

const ARENA_BYTES: usize = 1 << 30;

const SMOLLM2: [(usize, usize); 4] = [(576, 1536), (1536, 576), (576, 576), (49152, 576)];
const TINYLLAMA: [(usize, usize); 4] = [(2048, 5632), (5632, 2048), (2048, 2048), (32000, 2048)];

/// The formats of the models this project targets, measured on every shape.
const MAIN_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// Other formats, measured on one TinyLlama shape with the best ISA.
fn other_formats() -> Vec<QuantFormat> {
    vec![
        GgmlType::Q5_0.into(),
        GgmlType::Q5_1.into(),
        GgmlType::Q5_K.into(),
        GgmlType::IQ4_NL.into(),
        QuantFormat::Nf4,
        GgmlType::Q2_K.into(),
        GgmlType::Q3_K.into(),
        GgmlType::F16.into(),
        GgmlType::BF16.into(),
        GgmlType::F32.into(),
    ]
}

fn pool() -> ThreadPool {
    ThreadPool::new(2).expect("thread pool")
}

fn bench_read_bandwidth(c: &mut Criterion) {
    let pool = pool();
    let k = Kernels::best();
    let buf = vec![1u8; ARENA_BYTES];
    let mut g = c.benchmark_group("read_bw");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("1t/{}", k.isa.name()), |b| {
        b.iter(|| std::hint::black_box(k.read_probe(&buf)))
    });
    g.bench_function(format!("2t/{}", k.isa.name()), |b| {
        b.iter(|| {
            pool.run(|i, n| {
                let chunk = buf.len() / n;
                std::hint::black_box(k.read_probe(&buf[i * chunk..(i + 1) * chunk]));
            })
        })
    });
    g.finish();
}

/// One matvec benchmark: weights from consecutive windows of the arena.
fn matvec_case(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    pool: &ThreadPool,
    k: &Kernels,
    arena: &mut Arena,
    rows: usize,
    cols: usize,
) {
    let fmt = arena.fmt;
    if !cols.is_multiple_of(fmt.block_size()) {
        return; // e.g. K-quants on SmolLM2's 576 columns (such files use other types there)
    }
    let bytes = rows * cols / fmt.block_size() * fmt.type_size();
    let act = k.act_type(fmt).expect("kernel");
    let mut rng = Rng(42);
    let x: Vec<f32> = (0..cols).map(|_| rng.unit_f32()).collect();
    let mut acts = QuantizedActs::new();
    k.quantize_acts(act, &x, 1, cols, &mut acts)
        .expect("quantize");
    let mut out = vec![0f32; rows];
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(
        BenchmarkId::new(format!("{fmt}/{}", k.isa.name()), format!("{rows}x{cols}")),
        |b| {
            b.iter(|| {
                let w = QMatrix::new(fmt, arena.next_window(bytes), rows, cols).expect("matrix");
                k.matmul_q(pool, &w, &acts, &mut out).expect("matmul");
            })
        },
    );
}

fn bench_matvec(c: &mut Criterion) {
    let pool = pool();
    let best = Kernels::best();
    let mut g = c.benchmark_group("matvec");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700));
    for ty in MAIN_TYPES {
        let mut arena = Arena::new(ty.into(), ARENA_BYTES, 7);
        for (rows, cols) in SMOLLM2.into_iter().chain(TINYLLAMA) {
            matvec_case(&mut g, &pool, best, &mut arena, rows, cols);
        }
        // The slower ISAs on one shape of each model.
        for isa in Isa::available().into_iter().filter(|i| *i != best.isa) {
            let k = Kernels::get(isa).expect("available");
            for (rows, cols) in [(576, 1536), (2048, 5632)] {
                matvec_case(&mut g, &pool, k, &mut arena, rows, cols);
            }
        }
    }
    for fmt in other_formats() {
        let mut arena = Arena::new(fmt, ARENA_BYTES, 7);
        matvec_case(&mut g, &pool, best, &mut arena, 2048, 5632);
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let pool = pool();
    let n_tokens = 64;
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let fmt: QuantFormat = ty.into();
        let arena = Arena::new(fmt, 16 << 20, 9);
        for isa in Isa::available().into_iter().rev() {
            let k = Kernels::get(isa).expect("available");
            let shapes: &[(usize, usize)] = if isa == Kernels::best().isa {
                &[(576, 1536), (2048, 2048), (5632, 2048)]
            } else if isa == Isa::Scalar {
                &[(576, 1536)]
            } else {
                &[(2048, 2048)]
            };
            for &(rows, cols) in shapes {
                if !cols.is_multiple_of(fmt.block_size()) {
                    continue;
                }
                let bytes = rows * cols / fmt.block_size() * fmt.type_size();
                let mut rng = Rng(5);
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
                let w = QMatrix::new(fmt, arena.first_window(bytes), rows, cols).expect("matrix");
                let mut out = vec![0f32; rows * n_tokens];
                g.throughput(Throughput::Elements((2 * rows * cols * n_tokens) as u64));
                g.bench_function(
                    BenchmarkId::new(
                        format!("{fmt}/{}", isa.name()),
                        format!("{rows}x{cols}x{n_tokens}"),
                    ),
                    |b| b.iter(|| k.matmul_q(&pool, &w, &acts, &mut out).expect("matmul")),
                );
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_read_bandwidth, bench_matvec, bench_matmul
}
criterion_main!(benches);
