//! Graph capture and replay, argument checks, and a whole decode layer as one graph.

use crate::common::*;

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
            dv.kv_store::<u16>(&k, &v, &mut kc, &mut vc, &pos, 1, kvd, kvd, n_ctx)?;
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
