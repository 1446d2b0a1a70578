//! Hugging Face folders → GGUF (`tinyrt::hf`) against llama.cpp's own conversions of the
//! oracle's folders (`../shared/oracles/hf/`, its README): for every folder and f32 / f16 /
//! bf16, the same metadata keys in the same order with the same types and values, and the same
//! tensors in the same order with the same type, `ne`, size and bytes (sha256). `open` gives
//! the stored-type conversion with its bf16 matrices in place in the mapped shards, and every
//! malformed folder of the README's list gives its own error with nothing written.

use std::path::Path;

use serde_json::Value as Json;
use tinyrt::gguf::{Array, GgmlType, GgufFile, Value};
use tinyrt::hf::{self, HfError, OutType};
use tinyrt::tools::quantize::Target;
use tinyrt_tests::hf_oracle::{self, FOLDERS};
use tinyrt_tests::{sha256_hex, TempDir};

/// Outtypes of the manifests.
const OUTTYPES: [(&str, Target); 3] = [
    ("f32", Target::F32),
    ("f16", Target::F16),
    ("bf16", Target::Bf16),
];

/// Keys compared: all of them, the `tokenizer.*` arrays included.
fn compared(_key: &str) -> bool {
    true
}

fn convert(dir: &Path, out: &Path, outtype: OutType) -> Result<hf::ConvertReport, HfError> {
    hf::convert(dir, out, outtype, &mut |_, _, _| {})
}

#[test]
fn sha256_matches_the_standard_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        sha256_hex(&long),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// Differences between a manifest value and a metadata value (floats as f32 bits, arrays
/// element by element).
fn value_diff(key: &str, want: &Json, got: &Value) -> Option<String> {
    let ty = want["type"].as_str().unwrap();
    let v = &want["value"];
    let same = match (ty, got) {
        ("STRING", Value::String(s)) => v.as_str() == Some(s.as_str()),
        ("UINT32", Value::U32(x)) => v.as_u64() == Some(u64::from(*x)),
        ("INT32", Value::I32(x)) => v.as_i64() == Some(i64::from(*x)),
        ("BOOL", Value::Bool(b)) => v.as_bool() == Some(*b),
        ("FLOAT32", Value::F32(x)) => (v.as_f64().unwrap() as f32).to_bits() == x.to_bits(),
        ("ARRAY[STRING]", Value::Array(Array::String(a))) => {
            let w: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            w == a.iter().map(String::as_str).collect::<Vec<_>>()
        }
        ("ARRAY[INT32]", Value::Array(Array::I32(a))) => {
            let w: Vec<i64> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            w == a.iter().map(|&x| i64::from(x)).collect::<Vec<_>>()
        }
        ("ARRAY[FLOAT32]", Value::Array(Array::F32(a))) => {
            let w: Vec<u32> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| (x.as_f64().unwrap() as f32).to_bits())
                .collect();
            w == a.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        }
        _ => false,
    };
    (!same).then(|| format!("{key}: want {ty} {v}, got {got:?}"))
}

/// Every difference between the converted file and the manifest for `outtype`.
fn differences(file: &GgufFile, manifest: &Json, order: &[String], outtype: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let common = manifest["metadata"].as_object().unwrap();
    let extra = manifest["outtypes"][outtype]["metadata"]
        .as_object()
        .unwrap();
    // Order: the manifest's shared keys, in file order; the per-outtype keys
    // (general.file_type) are checked by value.
    let want_keys: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|k| compared(k))
        .collect();
    let got_keys: Vec<&str> = file
        .metadata()
        .iter()
        .map(|(k, _)| k)
        .filter(|k| compared(k) && !extra.contains_key(*k))
        .collect();
    if want_keys != got_keys {
        diffs.push(format!("keys: want {want_keys:?}, got {got_keys:?}"));
    }
    for (key, want) in common.iter().chain(extra) {
        if !compared(key) {
            continue;
        }
        match file.metadata().get(key) {
            None => diffs.push(format!("{key}: missing")),
            Some(got) => diffs.extend(value_diff(key, want, got)),
        }
    }
    let want_tensors = manifest["outtypes"][outtype]["tensors"].as_array().unwrap();
    if want_tensors.len() != file.tensor_infos().len() {
        diffs.push(format!(
            "{} tensors, want {}",
            file.tensor_infos().len(),
            want_tensors.len()
        ));
    }
    for (want, got) in want_tensors.iter().zip(file.tensors()) {
        let name = want["name"].as_str().unwrap();
        let ne: Vec<u64> = want["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let fields = [
            (name == got.name, "name"),
            (want["type"].as_str() == Some(got.ty.name()), "type"),
            (ne == got.shape, "ne"),
            (
                want["n_bytes"].as_u64() == Some(got.data.len() as u64),
                "n_bytes",
            ),
            (
                want["sha256"].as_str() == Some(sha256_hex(got.data).as_str()),
                "sha256",
            ),
        ];
        for (ok, what) in fields {
            if !ok {
                diffs.push(format!(
                    "tensor {name}: {what} differs (got {} {} {:?})",
                    got.name, got.ty, got.shape
                ));
            }
        }
    }
    diffs
}

