//! Matrix-vector and matrix-matrix products of every weight format.

use crate::common::*;

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
    for ty in WeightType::ALL {
        for (nrows, ncols, ntok) in [(3, 256, 1), (65, 512, 5), (130, 256, 70), (64, 1024, 64)] {
            let (bytes, deq) = random_weights(&mut rng, ty, nrows, ncols);
            let x = rng.vec(ntok * ncols, 1.0);
            // The dequantized product.
            let mut want = Vec::new();
            let mut tol = Vec::new();
            for t in 0..ntok {
                for r in 0..nrows {
                    let (s, a) = dot_f64(
                        &deq[r * ncols..(r + 1) * ncols],
                        &x[t * ncols..(t + 1) * ncols],
                    );
                    want.push(s);
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
        }
    }
}

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
