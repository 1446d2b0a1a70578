//! Kernel microbenchmarks (filled in by the CPU kernels work).
use criterion::{criterion_group, criterion_main, Criterion};

fn bench_placeholder(c: &mut Criterion) {
    c.bench_function("noop", |b| b.iter(|| std::hint::black_box(1u32) + 1));
}

criterion_group!(benches, bench_placeholder);
criterion_main!(benches);
