//! The CUDA backend's encoder ops (`attention_packed`, `pool`, `gelu_erf`, non-causal
//! `attention`) against the CPU backend's, through the `Backend` trait. Needs a GPU: skipped
//! with a notice without one, unless `TINYRT_REQUIRE_GPU=1`.

use std::sync::Arc;

use super::*;
use crate::backend::cpu::{CpuBackend, CpuWeights};
use crate::backend::WeightTable;
use crate::gguf::{GgmlType, GgufFile, GgufWriter};
use crate::kernels::cpu::pool::ThreadPool;
use crate::kernels::cpu::Isa;
use crate::kernels::rng::SplitMix64;
use crate::kv_cache::KvType;

fn device() -> Option<Arc<tinyrt_cuda::CudaDevice>> {
    match tinyrt_cuda::CudaDevice::new(0) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            let required = std::env::var("TINYRT_REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(!required, "TINYRT_REQUIRE_GPU=1 but no GPU: {e}");
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// Random F32 tables `q`, `k`, `v` of `rows` rows (`qw`, `kw`, `kw` wide), so that embedding
/// the ids `0..rows` fills a backend's buffers with them.
fn tables(rows: usize, qw: usize, kw: usize, seed: u64) -> Arc<WeightTable> {
    let mut rng = SplitMix64::new(seed);
    let mut w = GgufWriter::new();
    for (name, width, scale) in [("q", qw, 2.0f32), ("k", kw, 2.0), ("v", kw, 1.0)] {
        let data: Vec<u8> = (0..rows * width)
            .flat_map(|_| (rng.unit_f32() * scale).to_le_bytes())
            .collect();
        w.add_tensor(name, GgmlType::F32, &[width as u64, rows as u64], data)
            .unwrap();
    }
    let file = Arc::new(GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap());
    let mut table = WeightTable::new(file);
    for (name, width) in [("q", qw), ("k", kw), ("v", kw)] {
        table.require(name, &[width, rows]).unwrap();
    }
    Arc::new(table)
}

/// What one backend computes: the attention (erf GELU applied) and each pooling.
fn run(
    b: &mut dyn Backend,
    seqs: &[u32],
    p: &AttnParams,
    via_attention: bool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let rows = *seqs.last().unwrap() as usize;
    let (qw, kw) = (p.n_head * p.head_dim_k, p.n_head_kv * p.head_dim_k);
    let n_seq = seqs.len() - 1;
    let (q, k, v) = (b.alloc(rows, qw), b.alloc(rows, kw), b.alloc(rows, kw));
    let (out, pooled) = (b.alloc(rows, qw), b.alloc(n_seq, qw));
    let ids: Vec<u32> = (0..rows as u32).collect();
    for (i, buf) in [q, k, v].into_iter().enumerate() {
        b.embed(WeightId(i as u32), &ids, buf);
    }
    if via_attention {
        b.alloc_kv_cache(&KvCacheSpec {
            n_layer: 1,
            n_ctx: rows,
            k_width: kw,
            v_width: kw,
            ty: KvType::F32,
        });
        b.attention(0, q, k, v, 0, rows, p, out);
    } else {
        b.attention_packed(q, k, v, seqs, p, out);
    }
    b.gelu_erf(out, rows);
    let mut att = vec![0.0f32; rows * qw];
    b.read(out, 0, &mut att);
    let mut pools = Vec::new();
    for kind in [PoolKind::Mean, PoolKind::First, PoolKind::Last] {
        b.pool(out, seqs, kind, pooled);
        let mut host = vec![0.0f32; n_seq * qw];
        b.read(pooled, 0, &mut host);
        pools.push(host);
    }
    assert_eq!(b.take_error(), None, "{}", b.name());
    (att, pools)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: CUDA {g}, CPU {w}"
        );
    }
}

#[test]
fn encoder_ops_match_the_cpu_backend() {
    let gpu = device();
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    // (sequence boundaries, n_head, n_kv, head_dim): one single-row sequence (its ops are
    // single-token ones, which the backend records), a ragged batch with an empty sequence and
    // one of over 256 rows, GQA with a head size that is not a multiple of 32.
    let cases: &[(&[u32], usize, usize, usize)] = &[
        (&[0, 1], 2, 2, 32),
        (&[0, 5, 5, 17, 300, 301], 4, 2, 40),
        (&[0, 128], 12, 12, 64),
    ];
    for (i, &(seqs, n_head, n_kv, hd)) in cases.iter().enumerate() {
        let rows = *seqs.last().unwrap() as usize;
        let table = tables(rows, n_head * hd, n_kv * hd, 40 + i as u64);
        let p = AttnParams {
            n_head,
            n_head_kv: n_kv,
            head_dim_k: hd,
            head_dim_v: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window: None,
            causal: false,
        };
        // The CPU side first (it also runs without a GPU).
        let cpu_w = CpuWeights::new(Arc::clone(&table), Isa::detect()).unwrap();
        let mut cpu = CpuBackend::new(cpu_w, Arc::clone(&pool));
        let (want, want_pools) = run(&mut cpu, seqs, &p, false);
        let Some(dev) = gpu.as_ref() else { continue };
        let cuda_w = CudaWeights::new(Arc::clone(dev), Arc::clone(&table), None).unwrap();
        let mut cuda = CudaBackend::new(cuda_w);
        let what = format!("seqs {seqs:?} heads {n_head}/{n_kv} hd {hd}");
        let (got, got_pools) = run(&mut cuda, seqs, &p, false);
        assert_close(&format!("{what}: attention + gelu_erf"), &got, &want, 5e-5);
        for (kind, (g, w)) in ["mean", "first", "last"]
            .iter()
            .zip(got_pools.iter().zip(&want_pools))
        {
            assert_close(&format!("{what}: {kind} pooling"), g, w, 5e-5);
        }
        // One sequence through the non-causal `attention` (what an encoder called before the
        // packed op): the same rows.
        if seqs.len() == 2 {
            let (got, _) = run(
                &mut CudaBackend::new(
                    CudaWeights::new(Arc::clone(dev), Arc::clone(&table), None).unwrap(),
                ),
                seqs,
                &p,
                true,
            );
            assert_close(&format!("{what}: non-causal attention"), &got, &want, 5e-5);
        }
    }
}

#[test]
fn bad_sequence_boundaries_are_an_error_not_a_panic() {
    let Some(dev) = device() else { return };
    let table = tables(4, 64, 64, 7);
    let mut cuda = CudaBackend::new(CudaWeights::new(dev, table, None).unwrap());
    let (x, out) = (cuda.alloc(4, 64), cuda.alloc(2, 64));
    for seqs in [&[1u32, 4][..], &[0, 3, 2]] {
        cuda.pool(x, seqs, PoolKind::Mean, out);
        assert!(cuda.take_error().is_some(), "{seqs:?} accepted");
    }
}
