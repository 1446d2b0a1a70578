//! Bit-level agreement: every ISA computes the non-matmul ops with the very operations of the
//! scalar reference (and of ggml's AVX-512 build that made the goldens), so their results are
//! identical, not merely close. A last-ulp difference is not harmless here: ggml rounds Q and
//! the attention accumulator to f16, looks GELU up by the f16 bits of its input and quantizes
//! activations to 8 bits, so one ulp can flip a rounding and grow through the layers into
//! differences of tenths of a logit.

mod common;

use common::{ggml_records, Rng};
use half::f16;
use tinyrt_kernels::cpu::ops::{self, AttnParams, KvData, KvView, RopeCache, RopeCfg, RopeMode};
use tinyrt_kernels::cpu::scalar::ops as scalar;
use tinyrt_kernels::cpu::Isa;

fn assert_bits(what: &str, isa: Isa, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what} [{}]: length", isa.name());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what} [{}]: element {i} is {g:e} ({:#010x}), the scalar reference gives {w:e} ({:#010x})",
            isa.name(),
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// `n` random f16 values (bits) in ±`scale`.
fn random_f16(rng: &mut Rng, n: usize, scale: f32) -> Vec<u16> {
    (0..n)
        .map(|_| f16::from_f32(rng.unit_f32() * scale).to_bits())
        .collect()
}

/// `ops::attention` gives the scalar kernels' bits on every ISA.
fn assert_attention_on_every_isa(
    what: &str,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
) {
    let mut want = vec![0.0f32; q.len()];
    ops::attention(Isa::Scalar, q, kv, n_past, params, &mut want);
    for isa in Isa::available() {
        let mut got = vec![0.0f32; q.len()];
        ops::attention(isa, q, kv, n_past, params, &mut got);
        assert_bits(what, isa, &got, &want);
    }
}

/// Inputs for the element-wise ops: a dense sweep over the range where e^x is finite and not
/// flushed, the edges around it, and special values.
fn sweep() -> Vec<f32> {
    let mut x: Vec<f32> = (0..200_000)
        .map(|i| -110.0 + 220.0 * i as f32 / 200_000.0)
        .collect();
    let mut rng = Rng(7);
    x.extend((0..20_000).map(|_| rng.unit_f32() * 1e-3));
    x.extend([
        0.0,
        -0.0,
        88.37,
        88.38,
        88.73,
        -87.3,
        -103.9,
        -104.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-40,
    ]);
    x
}

#[test]
fn expf_ggml_v_is_within_two_ulp_of_exp() {
    let mut worst = 0u32;
    for &x in &sweep() {
        let got = scalar::expf_ggml_v(x);
        let want = (x as f64).exp() as f32;
        if !want.is_finite() || want < f32::MIN_POSITIVE {
            // Overflow gives inf and deep underflow 0 (ggml flushes below about -103.97).
            assert!(
                got == want || (want < f32::MIN_POSITIVE && got < f32::MIN_POSITIVE),
                "e^{x}: {got} vs {want}"
            );
            continue;
        }
        let ulps = got.to_bits().abs_diff(want.to_bits());
        worst = worst.max(ulps);
    }
    assert!(worst <= 2, "expf_ggml_v is off by {worst} ulp");
}

#[test]
fn swiglu_is_identical_on_every_isa() {
    let x = sweep();
    let mut rng = Rng(11);
    let up: Vec<f32> = x.iter().map(|_| rng.unit_f32() * 3.0).collect();
    let mut swiglu_ref = vec![0.0f32; x.len()];
    ops::swiglu(Isa::Scalar, &x, &up, &mut swiglu_ref);
    for isa in Isa::available() {
        let mut a = vec![0.0f32; x.len()];
        ops::swiglu(isa, &x, &up, &mut a);
        assert_bits("swiglu", isa, &a, &swiglu_ref);
    }
}

#[test]
fn rope_is_identical_on_every_isa() {
    let mut rng = Rng(3);
    let positions: Vec<usize> = vec![0, 1, 5, 77, 511, 1000];
    for (mode, head_dim, n_rot) in [
        (RopeMode::Neox, 64, 64),
        (RopeMode::Neox, 256, 256),
        (RopeMode::Neox, 32, 16),
        (RopeMode::Normal, 64, 64),
        (RopeMode::Normal, 48, 48),
    ] {
        let cache = RopeCache::new(&RopeCfg::new(mode, n_rot, 10000.0), 1001).unwrap();
        let n_heads = 3;
        let x: Vec<f32> = (0..positions.len() * n_heads * head_dim)
            .map(|_| rng.unit_f32() * 8.0)
            .collect();
        let mut want = x.clone();
        ops::rope(
            Isa::Scalar,
            &mut want,
            n_heads,
            head_dim,
            &positions,
            &cache,
        );
        for isa in Isa::available() {
            let mut got = x.clone();
            ops::rope(isa, &mut got, n_heads, head_dim, &positions, &cache);
            assert_bits("rope", isa, &got, &want);
        }
    }
}

