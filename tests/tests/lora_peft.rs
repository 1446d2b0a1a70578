//! PEFT LoRA folders read directly (`../shared/oracles/lora/peft/`): the same bits as their
//! llama.cpp GGUF conversions (`gguf/<name>-f32.gguf`; `c-rslora-r4`'s with the corrected
//! alpha), Hugging Face + PEFT's teacher-forced logits within 1e-4, and what is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tinyrt::adapters::LoraAdapter;
use tinyrt::gguf::GgufFile;
use tinyrt::kv_cache::KvType;
use tinyrt_tests::lora::{base, ids, oracle};
use tinyrt_tests::{fixture, TempDir};

const NAMES: [&str; 3] = ["a-qv-r8", "b-all-r16", "c-rslora-r4"];

#[test]
fn peft_folders_give_the_bits_of_their_gguf_conversions() {
    let (m, mut s) = base(KvType::F32);
    let prompt = [5u32, 77, 300, 12, 9, 1000, 42];
    s.set_adapters(&[]).unwrap();
    let plain = s.feed_all(&prompt).unwrap();
    for name in NAMES {
        let peft = m.load_adapter(oracle().join("peft").join(name)).unwrap();
        let gguf = m
            .load_adapter(oracle().join("gguf").join(format!("{name}-f32.gguf")))
            .unwrap();
        assert_eq!(peft.alpha.to_bits(), gguf.alpha.to_bits(), "{name}: alpha");
        assert_eq!(peft.pairs.len(), gguf.pairs.len(), "{name}: pairs");
        for scale in [1.0f32, 0.5] {
            s.set_adapters(&[(Arc::clone(&peft), scale)]).unwrap();
            let from_peft = s.feed_all(&prompt).unwrap();
            s.set_adapters(&[(Arc::clone(&gguf), scale)]).unwrap();
            let from_gguf = s.feed_all(&prompt).unwrap();
            assert_ne!(
                from_gguf, plain,
                "{name}@{scale}: the adapter changes nothing"
            );
            let same = from_peft
                .iter()
                .zip(&from_gguf)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{name}@{scale}: PEFT and GGUF logits differ");
        }
    }
}

#[test]
fn peft_folders_match_hugging_face_teacher_forced() {
    let (m, mut s) = base(KvType::F32);
    let loaded: Vec<(&str, Arc<LoraAdapter>)> = NAMES
        .iter()
        .map(|n| (*n, m.load_adapter(oracle().join("peft").join(n)).unwrap()))
        .collect();
    let text = std::fs::read_to_string(oracle().join("hf.jsonl")).unwrap();
    let vocab = m.config().vocab_size;
    let (mut worst, mut rows) = (0.0f32, 0);
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let set: Vec<(Arc<LoraAdapter>, f32)> = r["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let (_, ad) = loaded
                    .iter()
                    .find(|(n, _)| *n == a[0].as_str().unwrap())
                    .unwrap();
                (Arc::clone(ad), a[1].as_f64().unwrap() as f32)
            })
            .collect();
        s.set_adapters(&set).unwrap();
        let mut seq = ids(&r["prompt_ids"]);
        seq.extend(ids(&r["gen_ids"]));
        let all = s.feed_all(&seq).unwrap();
        for (i, pos) in r["positions"].as_array().unwrap().iter().enumerate() {
            for p in pos["top"].as_array().unwrap() {
                let got = all[i * vocab + p[0].as_u64().unwrap() as usize];
                let d = (got - p[1].as_f64().unwrap() as f32).abs();
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "{} {}: position {i}: |Δ| {d}",
                    r["prompt_file"],
                    r["adapters"]
                );
            }
        }
        rows += 1;
    }
    assert!(rows >= 20, "{rows} rows");
    eprintln!("PEFT folders vs HF + PEFT: {rows} rows, max |Δ| {worst:.3e}");
}

