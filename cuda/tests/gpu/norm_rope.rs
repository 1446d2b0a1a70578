//! Norms and RoPE (on-device angles and cos/sin tables, fused with the KV-cache write).

use crate::common::*;

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
