//! Every CUDA kernel against its CPU reference (tinyrt_kernels' scalar code, or an f64
//! evaluation of the formula), on random inputs at several sizes.
//!
//! Needs a GPU: each test skips with a notice when there is no driver or device, unless
//! `TINYRT_REQUIRE_GPU=1`, where that is a failure.
#![cfg(feature = "cuda")]

use half::f16;
use tinyrt_cuda::{
    driver_available, AttentionShape, CudaDevice, CudaError, GluActivation, RopeMode, WeightType,
};
use tinyrt_kernels::cpu::ops;
use tinyrt_kernels::cpu::Isa;
use tinyrt_kernels::quant::{self, BlockQ8_1, GgmlType, QuantFormat};

// ---------------------------------------------------------------- helpers

fn required() -> bool {
    std::env::var("TINYRT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The device, or `None` (test skipped) when there is none.
fn device() -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(!required(), "TINYRT_REQUIRE_GPU=1 but no GPU: {e}");
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// An output buffer filled with NaN, so that an element a kernel fails to write shows up.
fn poison_f32(dev: &CudaDevice, n: usize) -> tinyrt_cuda::DeviceBuffer<f32> {
    dev.upload(&vec![f32::NAN; n]).unwrap()
}

/// A byte buffer filled with a pattern no kernel output should keep.
fn poison_u8(dev: &CudaDevice, n: usize) -> tinyrt_cuda::DeviceBuffer<u8> {
    dev.upload(&vec![0xA5u8; n]).unwrap()
}

fn format(ty: WeightType) -> QuantFormat {
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
fn random_weights(
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

fn q8_1_reference(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut blocks = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
    quant::quantize_row_q8_1(x, &mut blocks);
    let mut deq = vec![0.0f32; x.len()];
    quant::dequantize_row_q8_1(&blocks, &mut deq);
    let bytes: &[u8] = bytemuck::cast_slice::<BlockQ8_1, u8>(&blocks);
    (bytes.to_vec(), deq)
}

/// |got - want| <= tol for every element, with a message naming the worst one.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
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

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

// ---------------------------------------------------------------- no driver

#[test]
fn missing_driver_is_an_error_not_a_panic() {
    if !driver_available() {
        assert!(
            !required(),
            "TINYRT_REQUIRE_GPU=1 but libcuda cannot be loaded"
        );
        assert!(matches!(CudaDevice::new(0), Err(CudaError::NoDriver)));
    } else if let Err(e) = CudaDevice::new(0) {
        // A driver without a device must still give an error value.
        assert!(!required(), "TINYRT_REQUIRE_GPU=1 but {e}");
    }
}

// ---------------------------------------------------------------- quantization

#[test]
fn quantize_q8_1_matches_the_reference_bit_for_bit() {
    let gpu = device();
    let mut rng = Rng::new(1);
    for n in [32, 96, 4096, 32 * 777] {
        let mut x = rng.vec(n, 3.0);
        x[0] = 0.0;
        if n >= 64 {
            // An all-zero block (d = 0).
            x[32..64].iter_mut().for_each(|v| *v = 0.0);
        }
        let (want, _) = q8_1_reference(&x);
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let mut yd = poison_u8(dev, want.len());
        dev.quantize_q8_1(&xd, &mut yd, n).unwrap();
        let got = dev.download(&yd).unwrap();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn rms_norm_q8_1_matches_norm_then_quantize() {
    let gpu = device();
    let mut rng = Rng::new(2);
    for (nrows, ncols) in [(1, 64), (3, 576), (2, 2048)] {
        let x = rng.vec(nrows * ncols, 2.0);
        let w = rng.vec(ncols, 1.5);
        let mut normed = vec![0.0f32; x.len()];
        ops::rms_norm(Isa::Scalar, &x, &w, 1e-5, &mut normed);
        let (_, want) = q8_1_reference(&normed);
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let wd = dev.upload(&w).unwrap();
        let mut yd = poison_u8(dev, nrows * ncols / 32 * 36);
        dev.rms_norm_q8_1(&xd, &wd, &mut yd, nrows, ncols, 1e-5)
            .unwrap();
        let bytes = dev.download(&yd).unwrap();
        let blocks: &[BlockQ8_1] = bytemuck::cast_slice(&bytes);
        let mut got = vec![0.0f32; x.len()];
        quant::dequantize_row_q8_1(blocks, &mut got);
        // Float rounding in the norm may move a value by one quantization step.
        assert_close("rms_norm_q8_1", &got, &want, |i| {
            let blk = &want[i / 32 * 32..i / 32 * 32 + 32];
            max_abs(blk) / 127.0 * 1.01 + 1e-6
        });
    }
}

// ---------------------------------------------------------------- embedding lookup

#[test]
fn get_rows_dequantizes_like_the_reference_for_every_format() {
    let gpu = device();
    let mut rng = Rng::new(3);
    for ty in WeightType::ALL {
        for (nrows, ncols) in [(5, 256), (17, 512)] {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let ids: Vec<i32> = vec![0, (nrows - 1) as i32, 3, 3, -1, nrows as i32];
            let Some(dev) = gpu.as_ref() else { continue };
            let table = dev.upload(&bytes).unwrap();
            let idd = dev.upload(&ids).unwrap();
            let mut out = poison_f32(dev, ids.len() * ncols);
            dev.get_rows(ty, &table, &idd, &mut out, ids.len(), nrows, ncols)
                .unwrap();
            let got = dev.download(&out).unwrap();
            let mut want = Vec::new();
            for &id in &ids {
                if id >= 0 && (id as usize) < nrows {
                    want.extend_from_slice(&deq[id as usize * ncols..(id as usize + 1) * ncols]);
                } else {
                    want.extend(std::iter::repeat_n(0.0, ncols));
                }
            }
            let scale = max_abs(&want);
            assert_close(
                &format!("get_rows {ty:?} {nrows}x{ncols}"),
                &got,
                &want,
                |_| scale * 1e-6,
            );
        }
    }
}

// ---------------------------------------------------------------- matrix products

fn dot_f64(a: &[f32], b: &[f32]) -> (f32, f32) {
    let mut s = 0.0f64;
    let mut abs = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        s += *x as f64 * *y as f64;
        abs += (*x as f64 * *y as f64).abs();
    }
    (s as f32, abs as f32)
}

#[test]
fn matvec_matches_the_dequantized_dot_for_every_format() {
    let gpu = device();
    let mut rng = Rng::new(4);
    for ty in WeightType::ALL {
        for (nrows, ncols) in [(1, 256), (7, 512), (33, 1024), (130, 2816)] {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ncols, 1.0);
            let y0 = rng.vec(nrows, 1.0);
            let x_used = if ty.is_quantized() {
                q8_1_reference(&x).1
            } else {
                x.clone()
            };
            let mut want = Vec::with_capacity(nrows);
            let mut tol = Vec::with_capacity(nrows);
            for r in 0..nrows {
                let (s, abs) = dot_f64(&deq[r * ncols..(r + 1) * ncols], &x_used);
                want.push(s);
                tol.push(abs * 5e-5 + 1e-5);
            }
            let Some(dev) = gpu.as_ref() else { continue };
            let wd = dev.upload(&bytes).unwrap();
            let xd = dev.upload(&x).unwrap();
            let mut xq = poison_u8(dev, ncols / 32 * 36);
            dev.quantize_q8_1(&xd, &mut xq, ncols).unwrap();
            // Every threads-per-row setting (0: the default choice) of the quantized kernels.
            let settings: &[usize] = if ty.is_quantized() {
                &[0, 8, 16, 32, 64, 128]
            } else {
                &[0]
            };
            for &tpr in settings {
                for accumulate in [false, true] {
                    let mut yd = dev.upload(&y0).unwrap();
                    if !ty.is_quantized() {
                        dev.matvec_f32_input(ty, &wd, &xd, &mut yd, accumulate, nrows, ncols)
                            .unwrap();
                    } else if tpr == 0 {
                        dev.matvec_q8_1(ty, &wd, &xq, &mut yd, accumulate, nrows, ncols)
                            .unwrap();
                    } else {
                        dev.matvec_q8_1_tpr(ty, &wd, &xq, &mut yd, accumulate, nrows, ncols, tpr)
                            .unwrap();
                    }
                    let got = dev.download(&yd).unwrap();
                    let want: Vec<f32> = (0..nrows)
                        .map(|r| if accumulate { want[r] + y0[r] } else { want[r] })
                        .collect();
                    assert_close(
                        &format!("matvec {ty:?} {nrows}x{ncols} tpr={tpr} accumulate={accumulate}"),
                        &got,
                        &want,
                        |i| tol[i],
                    );
                }
            }
        }
    }
}

#[test]
fn q4_0_planar_layout_gives_the_same_matvec() {
    let gpu = device();
    let mut rng = Rng::new(15);
    for (nrows, ncols) in [(1, 256), (33, 1024), (130, 2816), (300, 576)] {
        let (bytes, deq) = random_weights(&mut rng, WeightType::Q4_0, nrows, ncols);
        // The planar layout, built on the host: all 16-byte quant groups, then all scales.
        let nblocks = nrows * ncols / 32;
        let mut planar = vec![0u8; bytes.len()];
        for (b, blk) in bytes.chunks_exact(18).enumerate() {
            planar[16 * b..16 * b + 16].copy_from_slice(&blk[2..18]);
            planar[16 * nblocks + 2 * b..16 * nblocks + 2 * b + 2].copy_from_slice(&blk[0..2]);
        }
        let x = rng.vec(ncols, 1.0);
        let xq = q8_1_reference(&x).1;
        let (want, tol): (Vec<f32>, Vec<f32>) = (0..nrows)
            .map(|r| {
                let (s, a) = dot_f64(&deq[r * ncols..(r + 1) * ncols], &xq);
                (s, a * 5e-5 + 1e-5)
            })
            .unzip();
        let Some(dev) = gpu.as_ref() else { continue };
        let wd = dev.upload(&bytes).unwrap();
        let mut wp = poison_u8(dev, bytes.len());
        dev.repack_q4_0_planar(&wd, &mut wp, nrows, ncols).unwrap();
        assert_eq!(
            dev.download(&wp).unwrap(),
            planar,
            "repack_q4_0_planar {nrows}x{ncols}"
        );
        let xd = dev.upload(&x).unwrap();
        let mut xqd = poison_u8(dev, ncols / 32 * 36);
        dev.quantize_q8_1(&xd, &mut xqd, ncols).unwrap();
        let mut y_raw = poison_f32(dev, nrows);
        dev.matvec_q8_1(WeightType::Q4_0, &wd, &xqd, &mut y_raw, false, nrows, ncols)
            .unwrap();
        let mut y_planar = poison_f32(dev, nrows);
        dev.matvec_q4_0_planar(&wp, &xqd, &mut y_planar, false, nrows, ncols)
            .unwrap();
        let got = dev.download(&y_planar).unwrap();
        assert_close(
            &format!("matvec_q4_0_planar {nrows}x{ncols}"),
            &got,
            &want,
            |i| tol[i],
        );
        assert_eq!(
            got,
            dev.download(&y_raw).unwrap(),
            "planar and GGUF layouts differ"
        );
        // Accumulate into y.
        dev.matvec_q4_0_planar(&wp, &xqd, &mut y_planar, true, nrows, ncols)
            .unwrap();
        let twice: Vec<f32> = want.iter().map(|w| 2.0 * w).collect();
        let got = dev.download(&y_planar).unwrap();
        assert_close(
            &format!("matvec_q4_0_planar accumulate {nrows}x{ncols}"),
            &got,
            &twice,
            |i| 2.0 * tol[i],
        );
    }
}

#[test]
fn fused_gate_up_matches_act_of_gate_times_up() {
    let gpu = device();
    let mut rng = Rng::new(14);
    let silu64 = |x: f64| x / (1.0 + (-x).exp());
    let gelu64 =
        |x: f64| 0.5 * x * (1.0 + (0.797_884_560_802_865_4 * x * (1.0 + 0.044715 * x * x)).tanh());
    for ty in WeightType::ALL.into_iter().filter(|t| t.is_quantized()) {
        for (nrows, ncols) in [(5, 256), (70, 2048), (9, 576)] {
            if ty.row_bytes(ncols).is_none() {
                continue;
            }
            let (gbytes, gdeq) = random_weights(&mut rng, ty, nrows, ncols);
            let (ubytes, udeq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ncols, 1.0);
            let xq = q8_1_reference(&x).1;
            for act in [GluActivation::Silu, GluActivation::GeluTanh] {
                let mut want = Vec::new();
                let mut tol = Vec::new();
                for r in 0..nrows {
                    let (g, ga) = dot_f64(&gdeq[r * ncols..(r + 1) * ncols], &xq);
                    let (u, ua) = dot_f64(&udeq[r * ncols..(r + 1) * ncols], &xq);
                    let (g, u) = (g as f64, u as f64);
                    let a = if act == GluActivation::Silu {
                        silu64(g)
                    } else {
                        gelu64(g)
                    };
                    want.push((a * u) as f32);
                    let (dg, du) = (ga as f64 * 5e-5 + 1e-5, ua as f64 * 5e-5 + 1e-5);
                    tol.push((1.2 * (u.abs() * dg + (g.abs() + dg) * du) + 1e-5) as f32);
                }
                let Some(dev) = gpu.as_ref() else { continue };
                let gd = dev.upload(&gbytes).unwrap();
                let ud = dev.upload(&ubytes).unwrap();
                let xd = dev.upload(&x).unwrap();
                let mut xqd = poison_u8(dev, ncols / 32 * 36);
                dev.quantize_q8_1(&xd, &mut xqd, ncols).unwrap();
                let mut yd = poison_f32(dev, nrows);
                dev.matvec_glu_q8_1(ty, act, &gd, &ud, &xqd, &mut yd, nrows, ncols)
                    .unwrap();
                let got = dev.download(&yd).unwrap();
                assert_close(
                    &format!("matvec_glu {ty:?} {act:?} {nrows}x{ncols}"),
                    &got,
                    &want,
                    |i| tol[i],
                );
            }
        }
    }
}

#[test]
fn matvec_f32_and_f16_handle_unaligned_row_lengths() {
    let gpu = device();
    let mut rng = Rng::new(5);
    for ty in [WeightType::F32, WeightType::F16] {
        for (nrows, ncols) in [(3, 77), (9, 100), (5, 8)] {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ncols, 1.0);
            let Some(dev) = gpu.as_ref() else { continue };
            let wd = dev.upload(&bytes).unwrap();
            let xd = dev.upload(&x).unwrap();
            let mut yd = poison_f32(dev, nrows);
            dev.matvec_f32_input(ty, &wd, &xd, &mut yd, false, nrows, ncols)
                .unwrap();
            let got = dev.download(&yd).unwrap();
            let (want, tol): (Vec<f32>, Vec<f32>) = (0..nrows)
                .map(|r| {
                    let (s, a) = dot_f64(&deq[r * ncols..(r + 1) * ncols], &x);
                    (s, a * 5e-5 + 1e-6)
                })
                .unzip();
            assert_close(
                &format!("matvec {ty:?} {nrows}x{ncols}"),
                &got,
                &want,
                |i| tol[i],
            );
        }
    }
}

#[test]
fn matmul_matches_the_dequantized_product_for_every_format() {
    let gpu = device();
    let mut rng = Rng::new(6);
    let round16 =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| f16::from_f32(*x).to_f32()).collect() };
    for ty in WeightType::ALL {
        for (nrows, ncols, ntok) in [(3, 256, 1), (65, 512, 5), (130, 256, 70), (64, 1024, 64)] {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ntok * ncols, 1.0);
            // f32 kernel: the dequantized product. Tensor-core kernel: the same with W and X
            // rounded to f16 first (what it multiplies), accumulated in f32.
            let (deq16, x16) = (round16(&deq), round16(&x));
            let mut want = Vec::new();
            let mut want16 = Vec::new();
            let mut tol = Vec::new();
            for t in 0..ntok {
                for r in 0..nrows {
                    let (s, a) = dot_f64(
                        &deq[r * ncols..(r + 1) * ncols],
                        &x[t * ncols..(t + 1) * ncols],
                    );
                    let (s16, _) = dot_f64(
                        &deq16[r * ncols..(r + 1) * ncols],
                        &x16[t * ncols..(t + 1) * ncols],
                    );
                    want.push(s);
                    want16.push(s16);
                    tol.push(a * 5e-5 + 1e-6);
                }
            }
            let Some(dev) = gpu.as_ref() else { continue };
            let wd = dev.upload(&bytes).unwrap();
            let xd = dev.upload(&x).unwrap();
            let mut yd = poison_f32(dev, ntok * nrows);
            dev.matmul(ty, &wd, &xd, &mut yd, nrows, ncols, ntok)
                .unwrap();
            let got = dev.download(&yd).unwrap();
            assert_close(
                &format!("matmul {ty:?} {nrows}x{ncols} ntok={ntok}"),
                &got,
                &want,
                |i| tol[i],
            );
            let mut yd = poison_f32(dev, ntok * nrows);
            dev.matmul_f16_mma(ty, &wd, &xd, &mut yd, nrows, ncols, ntok)
                .unwrap();
            let got = dev.download(&yd).unwrap();
            // An element whose f32 dequantization differs in the last bit may round to the
            // other f16 neighbour: allow 1e-3 of the largest term on top of f32 accumulation.
            assert_close(
                &format!("matmul_f16_mma {ty:?} {nrows}x{ncols} ntok={ntok}"),
                &got,
                &want16,
                |i| tol[i] * 2.0 + 1e-3,
            );
        }
    }
}