/// ggml's per-key attention path (fewer than 64 query tokens, f16 cache; with 512+ keys a
/// single token takes the split-KV decode) gives the same bits on every ISA.
#[test]
fn per_key_attention_is_identical_on_every_isa() {
    let mut rng = Rng(5);
    // (head_dim, n_heads, n_kv_heads, n_past, n_tokens, window)
    let cases = [
        (64, 9, 3, 0, 5, None),
        (64, 9, 3, 40, 1, None),
        (256, 4, 1, 0, 6, None),
        (256, 4, 1, 600, 1, None),
        (256, 4, 1, 700, 2, Some(512)),
        (32, 8, 2, 10, 3, None),
        (80, 4, 4, 20, 2, None),
        (128, 8, 8, 530, 1, None),
        (48, 2, 1, 3, 4, None),
    ];
    for (hd, nh, nkv, n_past, n_tokens, window) in cases {
        let n_pos = n_past + n_tokens;
        let k = random_f16(&mut rng, n_pos * nkv * hd, 3.0);
        let v = random_f16(&mut rng, n_pos * nkv * hd, 3.0);
        let q: Vec<f32> = (0..n_tokens * nh * hd)
            .map(|_| rng.unit_f32() * 2.0)
            .collect();
        let kv = KvView {
            k: KvData::F16(&k),
            v: KvData::F16(&v),
            n_kv_heads: nkv,
            head_dim: hd,
        };
        let params = AttnParams {
            causal: true,
            n_heads: nh,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let what = format!("attention hd {hd} heads {nh}/{nkv} past {n_past} tokens {n_tokens}");
        assert_attention_on_every_isa(&what, &q, &kv, n_past, &params);
    }
}

/// ggml's tiled attention path (batches of at least 64 query tokens) and the per-key path
/// below it give the same bits on every ISA, whatever tile each ISA cuts: head dims that fit
/// the AVX tile kernels (64, 256, 8, 12) and one that does not (6), groups that fill part of a
/// tile, more than AVX2's 32 rows, or more than AVX-512's 64; windows; f16 and f32 caches; on
/// one thread and on several.
#[test]
fn tiled_attention_is_identical_on_every_isa() {
    let mut rng = Rng(11);
    // (head_dim, n_heads, n_kv_heads, n_past, n_tokens, window, f16)
    let cases = [
        (64, 4, 1, 0, 64, None, true),
        (256, 4, 1, 30, 70, Some(16), true),
        (256, 8, 2, 70, 65, None, false),
        (64, 9, 3, 5, 66, Some(40), false),
        (6, 4, 2, 3, 64, None, true),
        (6, 3, 1, 64, 67, Some(20), false),
        (6, 4, 1, 10, 5, None, true),
        (8, 40, 1, 10, 64, None, true),
        (12, 80, 1, 1, 68, Some(30), false),
        (64, 1, 1, 129, 69, Some(70), true),
        (64, 2, 1, 129, 63, None, false),
    ];
    for (hd, nh, nkv, n_past, n_tokens, window, f16_cache) in cases {
        let n_pos = n_past + n_tokens;
        let kf: Vec<f32> = (0..n_pos * nkv * hd)
            .map(|_| rng.unit_f32() * 3.0)
            .collect();
        let vf: Vec<f32> = (0..n_pos * nkv * hd)
            .map(|_| rng.unit_f32() * 3.0)
            .collect();
        let to16 =
            |x: &[f32]| -> Vec<u16> { x.iter().map(|&v| f16::from_f32(v).to_bits()).collect() };
        let (k16, v16) = (to16(&kf), to16(&vf));
        let kv = if f16_cache {
            KvView {
                k: KvData::F16(&k16),
                v: KvData::F16(&v16),
                n_kv_heads: nkv,
                head_dim: hd,
            }
        } else {
            KvView {
                k: KvData::F32(&kf),
                v: KvData::F32(&vf),
                n_kv_heads: nkv,
                head_dim: hd,
            }
        };
        let q: Vec<f32> = (0..n_tokens * nh * hd)
            .map(|_| rng.unit_f32() * 4.0)
            .collect();
        let params = AttnParams {
            causal: true,
            n_heads: nh,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let what = format!(
            "attention hd {hd} heads {nh}/{nkv} past {n_past} tokens {n_tokens} window {window:?} f16 {f16_cache}"
        );
        assert_attention_on_every_isa(&what, &q, &kv, n_past, &params);
        let mut want = vec![0.0f32; q.len()];
        ops::attention(Isa::Scalar, &q, &kv, n_past, &params, &mut want);
        for isa in Isa::available() {
            let mut got_mt = vec![0.0f32; q.len()];
            let par = ops::RayonRun(3);
            ops::attention_parallel(isa, &q, &kv, n_past, &params, &mut got_mt, &par);
            assert_bits(&format!("{what} on 3 threads"), isa, &got_mt, &want);
        }
    }
}

/// Every prefill batch size from 1 to 70 tokens at a few cache positions (so tiles and key
/// blocks start and end everywhere), Gemma-3's shape (head dim 256, 4 heads on 1 kv head,
/// window 512 or none) at a reduced head dim: the same bits on every ISA.
#[test]
fn attention_batches_1_to_70_are_identical_on_every_isa() {
    let mut rng = Rng(13);
    let (hd, nh, nkv) = (32, 4, 1);
    for n_past in [0usize, 37, 64] {
        for n_tokens in 1..=70 {
            let n_pos = n_past + n_tokens;
            let k = random_f16(&mut rng, n_pos * nkv * hd, 3.0);
            let v = random_f16(&mut rng, n_pos * nkv * hd, 3.0);
            let kv = KvView {
                k: KvData::F16(&k),
                v: KvData::F16(&v),
                n_kv_heads: nkv,
                head_dim: hd,
            };
            let q: Vec<f32> = (0..n_tokens * nh * hd)
                .map(|_| rng.unit_f32() * 4.0)
                .collect();
            let window = (n_tokens % 3 == 0).then_some(50);
            let params = AttnParams {
                causal: true,
                n_heads: nh,
                scale: 1.0 / (hd as f32).sqrt(),
                window,
            };
            let what = format!("attention past {n_past} tokens {n_tokens} window {window:?}");
            assert_attention_on_every_isa(&what, &q, &kv, n_past, &params);
        }
    }
}

/// ggml's SiLU and SwiGLU (`ggml_v_expf`), RoPE (its compiled FMAs) and flash attention's
/// per-key path (its `expf`, the f16 dot-product order, the FMA of `S*ms + vs`) give exactly
/// ggml's bits on every ISA. (YaRN RoPE, ggml's tiled attention and its split-KV merge are only
/// close: see `tests/ops.rs`.)
#[test]
fn silu_rope_and_per_key_attention_match_ggml_bit_for_bit() {
    let r = ggml_records();
    let (x, up) = (&r["unary.x"], &r["unary.up"]);
    let positions = [0usize, 1, 7, 100, 1000];
    let mut a = x.clone();
    scalar::silu_inplace(&mut a);
    assert_bits("silu vs ggml", Isa::Scalar, &a, &r["unary.silu"]);
    for isa in Isa::available() {
        let mut a = vec![0.0; x.len()];
        ops::swiglu(isa, x, up, &mut a);
        assert_bits("swiglu vs ggml", isa, &a, &r["unary.swiglu"]);
        for name in [
            "rope.normal",
            "rope.neox",
            "rope.neox_partial",
            "rope.normal_ff",
            "rope.neox_scaled",
        ] {
            let p = &r[&format!("{name}.params")];
            let mode = if p[0] == 0.0 {
                RopeMode::Normal
            } else {
                RopeMode::Neox
            };
            let mut cfg = RopeCfg::new(mode, p[1] as usize, p[2]);
            cfg.freq_scale = p[3];
            if p[4] != 0.0 {
                cfg.freq_factors = Some(&r[&format!("{name}.ff")]);
            }
            assert_eq!(p[5], 0.0, "{name}: no YaRN here");
            let cache = RopeCache::new(&cfg, 1001).unwrap();
            let mut xx = r[&format!("{name}.x")].clone();
            ops::rope(isa, &mut xx, 3, 64, &positions, &cache);
            assert_bits(name, isa, &xx, &r[&format!("{name}.out")]);
        }
        for name in [
            "attn.decode",
            "attn.decode_f32",
            "attn.batch",
            "attn.swa",
            "attn.long_decode",
        ] {
            let p = &r[&format!("{name}.params")];
            let n_past = p[0] as usize;
            assert!(
                (p[1] as usize) < ops::GGML_FA_TILE_Q,
                "{name}: per-key path"
            );
            let window = (p[2] != 0.0).then_some(p[2] as usize);
            let f16_cache = p[3] != 0.0;
            let (head_dim, n_heads, n_kv_heads) = (p[4] as usize, p[5] as usize, p[6] as usize);
            let (k, v) = (&r[&format!("{name}.k")], &r[&format!("{name}.v")]);
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
            let mut out = vec![0.0f32; q.len()];
            ops::attention(isa, q, &kv, n_past, &params, &mut out);
            assert_bits(name, isa, &out, &r[&format!("{name}.out")]);
        }
    }
}
