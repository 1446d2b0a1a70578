//! Attention over f16 and f32 KV caches, decode and prefill.

use crate::common::*;

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
            causal: true,
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
        dev.kv_store::<u16>(&k_new, &v_new, &mut kc, &mut vc, &pd, ntok, row, row, n_ctx)
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
        let mut out = poison_f32(dev, ntok * n_head * hd);
        let mut scratch = poison_f32(dev, shape.scratch_len());
        dev.attention(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            .unwrap();
        let got = dev.download(&out).unwrap();
        assert_close(&what, &got, &want, |_| 5e-5);
        assert_close(&format!("{what} vs ops::attention"), &got, &cpu, |_| 5e-3);
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
        let mut out = poison_f32(dev, ntok * n_head * hd);
        let mut scratch = poison_f32(dev, shape.scratch_len());
        dev.attention::<f32>(&qd, &kc, &vc, &pd, &mut out, &mut scratch, shape, scale)
            .unwrap();
        let got = dev.download(&out).unwrap();
        assert_close(
            &format!("f32-cache attention {n_head}/{n_kv} hd {hd} pos0 {pos0} ntok {ntok}"),
            &got,
            &want,
            |_| 5e-5,
        );
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