// ---------------------------------------------------------------- norms, rope

#[test]
fn rms_norm_and_layer_norm_match_the_cpu_ops() {
    let gpu = device();
    let mut rng = Rng::new(7);
    for (nrows, ncols) in [(1, 64), (4, 576), (3, 2560), (2, 100)] {
        let x = rng.vec(nrows * ncols, 3.0);
        let w = rng.vec(ncols, 1.0);
        let b = rng.vec(ncols, 0.5);
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let wd = dev.upload(&w).unwrap();
        let bd = dev.upload(&b).unwrap();
        let mut out = poison_f32(dev, nrows * ncols);

        let mut want = vec![0.0f32; x.len()];
        ops::rms_norm(Isa::Scalar, &x, &w, 1e-6, &mut want);
        dev.rms_norm(&xd, &wd, &mut out, nrows, ncols, 1e-6)
            .unwrap();
        let got = dev.download(&out).unwrap();
        let s = max_abs(&want);
        assert_close(&format!("rms_norm {nrows}x{ncols}"), &got, &want, |_| {
            s * 1e-5
        });

        for bias in [false, true] {
            ops::layer_norm(Isa::Scalar, &x, &w, bias.then_some(&b[..]), 1e-5, &mut want);
            let bias_arg: Option<&dyn tinyrt_cuda::DevicePtrF32> =
                if bias { Some(&bd) } else { None };
            dev.layer_norm(&xd, &wd, bias_arg, &mut out, nrows, ncols, 1e-5)
                .unwrap();
            let got = dev.download(&out).unwrap();
            let s = max_abs(&want);
            assert_close(
                &format!("layer_norm {nrows}x{ncols} bias={bias}"),
                &got,
                &want,
                |_| s * 1e-5,
            );
        }
    }
}