#[test]
fn conversions_equal_llama_cpps() {
    let tmp = TempDir::new("hf-convert");
    let mut failures = Vec::new();
    for folder in FOLDERS {
        let manifest = hf_oracle::manifest(folder);
        let order = hf_oracle::metadata_key_order(folder);
        assert_eq!(order.len(), manifest["metadata"].as_object().unwrap().len());
        for (outtype, target) in OUTTYPES {
            let out = tmp.path().join(format!("{folder}-{outtype}.gguf"));
            let report = convert(&hf_oracle::folder(folder), &out, OutType::Target(target))
                .unwrap_or_else(|e| panic!("{folder} {outtype}: {e}"));
            assert_eq!(report.target, target);
            let file = GgufFile::open(&out).unwrap();
            for d in differences(&file, &manifest, &order, outtype) {
                failures.push(format!("{folder} {outtype}: {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn open_is_the_stored_type_conversion_with_matrices_in_place() {
    let tmp = TempDir::new("hf-open");
    for folder in FOLDERS {
        let dir = hf_oracle::folder(folder);
        let model = hf::open(&dir).unwrap();
        assert!(model.is_from_parts());
        let out = tmp.path().join(format!("{folder}.gguf"));
        // The folders are bf16: `auto` is bf16, the stored type.
        let report = convert(&dir, &out, OutType::Auto).unwrap();
        assert_eq!(report.target, Target::Bf16, "{folder}");
        let file = GgufFile::open(&out).unwrap();
        let got: Vec<_> = model.metadata().iter().collect();
        let want: Vec<_> = file.metadata().iter().collect();
        assert_eq!(got, want, "{folder}: metadata");
        assert_eq!(model.tensor_infos().len(), file.tensor_infos().len());
        let llama_family = matches!(folder, "tiny-llama" | "tiny-mistral" | "tiny-llama3");
        let (mut in_place, mut permuted) = (0, 0);
        for (a, b) in model.tensors().zip(file.tensors()) {
            assert_eq!((a.name, a.ty, a.shape), (b.name, b.ty, b.shape), "{folder}");
            assert!(a.data == b.data, "{folder}: {} bytes differ", a.name);
            let info = model.tensor_info(a.name).unwrap();
            let qk = a.name.ends_with("attn_q.weight") || a.name.ends_with("attn_k.weight");
            if a.ty == GgmlType::BF16 && !(qk && llama_family) {
                assert!(
                    model.is_mapped(info),
                    "{folder}: {} is not in place",
                    a.name
                );
                in_place += 1;
            } else {
                // Converted: F32 norms and biases, permuted Q/K rows, rope_freqs.
                assert!(
                    !model.is_mapped(info),
                    "{folder}: {} should be converted",
                    a.name
                );
                permuted += usize::from(qk);
            }
        }
        assert!(in_place >= 6, "{folder}: only {in_place} tensors in place");
        if llama_family {
            assert_eq!(permuted, 4, "{folder}: Q and K of 2 layers are permuted");
        }
    }
}

#[test]
fn quantized_outtypes_go_through_the_quantizer() {
    let tmp = TempDir::new("hf-q8");
    let out = tmp.path().join("q8.gguf");
    let report = convert(
        &hf_oracle::folder("tiny-llama3"),
        &out,
        OutType::parse("q8_0").unwrap(),
    )
    .unwrap();
    assert_eq!(report.target, Target::Q8_0);
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.metadata().get_u32("general.file_type").unwrap(), 7);
    let q = file.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!(q.ty, GgmlType::Q8_0);
    assert_eq!(
        file.tensor("blk.0.attn_norm.weight").unwrap().ty,
        GgmlType::F32
    );
    // The matrix dequantizes to the bf16 conversion's values within Q8_0's error.
    let bf16 = hf::open(&hf_oracle::folder("tiny-llama3")).unwrap();
    let want: Vec<f32> = bf16
        .tensor("blk.0.ffn_up.weight")
        .unwrap()
        .as_bf16()
        .unwrap()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    let mut got = vec![0f32; want.len()];
    tinyrt::kernels::quant::dequantize(GgmlType::Q8_0, q.data, &mut got).unwrap();
    let max = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= max / 127.0, "{g} vs {w}");
    }
}

/// Whether `e` is the error the break `what` must give.
fn is_expected(what: &str, e: &HfError) -> bool {
    match what {
        "no config.json" => matches!(e, HfError::NoConfig { .. }),
        "a shard missing" => matches!(e, HfError::MissingShard { .. }),
        "header length past the end" => matches!(e, HfError::HeaderPastEnd { .. }),
        "dtype I64" => matches!(e, HfError::UnsupportedDtype { dtype, .. } if dtype == "I64"),
        "shape not the config's" => matches!(e, HfError::ShapeMismatch { .. }),
        "a tensor missing" => {
            matches!(e, HfError::MissingTensor { name, .. } if name == "blk.1.ffn_down.weight")
        }
        "unknown architecture" => {
            matches!(e, HfError::UnknownArchitecture { .. })
                && e.to_string().contains("LlamaForCausalLM")
        }
        "config.json cut in half" => matches!(e, HfError::Json { .. }),
        "tokenizer.json cut in half" => {
            matches!(e, HfError::Tokenizer(_)) && e.to_string().contains("tokenizer.json")
        }
        "a layer count past the tensors" => {
            matches!(e, HfError::MissingTensor { name, .. } if name.starts_with("blk.2."))
        }
        "a shard outside the folder" => {
            matches!(e, HfError::Config { .. })
                && e.to_string().contains("not a file of the folder")
        }
        _ => false,
    }
}

#[test]
fn malformed_folders_give_their_error_and_write_nothing() {
    for (what, folder, break_it) in hf_oracle::breaks() {
        let (tmp, dir) = hf_oracle::copy(folder, "hf-bad");
        break_it(&dir);
        let e = hf::open(&dir).map(|_| ()).unwrap_err();
        assert!(is_expected(what, &e), "{what}: {e:?}");
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
        let out_dir = tmp.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("model.gguf");
        let e = convert(&dir, &out, OutType::Auto).unwrap_err();
        assert!(is_expected(what, &e), "{what}: convert: {e:?}");
        assert!(e.is_bad_input(), "{what}");
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "{what}: {left:?} left behind");
    }
}

#[test]
fn unknown_outtypes_are_refused() {
    assert!(OutType::parse("q3_x").is_err());
    assert_eq!(OutType::parse("AUTO").unwrap(), OutType::Auto);
    assert_eq!(
        OutType::parse("bf16").unwrap(),
        OutType::Target(Target::Bf16)
    );
}

/// A tensor's data in a safetensors file, read without `tinyrt::hf`.
fn safetensors_bytes(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let o = header[name]["data_offsets"].as_array().unwrap();
    let (a, b) = (
        o[0].as_u64().unwrap() as usize,
        o[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + a..8 + n + b].to_vec()
}

/// The encoder classifiers of `../shared/oracles/cls/` (f16 checkpoints) against llama.cpp's
/// f32 conversions (`manifest-*-f32.json`): the keys before the tokenizer's, in order, with
/// their values, and every tensor; BERT's pooler, which the converter drops, is kept as
/// `cls.weight` / `cls.bias` (the names tinyrt reads it under).
#[test]
fn encoder_conversions_equal_llama_cpps() {
    let shared = tinyrt_tests::workspace_root().join("../shared/oracles");
    let tmp = TempDir::new("hf-encoders");
    let mut cases: Vec<(&str, std::path::PathBuf, std::path::PathBuf)> =
        ["bert-tiny-cls", "distilbert-tiny-cls"]
            .into_iter()
            .map(|f| {
                let cls = shared.join("cls");
                (f, cls.join(f), cls.join(format!("manifest-{f}-f32.json")))
            })
            .collect();
    // The real all-MiniLM-L6-v2 folder (fetched by scripts/fetch-models.sh) against
    // llama.cpp's conversion of it, every key and array in full.
    if let Some(dir) = tinyrt_tests::model("all-MiniLM-L6-v2") {
        cases.push((
            "all-MiniLM-L6-v2",
            dir,
            shared.join("minilm/manifest-f32.json"),
        ));
    }
    for (folder, dir, manifest_path) in cases {
        let text = std::fs::read_to_string(&manifest_path).unwrap();
        let manifest: Json = serde_json::from_str(&text).unwrap();
        let out = tmp.path().join(format!("{folder}.gguf"));
        convert(&dir, &out, OutType::Target(Target::F32)).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let mut diffs = Vec::new();
        let want: Vec<&Json> = manifest["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| compared(m["key"].as_str().unwrap()))
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|m| m["key"].as_str().unwrap()).collect();
        let got_keys: Vec<&str> = file
            .metadata()
            .iter()
            .map(|(k, _)| k)
            .filter(|k| compared(k))
            .collect();
        assert_eq!(want_keys, got_keys, "{folder}: keys");
        for m in want {
            let key = m["key"].as_str().unwrap();
            let ty = m["type"]
                .as_str()
                .unwrap()
                .replace("ARRAY:STRING", "ARRAY[STRING]")
                .replace("ARRAY:INT32", "ARRAY[INT32]")
                .replace("ARRAY:FLOAT32", "ARRAY[FLOAT32]");
            let got = file.metadata().get(key).unwrap();
            if let Some(hash) = m["sha256"].as_str() {
                // The vocabulary arrays: their length and the sha256 of their compact JSON
                // (Python's `json.dumps(v, ensure_ascii=False, separators=(",", ":"))`).
                let json = match got {
                    Value::Array(Array::String(a)) => serde_json::to_string(a).unwrap(),
                    Value::Array(Array::I32(a)) => serde_json::to_string(a).unwrap(),
                    other => panic!("{folder}: {key} is {other:?}, not an array"),
                };
                let len = match got {
                    Value::Array(a) => a.len() as u64,
                    _ => unreachable!(),
                };
                if m["len"].as_u64() != Some(len) || sha256_hex(json.as_bytes()) != hash {
                    diffs.push(format!("{folder}: {key} differs (length {len})"));
                }
                continue;
            }
            let entry = serde_json::json!({"type": ty, "value": m["value"]});
            diffs.extend(value_diff(key, &entry, got));
        }
        let bert = folder == "bert-tiny-cls";
        let ours: Vec<_> = file
            .tensors()
            .filter(|t| !(bert && t.name.starts_with("cls.") && !t.name.starts_with("cls.output")))
            .collect();
        let want = manifest["tensors"].as_array().unwrap();
        assert_eq!(ours.len(), want.len(), "{folder}: tensor count");
        for (w, t) in want.iter().zip(&ours) {
            let ne: Vec<u64> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let same = w["name"].as_str() == Some(t.name)
                && w["type"].as_str() == Some(t.ty.name())
                && ne == t.shape
                && w["sha256"].as_str() == Some(sha256_hex(t.data).as_str());
            if !same {
                diffs.push(format!(
                    "{folder}: tensor {} differs from {}",
                    t.name, w["name"]
                ));
            }
            // Offsets in the data section (the writer's padding): the same where no extra
            // tensor comes first.
            let info = file.tensor_info(t.name).unwrap();
            if !bert && w["offset"].as_u64() != Some(info.offset - file.data_offset()) {
                diffs.push(format!("{folder}: tensor {} offset differs", t.name));
            }
        }
        if bert {
            let st = dir.join("model.safetensors");
            for (ours, theirs) in [
                ("cls.weight", "bert.pooler.dense.weight"),
                ("cls.bias", "bert.pooler.dense.bias"),
            ] {
                let f16 = safetensors_bytes(&st, theirs);
                let mut want = vec![0f32; f16.len() / 2];
                tinyrt::kernels::quant::dequantize(GgmlType::F16, &f16, &mut want).unwrap();
                let t = file.tensor(ours).unwrap();
                assert_eq!(t.ty, GgmlType::F32);
                assert_eq!(t.as_f32().unwrap(), &want[..], "{folder}: {ours}");
            }
        }
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

/// `open`'s in-place matrices are views of the mapped shard: their data pointers are as far
/// apart as the tensors are in the file, and their bytes are the file's.
#[test]
fn in_place_matrices_are_views_of_the_shard() {
    let dir = hf_oracle::folder("tiny-qwen2");
    let model = hf::open(&dir).unwrap();
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = |name: &str| 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let pairs = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
    ];
    let views: Vec<_> = pairs
        .iter()
        .map(|(ours, _)| model.tensor(ours).unwrap())
        .collect();
    for ((_, theirs), t) in pairs.iter().zip(&views) {
        let s = start(theirs);
        assert_eq!(t.data, &bytes[s..s + t.data.len()], "{theirs}");
    }
    let apart = views[1].data.as_ptr() as usize - views[0].data.as_ptr() as usize;
    assert_eq!(apart, start(pairs[1].1) - start(pairs[0].1));
}
