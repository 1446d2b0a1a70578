//! Element-wise kernels and argmax.

use crate::common::*;

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
        ops::scale_inplace(Isa::Scalar, &mut want, 0.125);
        dev.scale(&ad, &mut out, 0.125, n).unwrap();
        assert_eq!(dev.download(&out).unwrap(), want, "scale");
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