#[test]
fn rope_matches_the_cpu_op_in_every_mode() {
    let gpu = device();
    let mut rng = Rng::new(8);
    // (mode, n_head, head_dim, n_rot, base): llama-like, NeoX, Phi-2-like partial rotation.
    let cases = [
        (
            RopeMode::Normal,
            ops::RopeMode::Normal,
            4,
            64,
            64,
            10000.0f32,
        ),
        (
            RopeMode::Neox,
            ops::RopeMode::Neox,
            3,
            128,
            128,
            1_000_000.0,
        ),
        (RopeMode::Neox, ops::RopeMode::Neox, 2, 80, 32, 10000.0),
        (RopeMode::Normal, ops::RopeMode::Normal, 2, 80, 32, 10000.0),
    ];
    for (mode, cpu_mode, n_head, head_dim, n_rot, base) in cases {
        let positions: Vec<usize> = vec![0, 1, 7, 100, 1023];
        let ntok = positions.len();
        let x = rng.vec(ntok * n_head * head_dim, 1.0);
        let cache = ops::RopeCache::new(&ops::RopeCfg::new(cpu_mode, n_rot, base), 1024).unwrap();
        let mut want = x.clone();
        ops::rope(Isa::Scalar, &mut want, n_head, head_dim, &positions, &cache);
        let Some(dev) = gpu.as_ref() else { continue };
        let mut xd = dev.upload(&x).unwrap();
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let pd = dev.upload(&pos).unwrap();
        dev.rope(
            &mut xd,
            &pd,
            ntok,
            n_head * head_dim,
            n_head,
            head_dim,
            n_rot,
            mode,
            base,
            1.0,
        )
        .unwrap();
        let got = dev.download(&xd).unwrap();
        // Angles up to ~1000 rad: cos/sin of nearby f32 angles differ by ~1e-4.
        assert_close(
            &format!("rope {mode:?} n_rot={n_rot}/{head_dim}"),
            &got,
            &want,
            |_| 5e-4,
        );
    }
}

// ---------------------------------------------------------------- attention

