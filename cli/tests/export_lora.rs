//! `tinyrt export-lora` on the LoRA oracle's tiny bases: the merged model's logits equal the
//! base with the run-time adapters (f32 base, one adapter; f16 base, two adapters within f16
//! rounding), untouched tensors keep their bytes, bad input exits 2.

use std::process::Command;

use tinyrt::kv_cache::KvType;
use tinyrt::{LoadOptions, Model, Session, SessionOptions};
use tinyrt_tests::workspace_root;

fn tinyrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .unwrap()
}

/// An f32 cache: an f16 one rounds K and V, which differ in their last bits between the two
/// ways of computing them, and that rounding would dominate the comparison.
fn opts() -> SessionOptions {
    SessionOptions {
        kv_type: KvType::F32,
        ..SessionOptions::default()
    }
}

#[test]
fn merged_f32_model_equals_run_time_adapter() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let ad = dir.join("gguf/a-qv-r8-f32.gguf");
    let out = std::env::temp_dir().join(format!("tinyrt-export-{}.gguf", std::process::id()));
    let o = tinyrt(&[
        "export-lora",
        base.to_str().unwrap(),
        out.to_str().unwrap(),
        "--lora",
        ad.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let prompt = [5u32, 77, 300, 1024, 9, 18, 640, 2000];
    let m = Model::load(&base, LoadOptions::default()).unwrap();
    let mut s = Session::new(&m, opts()).unwrap();
    s.set_adapters(&[(m.load_adapter(&ad).unwrap(), 1.0)])
        .unwrap();
    let want = s.feed_all(&prompt).unwrap();
    let merged = Model::load(&out, LoadOptions::default()).unwrap();
    let mut s2 = Session::new(&merged, opts()).unwrap();
    let got = s2.feed_all(&prompt).unwrap();
    let d = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("merged vs run-time adapter: max |Δ| {d:.3e}");
    assert!(d <= 1e-4, "max |Δ| {d}");
    // Tensors the adapter does not touch keep the base's bytes.
    for t in m.file().tensor_infos() {
        if !t.name.contains("attn_q") && !t.name.contains("attn_v") {
            let a = m.file().tensor(&t.name).unwrap().data;
            let b = merged.file().tensor(&t.name).unwrap().data;
            assert!(a == b, "{} changed", t.name);
        }
    }
    let _ = std::fs::remove_file(&out);
}

#[test]
fn bad_input_exits_2() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let b = base.to_str().unwrap();
    let ad = dir.join("gguf/a-qv-r8-f32.gguf");
    let a = ad.to_str().unwrap();
    for args in [
        vec!["export-lora", b, "/tmp/tinyrt-export-none.gguf"],
        vec!["export-lora", b, "/tmp/tinyrt-export-bad.gguf", "--lora", b],
        vec!["export-lora", b, b, "--lora", a],
        vec!["export-lora", b, "/nonexistent-dir/out.gguf", "--lora", a],
    ] {
        let o = tinyrt(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim().lines().count(),
            1,
            "{args:?}"
        );
    }
}

/// The f16 base with two adapters at once (`--lora A --lora-scaled B 0.5`): the merged f16
/// model's logits are those of the base with both run-time adapters, within the rounding of the
/// merged weights back to f16.
#[test]
fn merged_f16_model_with_two_adapters_equals_run_time_adapters() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f16.gguf");
    let a = dir.join("gguf/a-qv-r8-f16.gguf");
    let b = dir.join("gguf/b-all-r16-f16.gguf");
    let out = std::env::temp_dir().join(format!("tinyrt-export16-{}.gguf", std::process::id()));
    let o = tinyrt(&[
        "export-lora",
        base.to_str().unwrap(),
        out.to_str().unwrap(),
        "--lora",
        a.to_str().unwrap(),
        "--lora-scaled",
        b.to_str().unwrap(),
        "0.5",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let prompt = [5u32, 77, 300, 1024, 9, 18, 640, 2000];
    let m = Model::load(&base, LoadOptions::default()).unwrap();
    let mut s = Session::new(&m, opts()).unwrap();
    s.set_adapters(&[
        (m.load_adapter(&a).unwrap(), 1.0),
        (m.load_adapter(&b).unwrap(), 0.5),
    ])
    .unwrap();
    let want = s.feed_all(&prompt).unwrap();
    let plain = Session::new(&m, opts()).unwrap().feed_all(&prompt).unwrap();
    let merged = Model::load(&out, LoadOptions::default()).unwrap();
    let got = Session::new(&merged, opts())
        .unwrap()
        .feed_all(&prompt)
        .unwrap();
    let max = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let (d, moved) = (max(&want, &got), max(&want, &plain));
    eprintln!("merged f16 vs run-time adapters: max |Δ| {d:.3e} (the adapters move logits by {moved:.3e})");
    // Measured: 4.7e-3 (the adapters themselves move the logits by up to 6.3).
    assert!(d <= 6e-3, "max |Δ| {d}");
    assert!(moved > 100.0 * d, "the adapters change little: {moved}");
    let _ = std::fs::remove_file(&out);
}
