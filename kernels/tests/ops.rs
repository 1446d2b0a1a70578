//! Transformer ops: every ISA against the scalar reference, the scalar reference against direct
//! formulas (RoPE) and a naive materialised attention, multi-threaded against single-threaded.

mod common;

use common::{ggml_records, uniform_vec, Rng};
use half::f16;
use proptest::prelude::*;
use tinyrt_kernels::cpu::ops::{
    self, AttnParams, KvData, KvView, RayonRun, RopeCache, RopeCfg, RopeMode,
};
use tinyrt_kernels::cpu::scalar::ops as scalar_ops;
use tinyrt_kernels::cpu::{Isa, ThreadPool};

/// `cases` cases, or `PROPTEST_CASES` when set (for longer soak runs).
fn config_with(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn config() -> ProptestConfig {
    config_with(48)
}

/// |a - b| ≤ abs + rel·|b| element-wise, with a message naming the op, ISA and index.
fn assert_close(what: &str, isa: Isa, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what} [{}]: length", isa.name());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= abs + rel * w.abs()
        } else {
            g == w || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what} [{}]: index {i}: got {g}, want {w}", isa.name());
    }
}

fn simd_isas() -> Vec<Isa> {
    Isa::available()
}

/// Values in a "typical activation" range plus a few extremes.
fn activation() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        1 => -100.0f32..100.0,
        1 => prop::sample::select(vec![0.0f32, -0.0, 1e-30, -1e-30, 30.0, -30.0, 88.0, -88.0, 1e4, -1e4]),
    ]
}

