//! GPU throughput measurements, run by `scripts/gpu-check.sh`:
//! `gpu_bench-* --ignored --nocapture`. Prints one Markdown table: device-to-device copy
//! bandwidth, the Q4_0 (and other) matrix-vector kernels at TinyLlama-1.1B and SmolLM2-135M
//! shapes as GB/s of weight bytes and as a fraction of the copy bandwidth, a graph-captured
//! TinyLlama-shaped decode's matrix-vector work, attention decode and prefill matmul.
//! Ignored by default (it needs a GPU and takes seconds); skips when there is no GPU.
#![cfg(feature = "cuda")]

use tinyrt_cuda::{
    matvec_threads_per_row, AttentionShape, CudaDevice, CudaError, DeviceBuffer, GluActivation,
    RopeMode, WeightType,
};

struct Row {
    bench: String,
    shape: String,
    micros: f64,
    gbps: Option<f64>,
    note: String,
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = tinyrt_kernels::rng::SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Uniform in [-1, 1).
fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    random_bytes(4 * n, seed)
        .chunks_exact(4)
        .map(|b| {
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Microseconds per call of `f`, from CUDA events over `reps` calls after 3 warm-up calls.
fn time_us<F: FnMut(&CudaDevice) -> Result<(), CudaError>>(
    dev: &CudaDevice,
    reps: usize,
    mut f: F,
) -> Result<f64, CudaError> {
    for _ in 0..3 {
        f(dev)?;
    }
    dev.synchronize()?;
    let ms = dev.time_ms(|d| {
        for _ in 0..reps {
            f(d)?;
        }
        Ok(())
    })?;
    Ok(ms as f64 * 1000.0 / reps as f64)
}

fn copy_bandwidth(dev: &CudaDevice) -> Result<f64, CudaError> {
    let n = 1usize << 30;
    let src = dev.alloc_zeros::<u8>(n)?;
    let mut dst = dev.alloc_zeros::<u8>(n)?;
    let us = time_us(dev, 10, |d| d.copy(&src, &mut dst))?;
    // Read + write, as KERNELS.md counts it.
    Ok(2.0 * n as f64 / (us * 1e3))
}

fn matvec_row(
    dev: &CudaDevice,
    ty: WeightType,
    nrows: usize,
    ncols: usize,
    copy_gbps: f64,
    model: &str,
) -> Result<Row, CudaError> {
    let bytes = ty.row_bytes(ncols).expect("whole blocks") * nrows;
    let w = dev.upload(&random_bytes(bytes, (nrows * 31 + ncols) as u64))?;
    let x: Vec<f32> = (0..ncols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let xd = dev.upload(&x)?;
    let mut y = dev.alloc_zeros::<f32>(nrows)?;
    let default_tpr = matvec_threads_per_row(ncols);
    let (us, sweep) = if ty.is_quantized() {
        let mut xq = dev.alloc_zeros::<u8>(ncols / 32 * 36)?;
        dev.quantize_q8_1(&xd, &mut xq, ncols)?;
        // Sweep the threads-per-row knob; report the default and the best.
        let mut times = Vec::new();
        for tpr in [8usize, 16, 32, 64, 128] {
            let t = time_us(dev, 200, |d| {
                d.matvec_q8_1_tpr(ty, &w, &xq, &mut y, false, nrows, ncols, tpr)
            })?;
            times.push((tpr, t));
        }
        let default = times
            .iter()
            .find(|(t, _)| *t == default_tpr)
            .map_or(f64::NAN, |x| x.1);
        let best = times
            .iter()
            .cloned()
            .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
        let sweep = times
            .iter()
            .map(|(t, us)| format!("{t}:{us:.1}"))
            .collect::<Vec<_>>()
            .join(" ");
        (
            default,
            format!(
                "tpr {default_tpr} (best {} at {:.1} µs; µs by tpr {sweep})",
                best.0, best.1
            ),
        )
    } else {
        let t = time_us(dev, 200, |d| {
            d.matvec_f32_input(ty, &w, &xd, &mut y, false, nrows, ncols)
        })?;
        (t, "warp per row".to_string())
    };
    let gbps = bytes as f64 / (us * 1e3);
    Ok(Row {
        bench: format!("matvec {ty:?}"),
        shape: format!("{model} {nrows}x{ncols}"),
        micros: us,
        gbps: Some(gbps),
        note: format!("{:.0}% of copy; {sweep}", 100.0 * gbps / copy_gbps),
    })
}

/// Q4_0 matrix-vector in the planar layout (128-bit loads) against the GGUF layout.
fn planar_row(
    dev: &CudaDevice,
    nrows: usize,
    ncols: usize,
    copy_gbps: f64,
    model: &str,
) -> Result<Row, CudaError> {
    let bytes = WeightType::Q4_0.row_bytes(ncols).expect("whole blocks") * nrows;
    let w = dev.upload(&random_bytes(bytes, (nrows * 17 + ncols) as u64))?;
    let mut wp = dev.alloc_zeros::<u8>(bytes)?;
    dev.repack_q4_0_planar(&w, &mut wp, nrows, ncols)?;
    let xd = dev.upload(&random_f32(ncols, 5))?;
    let mut xq = dev.alloc_zeros::<u8>(ncols / 32 * 36)?;
    dev.quantize_q8_1(&xd, &mut xq, ncols)?;
    let mut y = dev.alloc_zeros::<f32>(nrows)?;
    let us = time_us(dev, 200, |d| {
        d.matvec_q4_0_planar(&wp, &xq, &mut y, false, nrows, ncols)
    })?;
    let gbps = bytes as f64 / (us * 1e3);
    Ok(Row {
        bench: "matvec Q4_0 planar".into(),
        shape: format!("{model} {nrows}x{ncols}"),
        micros: us,
        gbps: Some(gbps),
        note: format!(
            "{:.0}% of copy; tpr {}",
            100.0 * gbps / copy_gbps,
            matvec_threads_per_row(ncols)
        ),
    })
}

/// Gate and up projections + SwiGLU for one token: fused in one launch, against two matrix-vector
/// launches and the element-wise SwiGLU.
fn glu_rows(
    dev: &CudaDevice,
    ty: WeightType,
    nrows: usize,
    ncols: usize,
    copy_gbps: f64,
) -> Result<Vec<Row>, CudaError> {
    let bytes = ty.row_bytes(ncols).expect("whole blocks") * nrows;
    let wg = dev.upload(&random_bytes(bytes, 21))?;
    let wu = dev.upload(&random_bytes(bytes, 22))?;
    let xd = dev.upload(&random_f32(ncols, 23))?;
    let mut xq = dev.alloc_zeros::<u8>(ncols / 32 * 36)?;
    dev.quantize_q8_1(&xd, &mut xq, ncols)?;
    let mut g = dev.alloc_zeros::<f32>(nrows)?;
    let mut u = dev.alloc_zeros::<f32>(nrows)?;
    let mut y = dev.alloc_zeros::<f32>(nrows)?;
    let fused = time_us(dev, 200, |d| {
        d.matvec_glu_q8_1(ty, GluActivation::Silu, &wg, &wu, &xq, &mut y, nrows, ncols)
    })?;
    let separate = time_us(dev, 200, |d| {
        d.matvec_q8_1(ty, &wg, &xq, &mut g, false, nrows, ncols)?;
        d.matvec_q8_1(ty, &wu, &xq, &mut u, false, nrows, ncols)?;
        d.swiglu(&g, &u, &mut y, nrows)
    })?;
    let row = |name: &str, us: f64| {
        let gbps = 2.0 * bytes as f64 / (us * 1e3);
        Row {
            bench: format!("gate+up+SwiGLU {ty:?}, {name}"),
            shape: format!("2 x {nrows}x{ncols}"),
            micros: us,
            gbps: Some(gbps),
            note: format!("{:.0}% of copy", 100.0 * gbps / copy_gbps),
        }
    };
    Ok(vec![row("fused", fused), row("3 launches", separate)])
}

/// The matrix-vector work of one decode token of the TinyLlama-1.1B shape (22 layers of
/// Q, K, V, O, gate, up, down + the 32000-row output), each matrix its own buffer (no L2
/// reuse), activation quantization included, captured once as a graph and replayed.
fn tinyllama_graph(dev: &CudaDevice, copy_gbps: f64) -> Result<Row, CudaError> {
    let ty = WeightType::Q4_0;
    let (d, ff, kv, vocab, layers) = (2048usize, 5632usize, 256usize, 32000usize, 22usize);
    let shapes = [(d, d), (kv, d), (kv, d), (d, d), (ff, d), (ff, d), (d, ff)];
    // Random bytes (never zeros, which can run faster than real data), copied on the device
    // from one random buffer into every matrix.
    let largest = ty.row_bytes(d).expect("blocks") * vocab;
    let random = dev.upload(&random_bytes(largest, 11))?;
    let mut weights: Vec<(DeviceBuffer<u8>, usize, usize)> = Vec::new();
    let mut total = 0usize;
    let all_shapes = (0..layers).flat_map(|_| shapes).chain([(vocab, d)]);
    for (r, c) in all_shapes {
        let b = ty.row_bytes(c).expect("blocks") * r;
        total += b;
        let mut w = dev.alloc_zeros::<u8>(b)?;
        dev.copy(&random.slice(0..b), &mut w)?;
        weights.push((w, r, c));
    }
    let x = dev.upload(&random_f32(ff, 12))?;
    let mut xq = dev.alloc_zeros::<u8>(ff / 32 * 36)?;
    let mut y = dev.alloc_zeros::<f32>(vocab)?;
    let graph = dev.capture(|dv| {
        for (w, r, c) in &weights {
            dv.quantize_q8_1(&x, &mut xq, *c)?;
            dv.matvec_q8_1(ty, w, &xq, &mut y, false, *r, *c)?;
        }
        Ok(())
    })?;
    let us = time_us(dev, 20, |_| graph.replay())?;
    let gbps = total as f64 / (us * 1e3);
    Ok(Row {
        bench: "decode matvecs, CUDA graph".into(),
        shape: format!(
            "TinyLlama-1.1B Q4_0, {} launches, {:.0} MB",
            2 * weights.len(),
            total as f64 / 1e6
        ),
        micros: us,
        gbps: Some(gbps),
        note: format!(
            "{:.0}% of copy; {:.0} tok/s bound",
            100.0 * gbps / copy_gbps,
            1e6 / us
        ),
    })
}

/// A whole TinyLlama-1.1B-shaped Q4_0 decode step as the runtime would issue it, 12 launches
/// per layer (QKV as one fused matrix, RoPE over Q and K heads together, gate/up fused), at
/// context position `pos`, captured once and replayed: the kernels' tokens/s ceiling.
fn tinyllama_decode_step(dev: &CudaDevice, pos: usize, copy_gbps: f64) -> Result<Row, CudaError> {
    let ty = WeightType::Q4_0;
    let (d, ff, n_head, n_kv, hd, vocab, layers, n_ctx) = (
        2048usize, 5632usize, 32usize, 4usize, 64usize, 32000usize, 22usize, 2048usize,
    );
    let kvd = n_kv * hd;
    let qkv_rows = d + 2 * kvd;
    let rb = |r: usize, c: usize| ty.row_bytes(c).expect("blocks") * r;
    let random = dev.upload(&random_bytes(rb(vocab, d), 31))?;
    let weight = |r: usize, c: usize| -> Result<DeviceBuffer<u8>, CudaError> {
        let mut w = dev.alloc_zeros::<u8>(rb(r, c))?;
        dev.copy(&random.slice(0..rb(r, c)), &mut w)?;
        Ok(w)
    };
    struct Layer {
        qkv: DeviceBuffer<u8>,
        o: DeviceBuffer<u8>,
        gate: DeviceBuffer<u8>,
        up: DeviceBuffer<u8>,
        down: DeviceBuffer<u8>,
        kc: DeviceBuffer<u16>,
        vc: DeviceBuffer<u16>,
    }
    let f16_bits = |v: Vec<f32>| -> Vec<u16> {
        v.into_iter()
            .map(|x| half::f16::from_f32(x).to_bits())
            .collect()
    };
    let mut model = Vec::new();
    for l in 0..layers {
        model.push(Layer {
            qkv: weight(qkv_rows, d)?,
            o: weight(d, d)?,
            gate: weight(ff, d)?,
            up: weight(ff, d)?,
            down: weight(d, ff)?,
            kc: dev.upload(&f16_bits(random_f32(n_ctx * kvd, 40 + l as u64)))?,
            vc: dev.upload(&f16_bits(random_f32(n_ctx * kvd, 80 + l as u64)))?,
        });
    }
    let output = weight(vocab, d)?;
    let total_bytes: usize =
        layers * (rb(qkv_rows, d) + rb(d, d) + 2 * rb(ff, d) + rb(d, ff)) + rb(vocab, d);
    let norm = dev.upload(&vec![1.0f32; d])?;
    let mut x = dev.upload(&random_f32(d, 50))?;
    let mut xq = dev.alloc_zeros::<u8>(ff / 32 * 36)?;
    let mut qkv = dev.alloc_zeros::<f32>(qkv_rows)?;
    let mut att = dev.alloc_zeros::<f32>(d)?;
    let mut glu = dev.alloc_zeros::<f32>(ff)?;
    let mut logits = dev.alloc_zeros::<f32>(vocab)?;
    let mut best = dev.alloc_zeros::<i32>(1)?;
    let posd = dev.upload(&[pos as i32])?;
    let shape = AttentionShape {
        ntok: 1,
        n_head,
        n_kv,
        head_dim: hd,
        n_ctx,
        q_stride: qkv_rows,
        out_stride: d,
        max_kv_len: n_ctx,
        chunk: 256,
        window: None,
    };
    let mut scratch = dev.alloc_zeros::<f32>(shape.scratch_len())?;
    let eps = 1e-5;
    let graph = dev.capture(|dv| {
        for layer in model.iter_mut() {
            dv.rms_norm_q8_1(&x, &norm, &mut xq, 1, d, eps)?;
            dv.matvec_q8_1(ty, &layer.qkv, &xq, &mut qkv, false, qkv_rows, d)?;
            // Q and K heads are adjacent in the fused output: one RoPE launch for both.
            dv.rope(
                &mut qkv,
                &posd,
                1,
                qkv_rows,
                n_head + n_kv,
                hd,
                hd,
                RopeMode::Normal,
                10000.0,
                1.0,
            )?;
            let (k_new, v_new) = (qkv.slice(d..d + kvd), qkv.slice(d + kvd..qkv_rows));
            dv.kv_store::<u16>(
                &k_new,
                &v_new,
                &mut layer.kc,
                &mut layer.vc,
                &posd,
                1,
                kvd,
                kvd,
                n_ctx,
            )?;
            dv.attention(
                &qkv,
                &layer.kc,
                &layer.vc,
                &posd,
                &mut att,
                &mut scratch,
                shape,
                0.125,
            )?;
            dv.quantize_q8_1(&att, &mut xq, d)?;
            dv.matvec_q8_1(ty, &layer.o, &xq, &mut x, true, d, d)?;
            dv.rms_norm_q8_1(&x, &norm, &mut xq, 1, d, eps)?;
            dv.matvec_glu_q8_1(
                ty,
                GluActivation::Silu,
                &layer.gate,
                &layer.up,
                &xq,
                &mut glu,
                ff,
                d,
            )?;
            dv.quantize_q8_1(&glu, &mut xq, ff)?;
            dv.matvec_q8_1(ty, &layer.down, &xq, &mut x, true, d, ff)?;
        }
        dv.rms_norm_q8_1(&x, &norm, &mut xq, 1, d, eps)?;
        dv.matvec_q8_1(ty, &output, &xq, &mut logits, false, vocab, d)?;
        dv.argmax(&logits, &mut best, vocab)
    })?;
    let us = time_us(dev, 20, |_| graph.replay())?;
    let gbps = total_bytes as f64 / (us * 1e3);
    Ok(Row {
        bench: "full decode step, CUDA graph".into(),
        shape: format!(
            "TinyLlama-1.1B Q4_0, {} launches, position {pos}",
            12 * layers + 3
        ),
        micros: us,
        gbps: Some(gbps),
        note: format!(
            "{:.0} tok/s; weights at {:.0}% of copy",
            1e6 / us,
            100.0 * gbps / copy_gbps
        ),
    })
}

fn attention_decode(dev: &CudaDevice, ctx: usize, copy_gbps: f64) -> Result<Row, CudaError> {
    let (n_head, n_kv, hd) = (32usize, 4usize, 64usize);
    let shape = AttentionShape {
        ntok: 1,
        n_head,
        n_kv,
        head_dim: hd,
        n_ctx: ctx,
        q_stride: n_head * hd,
        out_stride: n_head * hd,
        max_kv_len: ctx,
        chunk: 256,
        window: None,
    };
    let f16_bits = |v: Vec<f32>| -> Vec<u16> {
        v.into_iter()
            .map(|x| half::f16::from_f32(x).to_bits())
            .collect()
    };
    let kc = dev.upload(&f16_bits(random_f32(ctx * n_kv * hd, 13)))?;
    let vc = dev.upload(&f16_bits(random_f32(ctx * n_kv * hd, 14)))?;
    let q = dev.upload(&random_f32(n_head * hd, 15))?;
    let pos = dev.upload(&[(ctx - 1) as i32])?;
    let mut out = dev.alloc_zeros::<f32>(n_head * hd)?;
    let mut scratch = dev.alloc_zeros::<f32>(shape.scratch_len())?;
    let us = time_us(dev, 100, |d| {
        d.attention(&q, &kc, &vc, &pos, &mut out, &mut scratch, shape, 0.125)
    })?;
    let bytes = 2 * ctx * n_kv * hd * 2;
    let gbps = bytes as f64 / (us * 1e3);
    Ok(Row {
        bench: "attention decode (f16 KV, warp per key)".to_string(),
        shape: format!("heads 32/4, hd 64, ctx {ctx}"),
        micros: us,
        gbps: Some(gbps),
        note: format!("{:.0}% of copy", 100.0 * gbps / copy_gbps),
    })
}

/// Which prefill kernel [`prefill_matmul`] times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefill {
    F32Tiles,
    /// `quantize_q8_1` of the activations plus `matmul_q8_1_mma` (what the runtime runs).
    Int8Mma,
}

fn prefill_matmul(
    dev: &CudaDevice,
    ty: WeightType,
    nrows: usize,
    ncols: usize,
    ntok: usize,
    kernel: Prefill,
) -> Result<Row, CudaError> {
    let bytes = ty.row_bytes(ncols).expect("blocks") * nrows;
    let w = dev.upload(&random_bytes(bytes, 7))?;
    let x = dev.upload(&random_f32(ntok * ncols, 16))?;
    let mut xq = dev.alloc_zeros::<u8>(ntok * ncols / 32 * tinyrt_cuda::Q8_1_BLOCK_BYTES)?;
    let mut y = dev.alloc_zeros::<f32>(ntok * nrows)?;
    let us = match kernel {
        Prefill::F32Tiles => time_us(dev, 10, |d| {
            d.matmul(ty, &w, &x, &mut y, nrows, ncols, ntok)
        })?,
        Prefill::Int8Mma => time_us(dev, 10, |d| {
            d.quantize_q8_1(&x, &mut xq, ntok * ncols)?;
            d.matmul_q8_1_mma(ty, &w, &xq, &mut y, nrows, ncols, ntok)
        })?,
    };
    let tflops = 2.0 * (nrows * ncols * ntok) as f64 / (us * 1e6);
    let how = match kernel {
        Prefill::F32Tiles => "f32 FMA tiles",
        Prefill::Int8Mma => "Q8_1 quantize + int8 mma.sync",
    };
    Ok(Row {
        bench: format!("matmul {ty:?} (prefill, {how})"),
        shape: format!("{nrows}x{ncols}, {ntok} tokens"),
        micros: us,
        gbps: None,
        note: format!("{tflops:.2} TFLOP/s"),
    })
}

#[test]
#[ignore = "needs a GPU; run by scripts/gpu-check.sh"]
fn gpu_bench() {
    let dev = match CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            assert!(
                std::env::var("TINYRT_REQUIRE_GPU").map_or(true, |v| v != "1"),
                "TINYRT_REQUIRE_GPU=1 but {e}"
            );
            eprintln!("SKIPPED gpu_bench: {e}");
            return;
        }
    };
    let sms = dev.multiprocessor_count().unwrap_or(0);
    println!("device: {} ({}, {sms} SMs)", dev.name(), dev.arch());
    dev.load_all().expect("compile and load the kernels");
    let mut rows: Vec<Row> = Vec::new();
    let mut failures = Vec::new();
    let copy = match copy_bandwidth(&dev) {
        Ok(c) => c,
        Err(e) => panic!("copy bandwidth: {e}"),
    };
    rows.push(Row {
        bench: "device-to-device copy".into(),
        shape: "1 GiB".into(),
        micros: 2.0 * (1u64 << 30) as f64 / (copy * 1e3),
        gbps: Some(copy),
        note: "read + write counted".into(),
    });
    let mut run = |r: Result<Row, CudaError>, what: &str| match r {
        Ok(row) => rows.push(row),
        Err(e) => failures.push(format!("{what}: {e}")),
    };
    let tinyllama = [
        (5632, 2048),
        (2048, 5632),
        (2048, 2048),
        (256, 2048),
        (32000, 2048),
    ];
    let smollm = [
        (1536, 576),
        (576, 1536),
        (576, 576),
        (192, 576),
        (49152, 576),
    ];
    for (r, c) in tinyllama {
        run(
            matvec_row(&dev, WeightType::Q4_0, r, c, copy, "TinyLlama"),
            "matvec",
        );
    }
    for (r, c) in smollm {
        run(
            matvec_row(&dev, WeightType::Q4_0, r, c, copy, "SmolLM2"),
            "matvec",
        );
    }
    for (r, c) in tinyllama {
        run(planar_row(&dev, r, c, copy, "TinyLlama"), "planar");
    }
    for ty in WeightType::ALL
        .into_iter()
        .filter(|t| *t != WeightType::Q4_0)
    {
        run(
            matvec_row(&dev, ty, 5632, 2048, copy, "TinyLlama"),
            "matvec",
        );
    }
    match glu_rows(&dev, WeightType::Q4_0, 5632, 2048, copy) {
        Ok(r) => r.into_iter().for_each(|row| run(Ok(row), "glu")),
        Err(e) => run(Err(e), "glu"),
    }
    run(tinyllama_graph(&dev, copy), "graph");
    for pos in [100, 1000] {
        run(tinyllama_decode_step(&dev, pos, copy), "decode step");
    }
    for ctx in [512, 4096, 32768] {
        run(attention_decode(&dev, ctx, copy), "attention");
    }
    for ty in [WeightType::Q4_0, WeightType::Q4_K, WeightType::F16] {
        run(
            prefill_matmul(&dev, ty, 5632, 2048, 512, Prefill::F32Tiles),
            "matmul",
        );
    }
    for ty in [WeightType::Q4_0, WeightType::Q8_0] {
        run(
            prefill_matmul(&dev, ty, 5632, 2048, 512, Prefill::Int8Mma),
            "matmul",
        );
    }

    println!();
    println!("| bench | shape | µs | GB/s | note |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        let gbps = r.gbps.map_or("-".to_string(), |g| format!("{g:.0}"));
        println!(
            "| {} | {} | {:.1} | {} | {} |",
            r.bench, r.shape, r.micros, gbps, r.note
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
