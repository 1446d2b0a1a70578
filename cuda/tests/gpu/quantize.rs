//! Q8_1 quantization, the embedding lookup, and running without a driver.

use crate::common::*;

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