fn vec_of(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(activation(), len)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn elementwise_match_scalar(x in vec_of(0..300usize), s in -4.0f32..4.0) {
        let y: Vec<f32> = x.iter().rev().map(|v| v * 0.5 - 1.0).collect();
        for isa in simd_isas() {
            let mut a = x.clone();
            let mut b = x.clone();
            ops::add_inplace(isa, &mut a, &y);
            ops::add_inplace(Isa::Scalar, &mut b, &y);
            assert_eq!(a, b, "add {}", isa.name());
            let mut a = x.clone();
            let mut b = x.clone();
            ops::scale_inplace(isa, &mut a, s);
            ops::scale_inplace(Isa::Scalar, &mut b, s);
            assert_eq!(a, b, "scale {}", isa.name());
        }
    }

    #[test]
    fn f16_rows_match_scalar(x in prop::collection::vec(prop_oneof![
        4 => -70000.0f32..70000.0,
        4 => -1.0f32..1.0,
        1 => -1e-4f32..1e-4,
        1 => prop::sample::select(vec![f32::INFINITY, f32::NEG_INFINITY, 65504.0, 65520.0, 6e-8, -0.0]),
    ], 0..300usize)) {
        let mut want = vec![0u16; x.len()];
        for (w, &v) in want.iter_mut().zip(&x) {
            *w = f16::from_f32(v).to_bits();
        }
        for isa in Isa::available() {
            let mut h = vec![0u16; x.len()];
            ops::f32_to_f16_row(isa, &x, &mut h);
            assert_eq!(h, want, "f32_to_f16_row {}", isa.name());
            let mut back = vec![0f32; x.len()];
            ops::f16_to_f32_row(isa, &h, &mut back);
            let want_back: Vec<f32> = want.iter().map(|&b| f16::from_bits(b).to_f32()).collect();
            assert_eq!(back, want_back, "f16_to_f32_row {}", isa.name());
        }
    }

    #[test]
    fn activations_match_scalar(x in vec_of(0..300usize)) {
        let up: Vec<f32> = x.iter().map(|v| (v * 0.37).sin() * 2.0).collect();
        let mut gelu_ref = x.clone();
        ops::gelu_tanh_inplace(Isa::Scalar, &mut gelu_ref);
        let mut swiglu_ref = vec![0.0; x.len()];
        ops::swiglu(Isa::Scalar, &x, &up, &mut swiglu_ref);
        let mut geglu_ref = vec![0.0; x.len()];
        ops::geglu_tanh(Isa::Scalar, &x, &up, &mut geglu_ref);
        for isa in simd_isas() {
            // GELU is a lookup in ggml's f16 table on every ISA: exact.
            let mut a = x.clone();
            ops::gelu_tanh_inplace(isa, &mut a);
            prop_assert_eq!(&a, &gelu_ref, "gelu_tanh [{}]", isa.name());
            let mut a = vec![0.0; x.len()];
            ops::swiglu(isa, &x, &up, &mut a);
            assert_close("swiglu", isa, &a, &swiglu_ref, 1e-6, 2e-6);
            let mut a = vec![0.0; x.len()];
            ops::geglu_tanh(isa, &x, &up, &mut a);
            prop_assert_eq!(&a, &geglu_ref, "geglu_tanh [{}]", isa.name());
            let mut a = x.clone();
            ops::swiglu_inplace(isa, &mut a, &up);
            assert_close("swiglu_inplace", isa, &a, &swiglu_ref, 1e-6, 2e-6);
            let mut a = x.clone();
            ops::geglu_tanh_inplace(isa, &mut a, &up);
            prop_assert_eq!(&a, &geglu_ref, "geglu_tanh_inplace [{}]", isa.name());
        }
    }

    #[test]
    fn scalar_softmax_sums_to_one(mut x in vec_of(1..400usize), n_masked in 0usize..5) {
        // Masked entries (-inf) as an attention mask makes them.
        let n = x.len();
        for i in 0..n_masked.min(n - 1) {
            x[(i * 7919) % n] = f32::NEG_INFINITY;
        }
        if x.iter().all(|v| *v == f32::NEG_INFINITY) {
            x[0] = 0.0;
        }
        let mut want = x.clone();
        scalar_ops::softmax_inplace(&mut want);
        let total: f64 = want.iter().map(|&v| v as f64).sum();
        prop_assert!((total - 1.0).abs() < 1e-5, "scalar softmax sums to {total}");
    }

    #[test]
    fn norms_match_scalar(rows in 1usize..4, n in 1usize..200, seed in any::<u64>(), big in any::<bool>()) {
        let mut rng = Rng(seed);
        let mag = if big { 1e3 } else { 1.0 };
        let x: Vec<f32> = (0..rows * n).map(|_| rng.unit_f32() * mag + 0.1 * mag).collect();
        let w: Vec<f32> = (0..n).map(|_| rng.unit_f32() + 1.0).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.unit_f32()).collect();
        let mut rms_ref = vec![0.0; x.len()];
        ops::rms_norm(Isa::Scalar, &x, &w, 1e-6, &mut rms_ref);
        let mut ln_ref = vec![0.0; x.len()];
        ops::layer_norm(Isa::Scalar, &x, &w, Some(&b), 1e-5, &mut ln_ref);
        for isa in Isa::available() {
            let mut a = vec![0.0; x.len()];
            ops::rms_norm(isa, &x, &w, 1e-6, &mut a);
            assert_close("rms_norm", isa, &a, &rms_ref, 1e-6, 1e-5);
            let mut a = x.clone();
            ops::rms_norm_inplace(isa, &mut a, &w, 1e-6);
            assert_close("rms_norm_inplace", isa, &a, &rms_ref, 1e-6, 1e-5);
            let mut a = vec![0.0; x.len()];
            ops::layer_norm(isa, &x, &w, Some(&b), 1e-5, &mut a);
            assert_close("layer_norm", isa, &a, &ln_ref, 1e-5, 1e-4);
            let mut a = x.clone();
            ops::layer_norm_inplace(isa, &mut a, &w, Some(&b), 1e-5);
            assert_close("layer_norm_inplace", isa, &a, &ln_ref, 1e-5, 1e-4);
            let mut nb = vec![0.0; x.len()];
            ops::layer_norm(isa, &x, &w, None, 1e-5, &mut nb);
            for (i, (&with, &without)) in a.iter().zip(&nb).enumerate() {
                prop_assert!((with - b[i % n] - without).abs() <= 1e-4 * (1.0 + with.abs()));
            }
        }
        // The reference against the textbook formula in f64.
        for (xr, yr) in x.chunks(n).zip(rms_ref.chunks(n)) {
            let ms: f64 = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + 1e-6).sqrt();
            for i in 0..n {
                let want = xr[i] as f64 * inv * w[i] as f64;
                prop_assert!((yr[i] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
            }
        }
        for (xr, yr) in x.chunks(n).zip(ln_ref.chunks(n)) {
            let mean: f64 = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var: f64 = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..n {
                let want = (xr[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64;
                // Cancellation in x - mean when |mean| ≫ spread limits what f32 can give.
                prop_assert!((yr[i] as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()), "{} vs {}", yr[i], want);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// RoPE by the textbook formula in f64: pair i at position p turns by
/// `p * freq_scale * base^(-2i/n_rot) / ff[i]`.
#[allow(clippy::too_many_arguments)]
fn rope_direct(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    mode: RopeMode,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    ff: Option<&[f32]>,
) {
    for (tok, &p) in x.chunks_mut(n_heads * head_dim).zip(positions) {
        for head in tok.chunks_mut(head_dim) {
            for i in 0..n_rot / 2 {
                let theta = p as f64
                    * freq_scale as f64
                    * (base as f64).powf(-2.0 * i as f64 / n_rot as f64)
                    / ff.map_or(1.0, |f| f[i] as f64);
                let (s, c) = theta.sin_cos();
                let (a, b) = match mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + n_rot / 2),
                };
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * c - x1 * s) as f32;
                head[b] = (x0 * s + x1 * c) as f32;
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rope_matches_direct_formula_and_scalar(
        neox in any::<bool>(),
        n_heads in 1usize..4,
        head_dim_half in 1usize..40,
        rot_frac in 1usize..=4,
        n_tokens in 1usize..5,
        first_pos in 0usize..300,
        use_ff in any::<bool>(),
        scaled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let head_dim = 2 * head_dim_half;
        // Partial rotary: n_rot ∈ {head_dim/4.., head_dim}, even.
        let n_rot = (2 * (head_dim_half * rot_frac).div_ceil(4)).max(2);
        let mode = if neox { RopeMode::Neox } else { RopeMode::Normal };
        let mut rng = Rng(seed);
        let x = uniform_vec(&mut rng, n_tokens * n_heads * head_dim);
        let ff: Vec<f32> = (0..n_rot / 2).map(|i| 1.0 + (i % 5) as f32).collect();
        let base = if scaled { 1e6 } else { 1e4 };
        let freq_scale = if scaled { 0.25 } else { 1.0 };
        let mut cfg = RopeCfg::new(mode, n_rot, base);
        cfg.freq_scale = freq_scale;
        if use_ff {
            cfg.freq_factors = Some(&ff);
        }
        let cache = RopeCache::new(&cfg, first_pos + n_tokens).unwrap();
        let positions: Vec<usize> = (0..n_tokens).map(|t| first_pos + t).collect();
        let mut want = x.clone();
        rope_direct(&mut want, n_heads, head_dim, &positions, mode, n_rot, base, freq_scale, use_ff.then_some(&ff[..]));
        let mut scalar = x.clone();
        ops::rope(Isa::Scalar, &mut scalar, n_heads, head_dim, &positions, &cache);
        // f32 angle arithmetic (repeated products, like ggml) drifts ~1e-7·theta from f64.
        assert_close("rope vs formula", Isa::Scalar, &scalar, &want, 2e-4, 0.0);
        // Dimensions past n_rot are untouched.
        for (i, (a, b)) in scalar.iter().zip(&x).enumerate() {
            if i % head_dim >= n_rot {
                prop_assert_eq!(a, b);
            }
        }
        for isa in simd_isas() {
            let mut a = x.clone();
            ops::rope(isa, &mut a, n_heads, head_dim, &positions, &cache);
            assert_close("rope", isa, &a, &scalar, 1e-6, 1e-6);
        }
    }
}

#[test]
fn rope_cache_rejects_bad_settings() {
    assert!(RopeCache::new(&RopeCfg::new(RopeMode::Neox, 0, 1e4), 4).is_err());
    assert!(RopeCache::new(&RopeCfg::new(RopeMode::Neox, 7, 1e4), 4).is_err());
    assert!(RopeCache::new(&RopeCfg::new(RopeMode::Neox, 8, -1.0), 4).is_err());
    assert!(RopeCache::new(&RopeCfg::new(RopeMode::Neox, 8, f32::NAN), 4).is_err());
    let ff = [1.0f32; 3];
    let mut cfg = RopeCfg::new(RopeMode::Normal, 8, 1e4);
    cfg.freq_factors = Some(&ff);
    assert!(RopeCache::new(&cfg, 4).is_err());
}

#[test]
fn rope_position_zero_is_identity_without_yarn() {
    let cache = RopeCache::new(&RopeCfg::new(RopeMode::Normal, 8, 1e4), 1).unwrap();
    let x: Vec<f32> = (0..16).map(|i| i as f32 - 3.5).collect();
    for isa in Isa::available() {
        let mut a = x.clone();
        ops::rope(isa, &mut a, 2, 8, &[0], &cache);
        assert_eq!(a, x, "{}", isa.name());
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

struct AttnCase {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    n_past: usize,
    n_tokens: usize,
    window: Option<usize>,
    f16_cache: bool,
    seed: u64,
}

struct Cache {
    k32: Vec<f32>,
    v32: Vec<f32>,
    k16: Vec<u16>,
    v16: Vec<u16>,
}

impl Cache {
    fn new(rng: &mut Rng, n: usize, extra: usize) -> Cache {
        let k32 = uniform_vec(rng, n + extra);
        let v32 = uniform_vec(rng, n + extra);
        let to16 = |v: &[f32]| {
            v.iter()
                .map(|&x| f16::from_f32(x).to_bits())
                .collect::<Vec<_>>()
        };
        Cache {
            k16: to16(&k32),
            v16: to16(&v32),
            k32,
            v32,
        }
    }

    fn view(&self, c: &AttnCase) -> KvView<'_> {
        let (k, v) = if c.f16_cache {
            (KvData::F16(&self.k16), KvData::F16(&self.v16))
        } else {
            (KvData::F32(&self.k32), KvData::F32(&self.v32))
        };
        KvView {
            k,
            v,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        }
    }
}

/// Materialised scores, full softmax in f64. `round_q` rounds Q to f16 first (ggml's per-key
/// path with an f16 K).
fn attention_naive(c: &AttnCase, q: &[f32], kv: &KvView, round_q: bool, scale: f32) -> Vec<f32> {
    let hd = c.head_dim;
    let group = c.n_heads / c.n_kv_heads;
    let row = c.n_kv_heads * hd;
    let get = |d: &KvData, i: usize| -> f64 {
        match d {
            KvData::F32(s) => s[i] as f64,
            KvData::F16(s) => f16::from_bits(s[i]).to_f64(),
        }
    };
    let mut out = vec![0.0f32; q.len()];
    for t in 0..c.n_tokens {
        let pos = c.n_past + t;
        let keys = ops::attended_keys(pos, c.window);
        for h in 0..c.n_heads {
            let g = h / group;
            let qh = &q[(t * c.n_heads + h) * hd..][..hd];
            let scores: Vec<f64> = keys
                .clone()
                .map(|j| {
                    let dot: f64 = (0..hd)
                        .map(|d| {
                            let qv = if round_q {
                                f16::from_f32(qh[d]).to_f64()
                            } else {
                                qh[d] as f64
                            };
                            qv * get(&kv.k, j * row + g * hd + d)
                        })
                        .sum();
                    dot * scale as f64
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = p.iter().sum();
            for d in 0..hd {
                let acc: f64 = keys
                    .clone()
                    .zip(&p)
                    .map(|(j, &pj)| pj * get(&kv.v, j * row + g * hd + d))
                    .sum();
                out[(t * c.n_heads + h) * hd + d] = (acc / z) as f32;
            }
        }
    }
    out
}

fn check_attention(c: &AttnCase) {
    let mut rng = Rng(c.seed);
    let hd = c.head_dim;
    let n_pos = c.n_past + c.n_tokens;
    // Spare capacity past the used positions: must be ignored.
    let cache = Cache::new(&mut rng, n_pos * c.n_kv_heads * hd, 3 * c.n_kv_heads * hd);
    let kv = cache.view(c);
    // Larger q so that the softmax is not flat.
    let q: Vec<f32> = uniform_vec(&mut rng, c.n_tokens * c.n_heads * hd)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let params = AttnParams {
        causal: true,
        n_heads: c.n_heads,
        scale,
        window: c.window,
    };
    let vec_path = c.n_tokens < ops::GGML_FA_TILE_Q;
    let naive = attention_naive(c, &q, &kv, vec_path && c.f16_cache, scale);
    // The per-key path with an f16 V rounds its accumulator to f16 after every key.
    let tol = if vec_path && c.f16_cache { 4e-3 } else { 2e-5 };
    let mut reference = vec![0.0f32; q.len()];
    ops::attention(Isa::Scalar, &q, &kv, c.n_past, &params, &mut reference);
    assert_close(
        "attention scalar vs naive",
        Isa::Scalar,
        &reference,
        &naive,
        tol,
        0.0,
    );
    for isa in Isa::available() {
        let mut out = vec![0.0f32; q.len()];
        ops::attention(isa, &q, &kv, c.n_past, &params, &mut out);
        // With an f16 accumulator, rounding differences (FMA order, exp) flip f16 roundings now
        // and then; `f16_accumulator_saturates_like_ggml` checks the rounding itself.
        let simd_tol = if vec_path && c.f16_cache { 1e-3 } else { 2e-5 };
        assert_close("attention vs scalar", isa, &out, &reference, simd_tol, 0.0);
        let pool = ThreadPool::new(2).unwrap();
        let mut out_pool = vec![0.0f32; q.len()];
        ops::attention_parallel(isa, &q, &kv, c.n_past, &params, &mut out_pool, &pool);
        assert_eq!(
            out_pool,
            out,
            "attention on the thread pool vs one thread [{}]",
            isa.name()
        );
        // Thread counts below, at and above the number of (token, group) pairs.
        for threads in [2, 3, 7] {
            let mut out_mt = vec![0.0f32; q.len()];
            let par = RayonRun(threads);
            ops::attention_parallel(isa, &q, &kv, c.n_past, &params, &mut out_mt, &par);
            assert_eq!(
                out_mt,
                out,
                "attention on {threads} threads vs one [{}]",
                isa.name()
            );
        }
    }
}

proptest! {
    #![proptest_config(config_with(40))]

    #[test]
    fn attention_matches_naive(
        n_kv_heads in 1usize..3,
        group in prop::sample::select(vec![1usize, 2, 4]),
        head_dim in prop::sample::select(vec![8usize, 16, 24, 32, 64, 80, 112, 128]),
        n_past in 0usize..90,
        n_tokens in prop_oneof![3 => 1usize..4, 1 => 4usize..20],
        window in prop::option::of(1usize..40),
        f16_cache in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_attention(&AttnCase {
            n_heads: n_kv_heads * group,
            n_kv_heads,
            head_dim,
            n_past,
            n_tokens,
            window,
            f16_cache,
            seed,
        });
    }
}

#[test]
fn attention_tiled_path_batches() {
    // ≥ GGML_FA_TILE_Q query tokens: ggml's tiled path, f32 numerics, several key blocks; group
    // sizes that fill 1 to 4 row vectors of a tile, and one (group 80) that exceeds a tile.
    let cases = [
        // (n_heads, n_kv_heads, head_dim, f16, window, n_past)
        (4, 2, 32, true, None, 0),
        (4, 2, 32, false, Some(50), 7),
        (4, 2, 32, true, Some(20), 70),
        (2, 2, 64, true, None, 3),
        (3, 1, 16, false, Some(9), 0),
        (8, 2, 8, true, None, 1),
        (8, 1, 24, true, Some(100), 60),
        (80, 1, 8, false, None, 2),
    ];
    for (i, (n_heads, n_kv_heads, head_dim, f16_cache, window, n_past)) in
        cases.into_iter().enumerate()
    {
        check_attention(&AttnCase {
            n_heads,
            n_kv_heads,
            head_dim,
            n_past,
            n_tokens: ops::GGML_FA_TILE_Q + 9 + i,
            window,
            f16_cache,
            seed: 7 + i as u64,
        });
    }
}

#[test]
fn attention_mixed_kv_types() {
    // f16 K with f32 V: ggml keeps even large batches on its per-key path (Q rounded to f16,
    // f32 accumulator), and does not split long decodes.
    for (n_past, n_tokens) in [(3usize, 70usize), (600, 1)] {
        let c = AttnCase {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            n_past,
            n_tokens,
            window: None,
            f16_cache: true,
            seed: 11,
        };
        let mut rng = Rng(c.seed);
        let n = (n_past + n_tokens) * c.n_kv_heads * c.head_dim;
        let cache = Cache::new(&mut rng, n, 0);
        let kv = KvView {
            k: KvData::F16(&cache.k16),
            v: KvData::F32(&cache.v32),
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let q = uniform_vec(&mut rng, n_tokens * c.n_heads * c.head_dim);
        let params = AttnParams {
            causal: true,
            n_heads: c.n_heads,
            scale: 0.2,
            window: None,
        };
        let naive = attention_naive(&c, &q, &kv, true, 0.2);
        for isa in Isa::available() {
            let mut out = vec![0.0f32; q.len()];
            ops::attention(isa, &q, &kv, n_past, &params, &mut out);
            assert_close("mixed K/V types", isa, &out, &naive, 2e-5, 0.0);
        }
    }
}

#[test]
fn attention_long_decode() {
    // One token over several hundred keys (decode deep in the context), GQA 8/2.
    for f16_cache in [true, false] {
        check_attention(&AttnCase {
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            n_past: 700,
            n_tokens: 1,
            window: None,
            f16_cache,
            seed: 99,
        });
    }
}

#[test]
fn f16_accumulator_saturates_like_ggml() {
    // q = 0 makes every score 0 and every key weight exactly 1. ggml's per-key path keeps the V
    // accumulator in f16, where 2048 + 1 rounds back to 2048: a query over 3000 keys of V = 1
    // gives 2048 / 3000, not 1. A single query token over >= 512 keys is split in two chunks
    // (ggml's split-KV decode with 2 threads), each saturating on its own: 6000 keys give
    // (2048 + 2048) / 6000. An f32 cache gives 1.
    let hd = 64usize;
    let n_cache = 6000usize;
    let ones: Vec<u16> = vec![f16::from_f32(1.0).to_bits(); n_cache * hd];
    let ones32 = vec![1.0f32; n_cache * hd];
    let params = |n_heads| AttnParams {
        causal: true,
        n_heads,
        scale: 0.125,
        window: None,
    };
    for isa in Isa::available() {
        let kv = KvView {
            k: KvData::F16(&ones),
            v: KvData::F16(&ones),
            n_kv_heads: 1,
            head_dim: hd,
        };
        // Two query tokens (the unsplit per-key path) at positions 2999 and 3000.
        let q = vec![0.0f32; 2 * hd];
        let mut out = vec![0.0f32; 2 * hd];
        ops::attention(isa, &q, &kv, 2999, &params(1), &mut out);
        let want: Vec<f32> = [3000.0f32, 3001.0]
            .iter()
            .flat_map(|n| vec![2048.0 / n; hd])
            .collect();
        assert_close("f16 accumulator", isa, &out, &want, 1e-6, 1e-6);
        // One token over 6000 keys: two chunks of 3000.
        let mut out = vec![0.0f32; hd];
        ops::attention(isa, &q[..hd], &kv, n_cache - 1, &params(1), &mut out);
        let want = vec![4096.0 / n_cache as f32; hd];
        assert_close("f16 accumulator, split keys", isa, &out, &want, 1e-6, 1e-6);
        let kv32 = KvView {
            k: KvData::F32(&ones32),
            v: KvData::F32(&ones32),
            ..kv
        };
        ops::attention(isa, &q[..hd], &kv32, n_cache - 1, &params(1), &mut out);
        assert_close("f32 accumulator", isa, &out, &vec![1.0; hd], 1e-6, 1e-6);
    }
}

#[test]
fn window_semantics_match_llama_cpp() {
    // llama.cpp `is_masked_swa` (STANDARD): masked when p1 - p0 >= n_swa.
    for (pos, w) in [
        (0usize, 1usize),
        (5, 1),
        (5, 3),
        (5, 6),
        (5, 100),
        (511, 512),
        (512, 512),
    ] {
        let keys = ops::attended_keys(pos, Some(w));
        for p0 in 0..=pos {
            let masked = pos - p0 >= w;
            assert_eq!(keys.contains(&p0), !masked, "pos {pos} window {w} key {p0}");
        }
        assert_eq!(keys.end, pos + 1);
    }
    assert_eq!(ops::attended_keys(9, None), 0..10);
}

// ---------------------------------------------------------------------------------------------
// Against ggml itself: `data/ops-ggml/ops_ggml.bin` holds inputs and ggml's CPU outputs, written
// by `data/ops-ggml/gen_ops_ggml.c` linked against the reference llama.cpp build.

#[test]
fn unary_ops_match_ggml() {
    let r = ggml_records();
    let x = &r["unary.x"];
    let up = &r["unary.up"];
    let row = 250;
    let ones = vec![1.0f32; row];
    // SiLU and softmax are scalar references only (the runtime fuses them into SwiGLU and
    // attention, which are checked per ISA).
    let mut a = x.clone();
    scalar_ops::silu_inplace(&mut a);
    assert_close(
        "silu vs ggml",
        Isa::Scalar,
        &a,
        &r["unary.silu"],
        1e-7,
        3e-6,
    );
    let mut a = x.clone();
    for chunk in a.chunks_mut(row) {
        scalar_ops::softmax_inplace(chunk);
    }
    assert_close(
        "softmax vs ggml",
        Isa::Scalar,
        &a,
        &r["unary.softmax"],
        1e-9,
        5e-6,
    );
    for isa in Isa::available() {
        // ggml's GELU is a lookup in its f16 table; ours is the same table on every ISA.
        let mut a = x.clone();
        ops::gelu_tanh_inplace(isa, &mut a);
        assert_eq!(&a, &r["unary.gelu"], "gelu vs ggml [{}]", isa.name());
        let mut a = vec![0.0; x.len()];
        ops::geglu_tanh(isa, x, up, &mut a);
        assert_eq!(&a, &r["unary.geglu"], "geglu vs ggml [{}]", isa.name());
        let mut a = vec![0.0; x.len()];
        ops::swiglu(isa, x, up, &mut a);
        assert_close("swiglu vs ggml", isa, &a, &r["unary.swiglu"], 1e-7, 3e-6);
        let mut a = x.clone();
        ops::rms_norm_inplace(isa, &mut a, &ones, 1e-6);
        assert_close(
            "rms_norm vs ggml",
            isa,
            &a,
            &r["unary.rms_norm"],
            1e-6,
            1e-6,
        );
        let mut a = x.clone();
        ops::layer_norm_inplace(isa, &mut a, &ones, None, 1e-5);
        assert_close("norm vs ggml", isa, &a, &r["unary.norm"], 1e-6, 1e-5);
    }
}

#[test]
fn rope_matches_ggml() {
    let r = ggml_records();
    let positions = [0usize, 1, 7, 100, 1000];
    let (head_dim, n_heads) = (64, 3);
    for name in [
        "rope.normal",
        "rope.neox",
        "rope.neox_partial",
        "rope.normal_ff",
        "rope.neox_scaled",
        "rope.neox_yarn",
    ] {
        let p = &r[&format!("{name}.params")];
        let mode = if p[0] == 0.0 {
            RopeMode::Normal
        } else {
            RopeMode::Neox
        };
        let ff = &r[&format!("{name}.ff")];
        let mut cfg = RopeCfg::new(mode, p[1] as usize, p[2]);
        cfg.freq_scale = p[3];
        if p[4] != 0.0 {
            cfg.freq_factors = Some(ff);
        }
        cfg.ext_factor = p[5];
        cfg.n_ctx_orig = p[6] as usize;
        let cache = RopeCache::new(&cfg, 1001).unwrap();
        for isa in Isa::available() {
            let mut x = r[&format!("{name}.x")].clone();
            ops::rope(isa, &mut x, n_heads, head_dim, &positions, &cache);
            assert_close(name, isa, &x, &r[&format!("{name}.out")], 5e-7, 0.0);
        }
    }
}

#[test]
fn attention_matches_ggml_flash_attn() {
    let r = ggml_records();
    for name in [
        "attn.decode",
        "attn.decode_f32",
        "attn.batch",
        "attn.swa",
        "attn.tiled",
        "attn.tiled_swa",
        "attn.long_decode",
        "attn.split_decode",
    ] {
        let p = &r[&format!("{name}.params")];
        let (n_past, n_tokens) = (p[0] as usize, p[1] as usize);
        let window = (p[2] != 0.0).then_some(p[2] as usize);
        let f16_cache = p[3] != 0.0;
        let (head_dim, n_heads, n_kv_heads) = (p[4] as usize, p[5] as usize, p[6] as usize);
        let k = &r[&format!("{name}.k")];
        let v = &r[&format!("{name}.v")];
        let to16 = |s: &[f32]| {
            s.iter()
                .map(|&x| f16::from_f32(x).to_bits())
                .collect::<Vec<_>>()
        };
        let (k16, v16) = (to16(k), to16(v));
        let kv = if f16_cache {
            KvView {
                k: KvData::F16(&k16),
                v: KvData::F16(&v16),
                n_kv_heads,
                head_dim,
            }
        } else {
            KvView {
                k: KvData::F32(k),
                v: KvData::F32(v),
                n_kv_heads,
                head_dim,
            }
        };
        let params = AttnParams {
            causal: true,
            n_heads,
            scale: 0.125,
            window,
        };
        let q = &r[&format!("{name}.q")];
        // ggml's per-key path rounds its accumulator to f16 after every key: the order of the
        // Q·K sums (ggml: 4×16 lanes) decides a few roundings differently.
        let vec_f16 = f16_cache && n_tokens < ops::GGML_FA_TILE_Q;
        let tol = if vec_f16 { 5e-4 } else { 1e-6 };
        for isa in Isa::available() {
            let mut out = vec![0.0f32; q.len()];
            ops::attention(isa, q, &kv, n_past, &params, &mut out);
            assert_close(name, isa, &out, &r[&format!("{name}.out")], tol, 0.0);
        }
    }
}

/// `par_rows_mut` over a pool or rayon gives the serial result for any row count.
#[test]
fn par_rows_mut_matches_serial() {
    let pool = ThreadPool::new(2).unwrap();
    let cols = 96;
    let weight: Vec<f32> = (0..cols).map(|i| 0.5 + i as f32 / cols as f32).collect();
    for n_rows in [1usize, 3, 170, 171, 700] {
        let x: Vec<f32> = (0..n_rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let isa = Isa::detect();
        let mut want = x.clone();
        ops::rms_norm_inplace(isa, &mut want, &weight, 1e-5);
        let runners: [&dyn ops::ParallelRun; 3] = [&pool, &RayonRun(3), &ops::Sequential];
        for par in runners {
            let mut got = x.clone();
            let seen = std::sync::atomic::AtomicUsize::new(0);
            ops::par_rows_mut(par, &mut got, cols, &|r0, rows| {
                assert_eq!(rows.len() % cols, 0);
                assert!(r0 * cols + rows.len() <= n_rows * cols);
                seen.fetch_add(rows.len() / cols, std::sync::atomic::Ordering::Relaxed);
                ops::rms_norm_inplace(isa, rows, &weight, 1e-5);
            });
            assert_eq!(seen.into_inner(), n_rows, "{n_rows} rows");
            assert_eq!(got, want, "{n_rows} rows");
        }
    }
}

/// A RoPE table's rows do not depend on its size (the CPU backend grows tables by doubling).
#[test]
fn rope_cache_rows_do_not_depend_on_the_table_size() {
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let cfg = RopeCfg {
            freq_scale: 0.5,
            ..RopeCfg::new(mode, 64, 10000.0)
        };
        let small = RopeCache::new(&cfg, 256).unwrap();
        let big = RopeCache::new(&cfg, 4096).unwrap();
        for pos in 0..256 {
            assert_eq!(small.row(pos), big.row(pos), "{mode:?} position {pos}");
        }
    }
}

#[test]
fn invariant_attention_does_not_depend_on_how_tokens_are_cut() {
    // The batch-invariant path: a sequence's rows computed in one call, in uneven chunks and
    // token by token give the same bits, on every ISA and thread count (so the few-row kernel
    // of a decode token equals the row-lane kernel of a long call); with enough tokens it
    // is `attention`'s tiled path itself; and it is close to the f64 reference.
    let cases = [
        // (n_heads, n_kv_heads, head_dim, f16, window, n_tokens)
        (4, 2, 32, true, None, 150),
        (4, 2, 32, false, Some(50), 90),
        (9, 3, 64, true, None, 70),
        (3, 1, 16, false, Some(9), 40),
        (80, 1, 8, true, None, 33),
        (2, 2, 12, true, None, 20),
        // Token by token these take the few-row kernel (keys and dims in the lanes): a group
        // of 8 heads is AVX-512's bound of LANES / 2 rows, 3 heads AVX2's side of it.
        (8, 1, 64, true, None, 70),
        (6, 2, 128, false, Some(20), 66),
    ];
    let mut rng = Rng::new(4242);
    for (n_heads, n_kv_heads, head_dim, f16_cache, window, n_tokens) in cases {
        let c = AttnCase {
            n_heads,
            n_kv_heads,
            head_dim,
            n_past: 0,
            n_tokens,
            window,
            f16_cache,
            seed: 0,
        };
        let cache = Cache::new(&mut rng, n_tokens * n_kv_heads * head_dim, 0);
        let kv = cache.view(&c);
        let q: Vec<f32> = uniform_vec(&mut rng, n_tokens * n_heads * head_dim)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let params = AttnParams {
            causal: true,
            n_heads,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
        };
        let row = n_heads * head_dim;
        let naive = attention_naive(&c, &q, &kv, false, params.scale);
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::available() {
            let mut whole = vec![0.0f32; q.len()];
            let pool = ThreadPool::new(2).unwrap();
            ops::attention_invariant(isa, &q, &kv, 0, &params, &mut whole, &pool);
            assert_close("invariant vs f64", isa, &whole, &naive, 2e-5, 0.0);
            if n_tokens >= ops::GGML_FA_TILE_Q {
                let mut tiled = vec![0.0f32; q.len()];
                ops::attention(isa, &q, &kv, 0, &params, &mut tiled);
                assert_eq!(tiled, whole, "invariant vs tiled [{}]", isa.name());
            }
            for cut in [1usize, 5, 17, 64] {
                let mut pieces = vec![0.0f32; q.len()];
                let mut t0 = 0;
                let mut k = 0;
                while t0 < n_tokens {
                    // Uneven chunks: cut, cut + 1, cut + 2, ...
                    let nt = (cut + k % 3).min(n_tokens - t0);
                    let (a, b) = (t0 * row, (t0 + nt) * row);
                    let par = RayonRun(1 + k % 3);
                    ops::attention_invariant(
                        isa,
                        &q[a..b],
                        &kv,
                        t0,
                        &params,
                        &mut pieces[a..b],
                        &par,
                    );
                    t0 += nt;
                    k += 1;
                }
                assert_eq!(pieces, whole, "chunks of ~{cut} [{}]", isa.name());
            }
            match &first {
                None => first = Some(whole),
                Some(f) => assert_eq!(&whole, f, "{} vs the first ISA", isa.name()),
            }
        }
    }
}

#[test]
fn invariant_attention_of_many_sequences_is_each_alone() {
    // One parallel run over several sequences, each over its own cache (a multi-sequence
    // batch's step: decode tokens, prompt pieces, a long f16 chunk that converts its cache),
    // gives each sequence the bits of `attention_invariant` on it alone, on every ISA and
    // thread count.
    let cases = [
        // (n_heads, n_kv_heads, head_dim, f16, window)
        (9, 3, 64, true, None),
        (4, 2, 32, false, Some(50)),
        (4, 1, 16, true, Some(9)),
        (2, 2, 12, false, None),
    ];
    // (n_past, n_tokens) of each sequence.
    let seqs = [
        (0, 1),
        (40, 1),
        (7, 3),
        (0, 70),
        (130, 1),
        (3, 20),
        (90, 66),
    ];
    let mut rng = Rng::new(777);
    for (n_heads, n_kv_heads, head_dim, f16_cache, window) in cases {
        let params = AttnParams {
            causal: true,
            n_heads,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
        };
        let row = n_heads * head_dim;
        let case = |n_past, n_tokens| AttnCase {
            n_heads,
            n_kv_heads,
            head_dim,
            n_past,
            n_tokens,
            window,
            f16_cache,
            seed: 0,
        };
        let caches: Vec<Cache> = seqs
            .iter()
            .map(|&(p, n)| Cache::new(&mut rng, (p + n) * n_kv_heads * head_dim, 0))
            .collect();
        let qs: Vec<Vec<f32>> = seqs
            .iter()
            .map(|&(_, n)| {
                uniform_vec(&mut rng, n * row)
                    .iter()
                    .map(|v| v * 3.0)
                    .collect()
            })
            .collect();
        for isa in Isa::available() {
            let alone: Vec<Vec<f32>> = seqs
                .iter()
                .enumerate()
                .map(|(i, &(p, n))| {
                    let mut o = vec![0.0f32; n * row];
                    let kv = caches[i].view(&case(p, n));
                    ops::attention_invariant(
                        isa,
                        &qs[i],
                        &kv,
                        p,
                        &params,
                        &mut o,
                        &ops::Sequential,
                    );
                    o
                })
                .collect();
            for threads in [1usize, 2, 3] {
                let mut outs: Vec<Vec<f32>> =
                    seqs.iter().map(|&(_, n)| vec![f32::NAN; n * row]).collect();
                let mut calls: Vec<ops::InvariantCall> = outs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, o)| ops::InvariantCall {
                        q: &qs[i],
                        kv: caches[i].view(&case(seqs[i].0, seqs[i].1)),
                        n_past: seqs[i].0,
                        out: o,
                    })
                    .collect();
                if threads == 2 {
                    let pool = ThreadPool::new(2).unwrap();
                    ops::attention_invariant_many(isa, &mut calls, &params, &pool);
                } else {
                    ops::attention_invariant_many(isa, &mut calls, &params, &RayonRun(threads));
                }
                drop(calls);
                assert_eq!(
                    outs,
                    alone,
                    "{n_heads}/{n_kv_heads}×{head_dim} f16 {f16_cache}, {threads} threads [{}]",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn exact_gelu_is_pytorchs_tanh_formula_in_f32() {
    // PyTorch's `gelu(x, approximate="tanh")` evaluated in f64 is the reference: the f32
    // kernel is within a few ulp of it everywhere (ggml's f16 table is ~1e-3 off), and the
    // gated form is the product.
    let mut rng = Rng::new(99);
    let mut x: Vec<f32> = uniform_vec(&mut rng, 4096)
        .iter()
        .map(|v| v * 12.0)
        .collect();
    x.extend([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 5.5, -5.5]);
    let reference = |v: f32| {
        let v = v as f64;
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
    };
    let mut got = x.clone();
    ops::gelu_tanh_exact_inplace(&mut got);
    let mut worst = 0.0f64;
    for (&v, &g) in x.iter().zip(&got) {
        let want = reference(v);
        let err = (g as f64 - want).abs();
        // f32 evaluation of the same formula (as PyTorch's f32 kernel): 1 + tanh(..) cancels
        // for large negative x, so the bound is absolute, a few ulp of max(|x|, 1).
        assert!(
            err <= 5e-7 * (v.abs() as f64).max(1.0),
            "gelu({v}) = {g}, want {want}"
        );
        worst = worst.max(err);
    }
    let mut table = x.clone();
    ops::gelu_tanh_inplace(Isa::Scalar, &mut table);
    let table_err = x
        .iter()
        .zip(&table)
        .map(|(&v, &t)| (t as f64 - reference(v)).abs())
        .fold(0.0, f64::max);
    assert!(
        worst * 100.0 < table_err,
        "exact {worst}, table {table_err}"
    );
    let up: Vec<f32> = uniform_vec(&mut rng, x.len());
    let mut gated = x.clone();
    ops::geglu_tanh_exact_inplace(&mut gated, &up);
    for i in 0..x.len() {
        assert_eq!(gated[i], got[i] * up[i]);
    }
}