/// Causal attention in f64 over f16-rounded K/V: the formula the kernel implements.
#[allow(clippy::too_many_arguments)]
fn attention_f64(
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

#[test]
fn attention_matches_the_reference_for_decode_and_prefill() {
    let gpu = device();
    let mut rng = Rng::new(9);
    // (n_head, n_kv, head_dim, pos0, ntok, chunk, sliding window)
    let cases = [
        (8, 2, 64, 0, 1, 256, None),
        (8, 2, 64, 5, 1, 256, None),
        (9, 3, 64, 700, 1, 256, None),
        (4, 1, 256, 300, 1, 64, None),
        (32, 32, 80, 40, 1, 16, None),
        (8, 2, 64, 3, 9, 256, None),
        (4, 4, 128, 0, 70, 32, None),
        // Gemma-3 local layers: 4 query heads on 1 KV head, head_dim 256, window 512.
        (4, 1, 256, 700, 1, 256, Some(512)),
        (4, 1, 256, 5, 1, 256, Some(512)),
        (8, 2, 64, 20, 30, 16, Some(7)),
    ];
    for (n_head, n_kv, hd, pos0, ntok, chunk, window) in cases {
        let n_ctx = 1024;
        let row = n_kv * hd;
        // Earlier positions already in the cache, then this batch's K/V stored by the kernel.
        let k_all = rng.vec((pos0 + ntok) * row, 1.0);
        let v_all = rng.vec((pos0 + ntok) * row, 1.0);
        let q = rng.vec(ntok * n_head * hd, 1.0);
        let to_f16 =
            |v: &[f32]| -> Vec<u16> { v.iter().map(|x| f16::from_f32(*x).to_bits()).collect() };
        // References first (they also run without a GPU).
        let scale = 1.0 / (hd as f32).sqrt();
        let k_r: Vec<f32> = k_all.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
        let v_r: Vec<f32> = v_all.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
        let want = attention_f64(&q, &k_r, &v_r, pos0, ntok, n_head, n_kv, hd, scale, window);
        // The full caches after this batch's K/V are stored.
        let mut kc_full = vec![0u16; n_ctx * row];
        let mut vc_full = vec![0u16; n_ctx * row];
        kc_full[..(pos0 + ntok) * row].copy_from_slice(&to_f16(&k_all));
        vc_full[..(pos0 + ntok) * row].copy_from_slice(&to_f16(&v_all));
        // The CPU op rounds Q and the accumulator to f16 on its decode path (ggml parity):
        // same result within f16 precision.
        let kv = ops::KvView {
            k: ops::KvData::F16(&kc_full),
            v: ops::KvData::F16(&vc_full),
            n_kv_heads: n_kv,
            head_dim: hd,
        };
        let params = ops::AttnParams {
            n_heads: n_head,
            scale,
            window,
        };
        let mut cpu = vec![0.0f32; q.len()];
        ops::attention(Isa::Scalar, &q, &kv, pos0, &params, &mut cpu);
        let what = format!(
            "attention heads {n_head}/{n_kv} hd {hd} pos0 {pos0} ntok {ntok} chunk {chunk} window {window:?}"
        );
        assert_close(
            &format!("{what}: f64 reference vs ops::attention"),
            &want,
            &cpu,
            |_| 5e-3,
        );

        let Some(dev) = gpu.as_ref() else { continue };
        // Earlier positions already in the cache; this batch's K/V stored by the kernel.
        let mut kc_host = vec![0u16; n_ctx * row];
        let mut vc_host = vec![0u16; n_ctx * row];
        kc_host[..pos0 * row].copy_from_slice(&kc_full[..pos0 * row]);
        vc_host[..pos0 * row].copy_from_slice(&vc_full[..pos0 * row]);
        let mut kc = dev.upload(&kc_host).unwrap();
        let mut vc = dev.upload(&vc_host).unwrap();
        let k_new = dev.upload(&k_all[pos0 * row..]).unwrap();
        let v_new = dev.upload(&v_all[pos0 * row..]).unwrap();
        let pd = dev.upload(&[pos0 as i32]).unwrap();
        dev.kv_store_f16(&k_new, &v_new, &mut kc, &mut vc, &pd, ntok, row, row, n_ctx)
            .unwrap();
        assert_eq!(dev.download(&kc).unwrap(), kc_full, "kv_store_f16 K");
        assert_eq!(dev.download(&vc).unwrap(), vc_full, "kv_store_f16 V");

        let shape = AttentionShape {
            ntok,
            n_head,
            n_kv,
            head_dim: hd,
            n_ctx,
            q_stride: n_head * hd,
            out_stride: n_head * hd,
            max_kv_len: n_ctx,
            chunk,
            window,
        };
        let qd = dev.upload(&q).unwrap();
        for wide in [false, true] {
            let mut out = poison_f32(dev, ntok * n_head * hd);
            let mut scratch = poison_f32(dev, shape.scratch_len());
            if wide {
                dev.attention_wide(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            } else {
                dev.attention(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            }
            .unwrap();
            let got = dev.download(&out).unwrap();
            let what = format!("{what} wide={wide}");
            assert_close(&what, &got, &want, |_| 5e-5);
            assert_close(&format!("{what} vs ops::attention"), &got, &cpu, |_| 5e-3);
        }
    }
}

// ---------------------------------------------------------------- element-wise

#[test]
fn elementwise_kernels_match_the_cpu_ops() {
    let gpu = device();
    let mut rng = Rng::new(10);
    for n in [1, 255, 256, 10_000, 4095] {
        let a = rng.vec(n, 6.0);
        let b = rng.vec(n, 2.0);
        let Some(dev) = gpu.as_ref() else { continue };
        let ad = dev.upload(&a).unwrap();
        let bd = dev.upload(&b).unwrap();
        let mut out = poison_f32(dev, n);
        let rel = |want: &[f32], r: f32| -> Vec<f32> {
            want.iter().map(|w| w.abs() * r + 1e-6).collect()
        };

        let mut want = a.clone();
        tinyrt_kernels::cpu::scalar::ops::silu_inplace(&mut want);
        dev.silu(&ad, &mut out, n).unwrap();
        let tol = rel(&want, 1e-5);
        assert_close("silu", &dev.download(&out).unwrap(), &want, |i| tol[i]);

        // ggml's CPU GELU goes through an f16 table; the GPU evaluates the formula (as ggml's
        // CUDA backend does): compare to the formula in f64, and to the CPU op within f16.
        let gelu64 = |x: f32| {
            let x = x as f64;
            (0.5 * x * (1.0 + (0.797_884_560_802_865_4 * x * (1.0 + 0.044715 * x * x)).tanh()))
                as f32
        };
        let want: Vec<f32> = a.iter().map(|x| gelu64(*x)).collect();
        dev.gelu(&ad, &mut out, n).unwrap();
        let got = dev.download(&out).unwrap();
        let tol = rel(&want, 1e-5);
        assert_close("gelu", &got, &want, |i| tol[i]);
        let mut cpu = a.clone();
        ops::gelu_tanh_inplace(Isa::Scalar, &mut cpu);
        let tol = rel(&cpu, 2e-3);
        assert_close("gelu vs ops", &got, &cpu, |i| tol[i] + 1e-3);

        let mut want = vec![0.0f32; n];
        ops::swiglu(Isa::Scalar, &a, &b, &mut want);
        dev.swiglu(&ad, &bd, &mut out, n).unwrap();
        let tol = rel(&want, 1e-5);
        assert_close("swiglu", &dev.download(&out).unwrap(), &want, |i| tol[i]);

        let want: Vec<f32> = a.iter().zip(&b).map(|(g, u)| gelu64(*g) * u).collect();
        dev.geglu(&ad, &bd, &mut out, n).unwrap();
        let tol = rel(&want, 1e-5);
        assert_close("geglu", &dev.download(&out).unwrap(), &want, |i| tol[i]);

        let mut want = a.clone();
        ops::add_inplace(Isa::Scalar, &mut want, &b);
        dev.add(&ad, &bd, &mut out, n).unwrap();
        assert_eq!(dev.download(&out).unwrap(), want, "add");

        // A bias row added to every row (here rows of 5, when n allows).
        if n % 5 == 0 {
            let bias = &b[..5];
            let want: Vec<f32> = a.iter().enumerate().map(|(i, v)| v + bias[i % 5]).collect();
            let biasd = dev.upload(bias).unwrap();
            dev.add_rows(&ad, &biasd, &mut out, n / 5, 5).unwrap();
            assert_eq!(dev.download(&out).unwrap(), want, "add_rows");
        }

        let mut want = a.clone();
        tinyrt_kernels::cpu::scalar::ops::mul_inplace(&mut want, &b);
        dev.mul(&ad, &bd, &mut out, n).unwrap();
        assert_eq!(dev.download(&out).unwrap(), want, "mul");

        let mut want = a.clone();
        ops::scale_inplace(Isa::Scalar, &mut want, 0.125);
        dev.scale(&ad, &mut out, 0.125, n).unwrap();
        assert_eq!(dev.download(&out).unwrap(), want, "scale");
    }
}

#[test]
fn softmax_rows_matches_the_cpu_op() {
    let gpu = device();
    let mut rng = Rng::new(11);
    for (nrows, ncols) in [(1, 1), (3, 100), (2, 49152)] {
        let x = rng.vec(nrows * ncols, 20.0);
        let mut want = x.clone();
        for row in want.chunks_exact_mut(ncols) {
            tinyrt_kernels::cpu::scalar::ops::softmax_inplace(row);
        }
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let mut out = poison_f32(dev, x.len());
        dev.softmax_rows(&xd, &mut out, nrows, ncols).unwrap();
        let got = dev.download(&out).unwrap();
        assert_close(&format!("softmax {nrows}x{ncols}"), &got, &want, |i| {
            want[i] * 5e-5 + 1e-9
        });
    }
}

#[test]
fn argmax_picks_the_lowest_index_among_ties() {
    let gpu = device();
    let mut rng = Rng::new(12);
    for n in [1, 31, 1000, 49152, 262_144] {
        let mut x = rng.vec(n, 10.0);
        let mut cases = vec![x.clone()];
        if n > 10 {
            let hi = n - 3;
            x[hi] = 50.0;
            x[n / 2] = 50.0;
            cases.push(x.clone());
            cases.push(vec![1.5; n]);
            let mut nan = x.clone();
            nan[0] = f32::NAN;
            cases.push(nan);
        }
        for x in cases {
            let want = x
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0;
            let Some(dev) = gpu.as_ref() else { continue };
            let xd = dev.upload(&x).unwrap();
            let mut out = dev.upload(&[-7i32]).unwrap();
            dev.argmax(&xd, &mut out, n).unwrap();
            assert_eq!(
                dev.download(&out).unwrap()[0] as usize,
                want,
                "argmax n = {n}"
            );
        }
    }
}

// ---------------------------------------------------------------- graphs and errors

#[test]
fn a_captured_graph_replays_with_new_device_side_values() {
    let gpu = device();
    let mut rng = Rng::new(13);
    let (n_head, hd, nrows) = (4, 64, 300);
    let ncols = n_head * hd;
    let (wbytes, _) = random_weights(&mut rng, WeightType::Q4_0, nrows, ncols);
    let x0 = rng.vec(ncols, 1.0);
    let Some(dev) = gpu.as_ref() else { return };
    let wd = dev.upload(&wbytes).unwrap();
    let x_src = dev.upload(&x0).unwrap();
    let mut x = dev.alloc_zeros::<f32>(ncols).unwrap();
    let mut xq = dev.alloc_zeros::<u8>(ncols / 32 * 36).unwrap();
    let mut y = dev.alloc_zeros::<f32>(nrows).unwrap();
    let mut best = dev.alloc_zeros::<i32>(1).unwrap();
    let mut pos = dev.upload(&[0i32]).unwrap();

    // One "step": copy the input, rope it at the device-side position, quantize, matvec, argmax.
    let step = |dev: &CudaDevice,
                x: &mut tinyrt_cuda::DeviceBuffer<f32>,
                xq: &mut tinyrt_cuda::DeviceBuffer<u8>,
                y: &mut tinyrt_cuda::DeviceBuffer<f32>,
                best: &mut tinyrt_cuda::DeviceBuffer<i32>,
                pos: &tinyrt_cuda::DeviceBuffer<i32>|
     -> Result<(), CudaError> {
        dev.copy(&x_src, x)?;
        dev.rope(
            x,
            pos,
            1,
            ncols,
            n_head,
            hd,
            hd,
            RopeMode::Neox,
            10000.0,
            1.0,
        )?;
        dev.quantize_q8_1(x, xq, ncols)?;
        dev.matvec_q8_1(WeightType::Q4_0, &wd, xq, y, false, nrows, ncols)?;
        dev.argmax(y, best, nrows)
    };
    let mut direct = Vec::new();
    for p in [3i32, 250] {
        dev.write(&[p], &mut pos).unwrap();
        step(dev, &mut x, &mut xq, &mut y, &mut best, &pos).unwrap();
        direct.push((dev.download(&y).unwrap(), dev.download(&best).unwrap()[0]));
    }
    let graph = dev
        .capture(|d| step(d, &mut x, &mut xq, &mut y, &mut best, &pos))
        .unwrap();
    for (i, p) in [3i32, 250].into_iter().enumerate() {
        dev.write(&[p], &mut pos).unwrap();
        graph.replay().unwrap();
        let got = (dev.download(&y).unwrap(), dev.download(&best).unwrap()[0]);
        assert_eq!(got, direct[i], "graph replay at position {p}");
    }
    assert_ne!(
        direct[0].0, direct[1].0,
        "the position must change the result"
    );
}

#[test]
fn bad_arguments_are_errors() {
    let gpu = device();
    let Some(dev) = gpu.as_ref() else { return };
    let w = dev.alloc_zeros::<u8>(18 * 4).unwrap();
    let xq = dev.alloc_zeros::<u8>(36 * 2).unwrap();
    let mut y = dev.alloc_zeros::<f32>(2).unwrap();
    // 3 rows of 64 need 108 bytes of weights.
    let e = dev.matvec_q8_1(WeightType::Q4_0, &w, &xq, &mut y, false, 3, 64);
    assert!(matches!(e, Err(CudaError::BadArgument { .. })), "{e:?}");
    // 48 columns is not a whole number of blocks.
    let e = dev.matvec_q8_1(WeightType::Q4_0, &w, &xq, &mut y, false, 1, 48);
    assert!(matches!(e, Err(CudaError::BadArgument { .. })), "{e:?}");
    // F16 weights take an f32 vector.
    let e = dev.matvec_q8_1(WeightType::F16, &w, &xq, &mut y, false, 1, 32);
    assert!(matches!(e, Err(CudaError::BadArgument { .. })), "{e:?}");
    let x = dev.alloc_zeros::<f32>(16).unwrap();
    let e = dev.quantize_q8_1(&x, &mut dev.alloc_zeros::<u8>(36).unwrap(), 32);
    assert!(matches!(e, Err(CudaError::BadArgument { .. })), "{e:?}");
}

// ---------------------------------------------------------------- a whole decode layer

/// Rounds `x` through Q8_1 as the GPU's activation quantization does.
fn q8_1_round_trip(x: &[f32]) -> Vec<f32> {
    q8_1_reference(x).1
}

fn matvec_ref(w: &[f32], x: &[f32], nrows: usize) -> Vec<f32> {
    let ncols = x.len();
    (0..nrows)
        .map(|r| dot_f64(&w[r * ncols..(r + 1) * ncols], x).0)
        .collect()
}

/// One llama-style decode layer (RMSNorm, Q/K/V, RoPE, f16 KV cache, GQA attention split over
/// the KV range, output projection with residual, RMSNorm, fused SwiGLU, down projection with
/// residual) captured once as a CUDA graph and replayed for 6 tokens with the position and the
/// input written to device memory between replays; compared with the same layer on the CPU.
#[test]
fn a_decode_layer_graph_matches_the_cpu_layer_over_several_tokens() {
    let gpu = device();
    let mut rng = Rng::new(16);
    let (d, n_head, n_kv, hd, ff, n_ctx) = (256usize, 4usize, 2usize, 64usize, 512usize, 64usize);
    let kvd = n_kv * hd;
    let ty = WeightType::Q4_0;
    let eps = 1e-5f32;
    let (wq, wq_f) = random_weights(&mut rng, ty, d, d);
    let (wk, wk_f) = random_weights(&mut rng, ty, kvd, d);
    let (wv, wv_f) = random_weights(&mut rng, ty, kvd, d);
    let (wo, wo_f) = random_weights(&mut rng, ty, d, d);
    let (wg, wg_f) = random_weights(&mut rng, ty, ff, d);
    let (wu, wu_f) = random_weights(&mut rng, ty, ff, d);
    let (wd, wd_f) = random_weights(&mut rng, ty, d, ff);
    let attn_norm: Vec<f32> = rng.vec(d, 0.5).iter().map(|v| 1.0 + v).collect();
    let ffn_norm: Vec<f32> = rng.vec(d, 0.5).iter().map(|v| 1.0 + v).collect();
    let steps = 6;
    let inputs: Vec<Vec<f32>> = (0..steps).map(|_| rng.vec(d, 2.0)).collect();
    let scale = 1.0 / (hd as f32).sqrt();

    // CPU layer.
    let cache = ops::RopeCache::new(
        &ops::RopeCfg::new(ops::RopeMode::Normal, hd, 10000.0),
        n_ctx,
    )
    .unwrap();
    let (mut k_hist, mut v_hist) = (Vec::new(), Vec::new());
    let mut want = Vec::new();
    for (p, x_in) in inputs.iter().enumerate() {
        let mut x = x_in.clone();
        let mut n = vec![0.0f32; d];
        ops::rms_norm(Isa::Scalar, &x, &attn_norm, eps, &mut n);
        let nq = q8_1_round_trip(&n);
        let mut q = matvec_ref(&wq_f, &nq, d);
        let mut k = matvec_ref(&wk_f, &nq, kvd);
        let v = matvec_ref(&wv_f, &nq, kvd);
        ops::rope(Isa::Scalar, &mut q, n_head, hd, &[p], &cache);
        ops::rope(Isa::Scalar, &mut k, n_kv, hd, &[p], &cache);
        k_hist.extend(k.iter().map(|x| f16::from_f32(*x).to_f32()));
        v_hist.extend(v.iter().map(|x| f16::from_f32(*x).to_f32()));
        let att = attention_f64(&q, &k_hist, &v_hist, p, 1, n_head, n_kv, hd, scale, None);
        let o = matvec_ref(&wo_f, &q8_1_round_trip(&att), d);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        ops::rms_norm(Isa::Scalar, &x, &ffn_norm, eps, &mut n);
        let hq = q8_1_round_trip(&n);
        let g = matvec_ref(&wg_f, &hq, ff);
        let u = matvec_ref(&wu_f, &hq, ff);
        let glu: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let down = matvec_ref(&wd_f, &q8_1_round_trip(&glu), d);
        x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        want.push(x);
    }

    let Some(dev) = gpu.as_ref() else { return };
    let up = |b: &[u8]| dev.upload(b).unwrap();
    let (wq, wk, wv, wo, wg, wu, wd) = (
        up(&wq),
        up(&wk),
        up(&wv),
        up(&wo),
        up(&wg),
        up(&wu),
        up(&wd),
    );
    let attn_norm = dev.upload(&attn_norm).unwrap();
    let ffn_norm = dev.upload(&ffn_norm).unwrap();
    let mut x = poison_f32(dev, d);
    let mut xq = poison_u8(dev, ff / 32 * 36);
    let mut q = poison_f32(dev, d);
    let mut k = poison_f32(dev, kvd);
    let mut v = poison_f32(dev, kvd);
    let mut kc = dev.alloc_zeros::<u16>(n_ctx * kvd).unwrap();
    let mut vc = dev.alloc_zeros::<u16>(n_ctx * kvd).unwrap();
    let mut att = poison_f32(dev, d);
    let mut glu = poison_f32(dev, ff);
    let mut pos = dev.upload(&[0i32]).unwrap();
    let shape = AttentionShape {
        ntok: 1,
        n_head,
        n_kv,
        head_dim: hd,
        n_ctx,
        q_stride: d,
        out_stride: d,
        max_kv_len: n_ctx,
        chunk: 16,
        window: None,
    };
    let mut scratch = poison_f32(dev, shape.scratch_len());
    let graph = dev
        .capture(|dv| {
            dv.rms_norm_q8_1(&x, &attn_norm, &mut xq, 1, d, eps)?;
            dv.matvec_q8_1(ty, &wq, &xq, &mut q, false, d, d)?;
            dv.matvec_q8_1(ty, &wk, &xq, &mut k, false, kvd, d)?;
            dv.matvec_q8_1(ty, &wv, &xq, &mut v, false, kvd, d)?;
            dv.rope(
                &mut q,
                &pos,
                1,
                d,
                n_head,
                hd,
                hd,
                RopeMode::Normal,
                10000.0,
                1.0,
            )?;
            dv.rope(
                &mut k,
                &pos,
                1,
                kvd,
                n_kv,
                hd,
                hd,
                RopeMode::Normal,
                10000.0,
                1.0,
            )?;
            dv.kv_store_f16(&k, &v, &mut kc, &mut vc, &pos, 1, kvd, kvd, n_ctx)?;
            dv.attention(&q, &kc, &vc, &pos, &mut att, &mut scratch, shape, scale)?;
            dv.quantize_q8_1(&att, &mut xq, d)?;
            dv.matvec_q8_1(ty, &wo, &xq, &mut x, true, d, d)?;
            dv.rms_norm_q8_1(&x, &ffn_norm, &mut xq, 1, d, eps)?;
            dv.matvec_glu_q8_1(ty, GluActivation::Silu, &wg, &wu, &xq, &mut glu, ff, d)?;
            dv.quantize_q8_1(&glu, &mut xq, ff)?;
            dv.matvec_q8_1(ty, &wd, &xq, &mut x, true, d, ff)
        })
        .unwrap();
    for (p, x_in) in inputs.iter().enumerate() {
        dev.write(x_in, &mut x).unwrap();
        dev.write(&[p as i32], &mut pos).unwrap();
        graph.replay().unwrap();
        let got = dev.download(&x).unwrap();
        // Activations are re-quantized four times per layer: a float-rounding difference can
        // move one int8 step (about 1e-3 of the output norm), so compare with a relative L2
        // bound; a wrong rotation, cache row or head mapping moves the output by far more.
        let err: f64 = got
            .iter()
            .zip(&want[p])
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = want[p]
            .iter()
            .map(|b| (*b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            got.iter().all(|v| v.is_finite()) && err <= 1e-2 * norm,
            "decode layer, token {p}: relative L2 error {} (got {:?}.. want {:?}..)",
            err / norm,
            &got[..4],
            &want[p][..4]
        );
    }
}

// ---------------------------------------------------------------- RoPE tables, fused RoPE + KV write

/// The device copy of a CPU RoPE table: `max_pos` rows of `RopeCache::row`.
fn rope_table_rows(cache: &ops::RopeCache) -> Vec<f32> {
    (0..cache.max_pos())
        .flat_map(|p| cache.row(p).to_vec())
        .collect()
}

/// RoPE cases: (mode, n_head, head_dim, n_rot, base, freq_scale, Llama-3 frequency factors).
#[allow(clippy::type_complexity)]
fn rope_table_cases(
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

#[test]
fn rope_cached_matches_the_cpu_op_with_factors_and_scaling() {
    let gpu = device();
    let mut rng = Rng::new(21);
    for (mode, cpu_mode, n_head, head_dim, n_rot, base, freq_scale, factors) in
        rope_table_cases(&mut rng)
    {
        let positions: Vec<usize> = vec![0, 1, 7, 100, 1023];
        let ntok = positions.len();
        let x = rng.vec(ntok * n_head * head_dim, 1.0);
        let cfg = ops::RopeCfg {
            freq_scale,
            freq_factors: factors.as_deref(),
            ..ops::RopeCfg::new(cpu_mode, n_rot, base)
        };
        let cache = ops::RopeCache::new(&cfg, 1024).unwrap();
        let mut want = x.clone();
        ops::rope(Isa::Scalar, &mut want, n_head, head_dim, &positions, &cache);
        let Some(dev) = gpu.as_ref() else { continue };
        let table = dev.upload(&rope_table_rows(&cache)).unwrap();
        let mut xd = dev.upload(&x).unwrap();
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let pd = dev.upload(&pos).unwrap();
        dev.rope_cached(
            &mut xd,
            &pd,
            &table,
            1024,
            ntok,
            n_head * head_dim,
            n_head,
            head_dim,
            n_rot,
            mode,
        )
        .unwrap();
        let got = dev.download(&xd).unwrap();
        // The same cos/sin values: only the rounding of two products differs (fma).
        assert_close(
            &format!(
                "rope_cached {mode:?} n_rot={n_rot}/{head_dim} factors={}",
                factors.is_some()
            ),
            &got,
            &want,
            |_| 1e-5,
        );
    }
}

#[test]
fn rope_kv_store_matches_rope_then_the_cache_write() {
    let gpu = device();
    let mut rng = Rng::new(22);
    for (mode, cpu_mode, n_head, head_dim, n_rot, base, freq_scale, factors) in
        rope_table_cases(&mut rng)
    {
        // GQA: half as many KV heads (at least one).
        let n_kv = (n_head / 2).max(1);
        let n_ctx = 64;
        for (pos0, ntok) in [(0usize, 1usize), (37, 1), (5, 6)] {
            let positions: Vec<usize> = (pos0..pos0 + ntok).collect();
            let (qw, kw) = (n_head * head_dim, n_kv * head_dim);
            let q = rng.vec(ntok * qw, 1.0);
            let k = rng.vec(ntok * kw, 1.0);
            let v = rng.vec(ntok * kw, 1.0);
            let cfg = ops::RopeCfg {
                freq_scale,
                freq_factors: factors.as_deref(),
                ..ops::RopeCfg::new(cpu_mode, n_rot, base)
            };
            let cache = ops::RopeCache::new(&cfg, n_ctx).unwrap();
            let (mut q_want, mut k_rot) = (q.clone(), k.clone());
            ops::rope(
                Isa::Scalar,
                &mut q_want,
                n_head,
                head_dim,
                &positions,
                &cache,
            );
            ops::rope(Isa::Scalar, &mut k_rot, n_kv, head_dim, &positions, &cache);
            let Some(dev) = gpu.as_ref() else { continue };
            let table = dev.upload(&rope_table_rows(&cache)).unwrap();
            let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
            let pd = dev.upload(&pos).unwrap();
            let shape = tinyrt_cuda::RopeKvShape {
                ntok,
                q_stride: qw,
                kv_stride: kw,
                n_head,
                n_kv,
                head_dim,
                n_rot,
                mode,
                n_ctx,
            };
            let what =
                format!("rope_kv_store {mode:?} n_rot={n_rot}/{head_dim} pos0={pos0} ntok={ntok}");
            let (kd, vd) = (dev.upload(&k).unwrap(), dev.upload(&v).unwrap());
            // f32 cache: K rotated, V copied, other positions untouched (zero).
            let mut qd = dev.upload(&q).unwrap();
            let mut kc = dev.alloc_zeros::<f32>(n_ctx * kw).unwrap();
            let mut vc = dev.alloc_zeros::<f32>(n_ctx * kw).unwrap();
            dev.rope_kv_store::<f32>(
                &mut qd, &kd, &vd, &mut kc, &mut vc, &pd, &table, n_ctx, shape,
            )
            .unwrap();
            assert_close(
                &format!("{what} q"),
                &dev.download(&qd).unwrap(),
                &q_want,
                |_| 1e-5,
            );
            let (kc, vc) = (dev.download(&kc).unwrap(), dev.download(&vc).unwrap());
            let mut k_want = vec![0.0f32; n_ctx * kw];
            let mut v_want = vec![0.0f32; n_ctx * kw];
            k_want[pos0 * kw..(pos0 + ntok) * kw].copy_from_slice(&k_rot);
            v_want[pos0 * kw..(pos0 + ntok) * kw].copy_from_slice(&v);
            assert_close(&format!("{what} f32 K cache"), &kc, &k_want, |_| 1e-5);
            assert_eq!(vc, v_want, "{what} f32 V cache");
            // f16 cache.
            let mut qd = dev.upload(&q).unwrap();
            let mut kc = dev.alloc_zeros::<u16>(n_ctx * kw).unwrap();
            let mut vc = dev.alloc_zeros::<u16>(n_ctx * kw).unwrap();
            dev.rope_kv_store::<u16>(
                &mut qd, &kd, &vd, &mut kc, &mut vc, &pd, &table, n_ctx, shape,
            )
            .unwrap();
            assert_close(
                &format!("{what} q (f16 run)"),
                &dev.download(&qd).unwrap(),
                &q_want,
                |_| 1e-5,
            );
            let to_f32 = |h: Vec<u16>| -> Vec<f32> {
                h.iter().map(|b| f16::from_bits(*b).to_f32()).collect()
            };
            let k16 = to_f32(dev.download(&kc).unwrap());
            let v16 = to_f32(dev.download(&vc).unwrap());
            let round =
                |x: &[f32]| -> Vec<f32> { x.iter().map(|v| f16::from_f32(*v).to_f32()).collect() };
            // One f16 step of the rotated value at most (the product may round either way).
            assert_close(&format!("{what} f16 K cache"), &k16, &round(&k_want), |i| {
                k_want[i].abs() / 1024.0 + 1e-6
            });
            assert_eq!(v16, round(&v_want), "{what} f16 V cache");
        }
    }
}

#[test]
fn attention_over_an_f32_cache_matches_the_reference() {
    let gpu = device();
    let mut rng = Rng::new(23);
    // (n_head, n_kv, head_dim, pos0, ntok, chunk, window)
    let cases = [
        (8, 2, 64, 0, 1, 256, None),
        (9, 3, 64, 700, 1, 256, None),
        (4, 1, 256, 300, 1, 64, Some(128)),
        (8, 2, 64, 3, 9, 256, None),
        (4, 4, 128, 0, 70, 32, None),
    ];
    for (n_head, n_kv, hd, pos0, ntok, chunk, window) in cases {
        let n_ctx = 1024;
        let row = n_kv * hd;
        let k_all = rng.vec((pos0 + ntok) * row, 1.0);
        let v_all = rng.vec((pos0 + ntok) * row, 1.0);
        let q = rng.vec(ntok * n_head * hd, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let want = attention_f64(
            &q, &k_all, &v_all, pos0, ntok, n_head, n_kv, hd, scale, window,
        );
        let Some(dev) = gpu.as_ref() else { continue };
        let mut kc_host = vec![0.0f32; n_ctx * row];
        let mut vc_host = vec![0.0f32; n_ctx * row];
        kc_host[..pos0 * row].copy_from_slice(&k_all[..pos0 * row]);
        vc_host[..pos0 * row].copy_from_slice(&v_all[..pos0 * row]);
        let mut kc = dev.upload(&kc_host).unwrap();
        let mut vc = dev.upload(&vc_host).unwrap();
        let k_new = dev.upload(&k_all[pos0 * row..]).unwrap();
        let v_new = dev.upload(&v_all[pos0 * row..]).unwrap();
        let pd = dev.upload(&[pos0 as i32]).unwrap();
        dev.kv_store::<f32>(&k_new, &v_new, &mut kc, &mut vc, &pd, ntok, row, row, n_ctx)
            .unwrap();
        let kc_got = dev.download(&kc).unwrap();
        assert_eq!(&kc_got[..(pos0 + ntok) * row], &k_all[..], "kv_store_f32 K");
        let shape = AttentionShape {
            ntok,
            n_head,
            n_kv,
            head_dim: hd,
            n_ctx,
            q_stride: n_head * hd,
            out_stride: n_head * hd,
            max_kv_len: (pos0 + ntok).next_multiple_of(chunk),
            chunk,
            window,
        };
        let qd = dev.upload(&q).unwrap();
        for wide in [false, true] {
            let mut out = poison_f32(dev, ntok * n_head * hd);
            let mut scratch = poison_f32(dev, shape.scratch_len());
            if wide {
                dev.attention_wide::<f32>(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            } else {
                dev.attention::<f32>(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            }
            .unwrap();
            let got = dev.download(&out).unwrap();
            assert_close(
                &format!("f32-cache attention {n_head}/{n_kv} hd {hd} pos0 {pos0} ntok {ntok} wide={wide}"),
                &got,
                &want,
                |_| 5e-5,
            );
        }
        // With the output also quantized by the combine pass: the same rows, and the Q8_1
        // bytes quantize_q8_1 makes of them.
        let mut out = poison_f32(dev, ntok * n_head * hd);
        let mut out_q8 = poison_u8(dev, ntok * n_head * hd / 32 * 36);
        let mut scratch = poison_f32(dev, shape.scratch_len());
        dev.attention_q8_1::<f32>(
            &qd,
            &kc,
            &vc,
            &pd,
            &mut out,
            &mut out_q8,
            &mut scratch,
            shape,
            scale,
        )
        .unwrap();
        let got = dev.download(&out).unwrap();
        assert_close(
            &format!("attention_q8_1 {n_head}/{n_kv} hd {hd} pos0 {pos0} ntok {ntok}"),
            &got,
            &want,
            |_| 5e-5,
        );
        let mut want_q8 = poison_u8(dev, ntok * n_head * hd / 32 * 36);
        dev.quantize_q8_1(&out, &mut want_q8, ntok * n_head * hd)
            .unwrap();
        assert_eq!(
            dev.download(&out_q8).unwrap(),
            dev.download(&want_q8).unwrap(),
            "attention_q8_1 Q8_1 bytes {n_head}/{n_kv} hd {hd} pos0 {pos0} ntok {ntok}"
        );
    }
}

#[test]
fn rms_norm_f32_q8_1_writes_the_row_and_its_q8_1_copy() {
    let gpu = device();
    let mut rng = Rng::new(24);
    for (nrows, ncols) in [(1, 64), (1, 576), (3, 2048)] {
        let x = rng.vec(nrows * ncols, 2.0);
        let w = rng.vec(ncols, 1.5);
        let mut normed = vec![0.0f32; x.len()];
        ops::rms_norm(Isa::Scalar, &x, &w, 1e-5, &mut normed);
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let wd = dev.upload(&w).unwrap();
        // The Q8_1 bytes are those of rms_norm_q8_1 (same code path).
        let mut want_q8 = poison_u8(dev, nrows * ncols / 32 * 36);
        dev.rms_norm_q8_1(&xd, &wd, &mut want_q8, nrows, ncols, 1e-5)
            .unwrap();
        let want_q8 = dev.download(&want_q8).unwrap();
        let mut out = poison_f32(dev, x.len());
        let mut q8 = poison_u8(dev, nrows * ncols / 32 * 36);
        dev.rms_norm_f32_q8_1(&xd, &wd, &mut out, &mut q8, nrows, ncols, 1e-5)
            .unwrap();
        assert_eq!(
            dev.download(&q8).unwrap(),
            want_q8,
            "Q8_1 bytes {nrows}x{ncols}"
        );
        assert_close(
            &format!("rms_norm_f32_q8_1 {nrows}x{ncols}"),
            &dev.download(&out).unwrap(),
            &normed,
            |i| normed[i].abs() * 1e-5 + 1e-6,
        );
    }
}

// ---------------------------------------------------------------- int8 tensor-core prefill

#[test]
fn matmul_q8_1_mma_matches_the_product_with_q8_1_activations() {
    let gpu = device();
    let mut rng = Rng::new(25);
    let types = WeightType::ALL
        .into_iter()
        .filter(|t| tinyrt_cuda::Kernel::matmul_mmq(*t).is_some());
    for ty in types {
        // Rows and tokens off the 64 x 64 tile, K off the 128-wide stage, several tiles (the
        // K-quants take the widths that are whole 256-value super-blocks).
        let shapes = [
            (3, 256, 2),
            (65, 512, 5),
            (130, 96, 70),
            (37, 768, 100),
            (64, 1024, 64),
            (200, 2080, 130),
        ];
        for (nrows, ncols, ntok) in shapes
            .into_iter()
            .filter(|&(_, c, _)| c % ty.block_size() == 0)
        {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ntok * ncols, 1.0);
            // What the kernel multiplies: W as stored, X rounded through Q8_1 (quantized per
            // 32-block of each token's row, as quantize_q8_1 does over the whole matrix).
            let xq = q8_1_round_trip(&x);
            let mut want = Vec::with_capacity(ntok * nrows);
            let mut tol = Vec::with_capacity(ntok * nrows);
            for t in 0..ntok {
                for r in 0..nrows {
                    let (s, a) = dot_f64(
                        &deq[r * ncols..(r + 1) * ncols],
                        &xq[t * ncols..(t + 1) * ncols],
                    );
                    want.push(s);
                    tol.push(a * 5e-5 + 1e-5);
                }
            }
            let Some(dev) = gpu.as_ref() else { continue };
            let wd = dev.upload(&bytes).unwrap();
            let xd = dev.upload(&x).unwrap();
            let mut xq8 = poison_u8(dev, ntok * ncols / 32 * 36);
            dev.quantize_q8_1(&xd, &mut xq8, ntok * ncols).unwrap();
            let mut yd = poison_f32(dev, ntok * nrows);
            dev.matmul_q8_1_mma(ty, &wd, &xq8, &mut yd, nrows, ncols, ntok)
                .unwrap();
            let got = dev.download(&yd).unwrap();
            assert_close(
                &format!("matmul_q8_1_mma {ty:?} {nrows}x{ncols} ntok={ntok}"),
                &got,
                &want,
                |i| tol[i],
            );
        }
    }
}

// ---------------------------------------------------------------- several products per launch

#[test]
fn matvec3_matches_the_reference_and_one_product_per_launch() {
    let gpu = device();
    let mut rng = Rng::new(26);
    // (ncols, rows of each product): Q/K/V shapes (GQA), two products, one product.
    let shapes: [(usize, &[usize]); 4] = [
        (256, &[7, 3, 3]),
        (576, &[576, 192, 192]),
        (2048, &[2048, 256, 256]),
        (1024, &[33, 65]),
    ];
    for ty in WeightType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let planars: &[bool] = if ty == WeightType::Q4_0 {
            &[false, true]
        } else {
            &[false]
        };
        for &(ncols, rows) in &shapes {
            if !ncols.is_multiple_of(ty.block_size().max(32)) {
                continue;
            }
            let mats: Vec<(Vec<u8>, Vec<f32>)> = rows
                .iter()
                .map(|&r| random_weights(&mut rng, ty, r, ncols))
                .collect();
            let x = rng.vec(ncols, 1.0);
            let xq = q8_1_round_trip(&x);
            let wants: Vec<(Vec<f32>, Vec<f32>)> = mats
                .iter()
                .zip(rows)
                .map(|((_, deq), &r)| {
                    (0..r)
                        .map(|i| dot_f64(&deq[i * ncols..(i + 1) * ncols], &xq))
                        .map(|(s, a)| (s, a * 5e-5 + 1e-5))
                        .unzip()
                })
                .collect();
            let Some(dev) = gpu.as_ref() else { continue };
            let xd = dev.upload(&x).unwrap();
            let mut xq8 = poison_u8(dev, ncols / 32 * 36);
            dev.quantize_q8_1(&xd, &mut xq8, ncols).unwrap();
            for &planar in planars {
                let ws: Vec<_> = mats
                    .iter()
                    .zip(rows)
                    .map(|((bytes, _), &r)| {
                        let w = dev.upload(bytes).unwrap();
                        if !planar {
                            return w;
                        }
                        let mut p = dev.alloc_zeros::<u8>(bytes.len()).unwrap();
                        dev.repack_q4_0_planar(&w, &mut p, r, ncols).unwrap();
                        p
                    })
                    .collect();
                let mut ys: Vec<_> = rows.iter().map(|&r| poison_f32(dev, r)).collect();
                {
                    let mut parts: Vec<_> = ws
                        .iter()
                        .zip(ys.iter_mut())
                        .zip(rows)
                        .map(|((w, y), &r)| (w, y.slice_mut(..), r))
                        .collect();
                    dev.matvec3_q8_1(ty, planar, &mut parts, &xq8, ncols)
                        .unwrap();
                }
                for (i, ((y, w), &r)) in ys.iter().zip(&ws).zip(rows).enumerate() {
                    let got = dev.download(y).unwrap();
                    let (want, tol) = &wants[i];
                    let what = format!(
                        "matvec3 {ty:?} planar={planar} {ncols} cols, product {i} of {rows:?}"
                    );
                    assert_close(&what, &got, want, |j| tol[j]);
                    // What one product per launch gives (the same arithmetic per row).
                    let mut one = poison_f32(dev, r);
                    if planar {
                        dev.matvec_q4_0_planar(w, &xq8, &mut one, false, r, ncols)
                    } else {
                        dev.matvec_q8_1(ty, w, &xq8, &mut one, false, r, ncols)
                    }
                    .unwrap();
                    let one = dev.download(&one).unwrap();
                    assert_close(&format!("{what}: vs one per launch"), &got, &one, |j| {
                        one[j].abs() * 1e-6 + 1e-6
                    });
                }
            }
        }
    }
}