/// A safetensors file of f32 tensors (8-byte header length, JSON header, data).
fn safetensors(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, vals) in tensors {
        let start = data.len();
        for v in *vals {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn config(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let text = std::fs::read_to_string(oracle().join("peft/a-qv-r8/adapter_config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// A folder under `tmp` with `cfg` and `st` (either left out when `None`).
fn folder(tmp: &TempDir, tag: &str, cfg: Option<Vec<u8>>, st: Option<Vec<u8>>) -> PathBuf {
    let dir = tmp.path().join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(c) = cfg {
        std::fs::write(dir.join("adapter_config.json"), c).unwrap();
    }
    if let Some(s) = st {
        std::fs::write(dir.join("adapter_model.safetensors"), s).unwrap();
    }
    dir
}

/// A file's bytes, or `None` to leave it out.
type Files = Option<Vec<u8>>;

fn refused(base: &GgufFile, dir: &Path, what: &str) {
    let e = LoraAdapter::from_peft(dir, base).unwrap_err().to_string();
    assert!(e.contains(what), "{}: {e:?} lacks {what:?}", dir.display());
    assert!(!e.contains('\n'), "{e:?} is not one line");
}

#[test]
fn bad_peft_folders_are_refused() {
    let base = GgufFile::open(oracle().join("llama-lora-tiny-f32.gguf")).unwrap();
    let real = std::fs::read(oracle().join("peft/a-qv-r8/adapter_model.safetensors")).unwrap();
    let tmp = TempDir::new("lora-peft");
    let ok_cfg = || Some(config(|_| {}));
    let set = |k: &'static str, v: Value| Some(config(move |c| c[k] = v));
    let a0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let b0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
    let ones = vec![1.0f32; 64 * 8];

    // The control: a hand-written, valid folder loads.
    let good = folder(
        &tmp,
        "good",
        ok_cfg(),
        Some(safetensors(&[(a0, &[8, 64], &ones), (b0, &[64, 8], &ones)])),
    );
    assert_eq!(LoraAdapter::from_peft(&good, &base).unwrap().pairs.len(), 1);

    let cases: Vec<(&str, Files, Files, &str)> = vec![
        (
            "dora",
            set("use_dora", true.into()),
            Some(real.clone()),
            "DoRA",
        ),
        (
            "loha",
            set("peft_type", "LOHA".into()),
            Some(real.clone()),
            "peft_type",
        ),
        (
            "save",
            set("modules_to_save", serde_json::json!(["lm_head"])),
            Some(real.clone()),
            "modules_to_save",
        ),
        (
            "bias",
            set("bias", "all".into()),
            Some(real.clone()),
            "bias",
        ),
        ("rank", set("r", 4.into()), Some(real.clone()), "rank"),
        ("no-st", ok_cfg(), None, "adapter_model.safetensors"),
        ("no-cfg", None, Some(real.clone()), "adapter_config.json"),
        (
            "garbage",
            ok_cfg(),
            Some(b"not a safetensors file".to_vec()),
            "safetensors",
        ),
        (
            "module",
            ok_cfg(),
            Some(safetensors(&[(
                "base_model.model.model.layers.0.self_attn.x_proj.lora_A.weight",
                &[8, 64],
                &ones,
            )])),
            "unknown module",
        ),
        (
            "embedding",
            ok_cfg(),
            Some(safetensors(&[(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[8, 64],
                &ones,
            )])),
            "embedding",
        ),
        (
            "lonely-a",
            ok_cfg(),
            Some(safetensors(&[(a0, &[8, 64], &ones)])),
            "missing",
        ),
        (
            "shape",
            ok_cfg(),
            Some(safetensors(&[
                (a0, &[8, 32], &ones[..256]),
                (b0, &[64, 8], &ones),
            ])),
            "→",
        ),
        (
            "layer",
            ok_cfg(),
            Some(safetensors(&[
                (
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight",
                    &[8, 64],
                    &ones,
                ),
                (
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight",
                    &[64, 8],
                    &ones,
                ),
            ])),
            "no tensor",
        ),
        (
            "nan",
            ok_cfg(),
            Some(safetensors(&[
                (a0, &[8, 64], &ones),
                (b0, &[64, 8], &[f32::NAN; 64 * 8]),
            ])),
            "NaN",
        ),
    ];
    for (tag, cfg, st, what) in cases {
        refused(&base, &folder(&tmp, tag, cfg, st), what);
    }
    refused(&base, &tmp.path().join("absent"), "adapter_config.json");

    // The real folder on another base: its shapes do not match.
    let other = GgufFile::open(fixture("llama-tiny-q8_0.gguf")).unwrap();
    refused(&other, &oracle().join("peft/a-qv-r8"), "→");
}
