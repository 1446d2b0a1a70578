//! Helpers shared by the GPU tests: the device or a skip, a seeded generator, poisoned
//! buffers, CPU references.

pub use half::f16;
pub use tinyrt_cuda::{
    driver_available, AttentionShape, CudaDevice, CudaError, GluActivation, RopeMode, WeightType,
};
pub use tinyrt_kernels::cpu::ops;
pub use tinyrt_kernels::cpu::Isa;
pub use tinyrt_kernels::quant::{self, BlockQ8_1, GgmlType, QuantFormat};
use tinyrt_kernels::rng::SplitMix64;

pub fn required() -> bool {
    std::env::var("TINYRT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The device, or `None` (test skipped) when there is none.
pub fn device() -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(!required(), "TINYRT_REQUIRE_GPU=1 but no GPU: {e}");
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// Test data from the workspace's seeded generator (`tinyrt_kernels::rng`).
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        self.0.unit_f32()
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// An output buffer filled with NaN, so that an element a kernel fails to write shows up.
pub fn poison_f32(dev: &CudaDevice, n: usize) -> tinyrt_cuda::DeviceBuffer<f32> {
    dev.upload(&vec![f32::NAN; n]).unwrap()
}

/// A byte buffer filled with a pattern no kernel output should keep.
pub fn poison_u8(dev: &CudaDevice, n: usize) -> tinyrt_cuda::DeviceBuffer<u8> {
    dev.upload(&vec![0xA5u8; n]).unwrap()
}

pub fn format(ty: WeightType) -> QuantFormat {
    match ty {
        WeightType::F32 => QuantFormat::Ggml(GgmlType::F32),
        WeightType::F16 => QuantFormat::Ggml(GgmlType::F16),
        WeightType::Q4_0 => QuantFormat::Ggml(GgmlType::Q4_0),
        WeightType::Q4_1 => QuantFormat::Ggml(GgmlType::Q4_1),
        WeightType::Q5_0 => QuantFormat::Ggml(GgmlType::Q5_0),
        WeightType::Q8_0 => QuantFormat::Ggml(GgmlType::Q8_0),
        WeightType::Q4_K => QuantFormat::Ggml(GgmlType::Q4_K),
        WeightType::Q5_K => QuantFormat::Ggml(GgmlType::Q5_K),
        WeightType::Q6_K => QuantFormat::Ggml(GgmlType::Q6_K),
        WeightType::IQ4_NL => QuantFormat::Ggml(GgmlType::IQ4_NL),
        WeightType::NF4 => QuantFormat::Nf4,
    }
}

/// Random weights quantized by the CPU reference quantizer; returns (bytes, dequantized).
pub fn random_weights(
    rng: &mut Rng,
    ty: WeightType,
    nrows: usize,
    ncols: usize,
) -> (Vec<u8>, Vec<f32>) {
    let x = rng.vec(nrows * ncols, 1.0);
    let mut bytes = vec![0u8; ty.row_bytes(ncols).expect("whole blocks") * nrows];
    quant::quantize_format(format(ty), &x, &mut bytes).expect("quantize");
    let mut deq = vec![0.0f32; nrows * ncols];
    quant::dequantize_format(format(ty), &bytes, &mut deq).expect("dequantize");
    (bytes, deq)
}

pub fn q8_1_reference(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut blocks = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
    quant::quantize_row_q8_1(x, &mut blocks);
    let mut deq = vec![0.0f32; x.len()];
    quant::dequantize_row_q8_1(&blocks, &mut deq);
    let bytes: &[u8] = bytemuck::cast_slice::<BlockQ8_1, u8>(&blocks);
    (bytes.to_vec(), deq)
}

/// |got - want| <= tol for every element, with a message naming the worst one.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst: Option<(usize, f32)> = None;
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        // A NaN error counts as a failure.
        let ok = err <= tol(i);
        if !ok && worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: element {i}: got {} want {} (error {err}, tolerance {})",
            got[i],
            want[i],
            tol(i)
        );
    }
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

pub fn dot_f64(a: &[f32], b: &[f32]) -> (f32, f32) {
    let mut s = 0.0f64;
    let mut abs = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        s += *x as f64 * *y as f64;
        abs += (*x as f64 * *y as f64).abs();
    }
    (s as f32, abs as f32)
}

/// Causal attention in f64 over f16-rounded K/V: the formula the kernel implements.
#[allow(clippy::too_many_arguments)]
pub fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    ntok: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
    window: Option<usize>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; ntok * n_head * hd];
    for t in 0..ntok {
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qh = &q[(t * n_head + h) * hd..][..hd];
            let len = pos0 + t + 1;
            let lo = window.map_or(0, |w| len.saturating_sub(w));
            let scores: Vec<f64> = (lo..len)
                .map(|p| {
                    let kp = &k[(p * n_kv + kvh) * hd..][..hd];
                    qh.iter()
                        .zip(kp)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = w.iter().sum();
            for e in 0..hd {
                let acc: f64 = (lo..len)
                    .map(|p| w[p - lo] * v[(p * n_kv + kvh) * hd + e] as f64)
                    .sum();
                out[(t * n_head + h) * hd + e] = (acc / sum) as f32;
            }
        }
    }
    out
}

/// Rounds `x` through Q8_1 as the GPU's activation quantization does.
pub fn q8_1_round_trip(x: &[f32]) -> Vec<f32> {
    q8_1_reference(x).1
}

pub fn matvec_ref(w: &[f32], x: &[f32], nrows: usize) -> Vec<f32> {
    let ncols = x.len();
    (0..nrows)
        .map(|r| dot_f64(&w[r * ncols..(r + 1) * ncols], x).0)
        .collect()
}

/// The device copy of a CPU RoPE table: `max_pos` rows of `RopeCache::row`.
pub fn rope_table_rows(cache: &ops::RopeCache) -> Vec<f32> {
    (0..cache.max_pos())
        .flat_map(|p| cache.row(p).to_vec())
        .collect()
}

/// RoPE cases: (mode, n_head, head_dim, n_rot, base, freq_scale, Llama-3 frequency factors).
#[allow(clippy::type_complexity)]
pub fn rope_table_cases(
    rng: &mut Rng,
) -> Vec<(
    RopeMode,
    ops::RopeMode,
    usize,
    usize,
    usize,
    f32,
    f32,
    Option<Vec<f32>>,
)> {
    // Llama-3-like factors: 1 for high frequencies, up to 8 for low ones.
    let factors = |half: usize, rng: &mut Rng| -> Vec<f32> {
        (0..half)
            .map(|i| {
                if i < half / 2 {
                    1.0
                } else {
                    1.0 + 7.0 * rng.f32().abs()
                }
            })
            .collect()
    };
    vec![
        (
            RopeMode::Normal,
            ops::RopeMode::Normal,
            4,
            64,
            64,
            500_000.0,
            1.0,
            Some(factors(32, rng)),
        ),
        (
            RopeMode::Normal,
            ops::RopeMode::Normal,
            2,
            64,
            64,
            10_000.0,
            1.0,
            None,
        ),
        (
            RopeMode::Neox,
            ops::RopeMode::Neox,
            3,
            128,
            128,
            1_000_000.0,
            0.25,
            Some(factors(64, rng)),
        ),
        (
            RopeMode::Neox,
            ops::RopeMode::Neox,
            2,
            80,
            32,
            10_000.0,
            1.0,
            None,
        ),
        (
            RopeMode::Normal,
            ops::RopeMode::Normal,
            2,
            80,
            32,
            10_000.0,
            0.5,
            None,
        ),
    ]
}
