//! The LoRA products (`lora_down`, `lora_up`) against an f64 evaluation of
//! `out += s · B·(A·x)`, on rows that are part of wider buffers.

use crate::common::*;

#[test]
fn lora_products_match_an_f64_reference() {
    let gpu = device();
    let mut rng = Rng::new(18);
    // (rank, n_in, n_out, ntok): decode and prefill, ranks 4..64, widths not multiples of 32.
    for (rank, n_in, n_out, ntok) in [
        (8, 64, 64, 1),
        (4, 576, 192, 7),
        (16, 100, 300, 33),
        (64, 2048, 256, 5),
        (1, 32, 1000, 2),
    ] {
        let (x_stride, out_stride) = (n_in + 3, n_out + 5);
        let a = rng.vec(rank * n_in, 0.5);
        let b = rng.vec(n_out * rank, 0.5);
        let x = rng.vec(ntok * x_stride, 1.0);
        let out0 = rng.vec(ntok * out_stride, 1.0);
        let scale = 0.75f32;
        // f64 reference; the columns past n_out of each out row are untouched.
        let mut want = out0.clone();
        for tok in 0..ntok {
            let t: Vec<f64> = (0..rank)
                .map(|j| {
                    (0..n_in)
                        .map(|k| a[j * n_in + k] as f64 * x[tok * x_stride + k] as f64)
                        .sum()
                })
                .collect();
            for i in 0..n_out {
                let u: f64 = (0..rank).map(|j| b[i * rank + j] as f64 * t[j]).sum();
                let o = &mut want[tok * out_stride + i];
                *o = (*o as f64 + scale as f64 * u) as f32;
            }
        }
        let Some(dev) = gpu.as_ref() else { continue };
        let mut bt = vec![0.0f32; rank * n_out];
        for i in 0..n_out {
            for j in 0..rank {
                bt[j * n_out + i] = b[i * rank + j];
            }
        }
        let (ad, btd, xd) = (
            dev.upload(&a).unwrap(),
            dev.upload(&bt).unwrap(),
            dev.upload(&x).unwrap(),
        );
        let mut td = poison_f32(dev, ntok * rank);
        let mut od = dev.upload(&out0).unwrap();
        dev.lora_down(&ad, &xd, &mut td, rank, n_in, ntok, x_stride)
            .unwrap();
        dev.lora_up(&btd, &td, &mut od, scale, n_out, rank, ntok, out_stride)
            .unwrap();
        let got = dev.download(&od).unwrap();
        // f32 sums of n_in and rank products of values below 1.
        let tol = 1e-5 * (n_in as f32).sqrt() * (rank as f32).sqrt() + 1e-5;
        assert_close(
            &format!("lora r{rank} {n_in}->{n_out} x{ntok}"),
            &got,
            &want,
            |i| if i % out_stride < n_out { tol } else { 0.0 },
        );
    }
}

#[test]
fn lora_launches_check_their_sizes() {
    let Some(dev) = device() else { return };
    let a = dev.upload(&[0.0f32; 8 * 64]).unwrap();
    let x = dev.upload(&[0.0f32; 64]).unwrap();
    let mut t = dev.upload(&[0.0f32; 8]).unwrap();
    // Two rows of x do not fit a buffer of one.
    assert!(dev.lora_down(&a, &x, &mut t, 8, 64, 2, 64).is_err());
    // A stride narrower than the row.
    assert!(dev.lora_down(&a, &x, &mut t, 8, 64, 1, 32).is_err());
    let bt = dev.upload(&vec![0.0f32; 300 * 64]).unwrap();
    let t300 = dev.upload(&[0.0f32; 300]).unwrap();
    let mut out = dev.upload(&[0.0f32; 64]).unwrap();
    // Rank above LORA_MAX_RANK.
    assert!(dev
        .lora_up(&bt, &t300, &mut out, 1.0, 64, 300, 1, 64)
        .is_err());
}
