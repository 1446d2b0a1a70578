//! Real files against the Python gguf oracle.

use super::*;

fn fnv1a64_strings(strings: &[String]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for s in strings {
        for &b in s.as_bytes().iter().chain(&[0xFF]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn scalar_json(v: &Value) -> (&'static str, Json) {
    match v {
        Value::U8(x) => ("u8", (*x).into()),
        Value::I8(x) => ("i8", (*x).into()),
        Value::U16(x) => ("u16", (*x).into()),
        Value::I16(x) => ("i16", (*x).into()),
        Value::U32(x) => ("u32", (*x).into()),
        Value::I32(x) => ("i32", (*x).into()),
        Value::U64(x) => ("u64", (*x).into()),
        Value::I64(x) => ("i64", (*x).into()),
        // Python's float(np.float32(x)) is exact, like `as f64`.
        Value::F32(x) => ("f32", f64::from(*x).into()),
        Value::F64(x) => ("f64", (*x).into()),
        Value::Bool(x) => ("bool", (*x).into()),
        Value::String(s) => ("string", s.clone().into()),
        Value::Array(_) => ("array", Json::Null),
    }
}

fn array_elements(a: &Array) -> Vec<Value> {
    match a {
        Array::U8(v) => v.iter().map(|&x| Value::U8(x)).collect(),
        Array::I8(v) => v.iter().map(|&x| Value::I8(x)).collect(),
        Array::U16(v) => v.iter().map(|&x| Value::U16(x)).collect(),
        Array::I16(v) => v.iter().map(|&x| Value::I16(x)).collect(),
        Array::U32(v) => v.iter().map(|&x| Value::U32(x)).collect(),
        Array::I32(v) => v.iter().map(|&x| Value::I32(x)).collect(),
        Array::F32(v) => v.iter().map(|&x| Value::F32(x)).collect(),
        Array::Bool(v) => v.iter().map(|&x| Value::Bool(x)).collect(),
        Array::String(v) => v.iter().map(|x| Value::String(x.clone())).collect(),
        Array::U64(v) => v.iter().map(|&x| Value::U64(x)).collect(),
        Array::I64(v) => v.iter().map(|&x| Value::I64(x)).collect(),
        Array::F64(v) => v.iter().map(|&x| Value::F64(x)).collect(),
    }
}

fn check_against_oracle(name: &str, f: &GgufFile, oracle: &Json) {
    assert_eq!(f.version() as u64, oracle["version"], "{name}");
    assert_eq!(f.file_size(), oracle["file_size"], "{name}");
    assert_eq!(f.alignment(), oracle["alignment"], "{name}");
    assert_eq!(f.data_offset(), oracle["data_offset"], "{name}");

    let want = oracle["metadata"].as_object().unwrap();
    let got: Vec<(&str, &Value)> = f.metadata().iter().collect();
    let want_keys: Vec<&str> = oracle["metadata_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let got_keys: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(got_keys, want_keys, "{name}: keys in file order");
    for (key, value) in got {
        let w = &want[key];
        match value {
            Value::Array(a) => {
                assert_eq!(w["type"], "array", "{name} {key}");
                assert_eq!(a.len() as u64, w["len"], "{name} {key}");
                let elems = array_elements(a);
                let (elem_type, _) = elems
                    .first()
                    .map(scalar_json)
                    .unwrap_or((a.type_name().trim_start_matches("array of "), Json::Null));
                assert_eq!(elem_type, w["element_type"], "{name} {key}");
                let first: Vec<Json> = elems.iter().take(3).map(|v| scalar_json(v).1).collect();
                assert_eq!(Json::Array(first), w["first"], "{name} {key}");
                let last = elems.last().map_or(Json::Null, |v| scalar_json(v).1);
                assert_eq!(last, w["last"], "{name} {key}");
                if let Array::String(s) = a {
                    assert_eq!(
                        fnv1a64_strings(s).to_string(),
                        w["checksum"],
                        "{name} {key}"
                    );
                } else {
                    // numpy sums pairwise; compare with a relative tolerance.
                    let sum: f64 = elems
                        .iter()
                        .map(|v| scalar_json(v).1.as_f64().unwrap_or(0.0))
                        .sum();
                    let want_sum = w["sum"].as_f64().unwrap();
                    assert!(
                        (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
                        "{name} {key}: sum {sum} vs {want_sum}"
                    );
                }
            }
            v => {
                let (ty, json) = scalar_json(v);
                assert_eq!(ty, w["type"], "{name} {key}");
                assert_eq!(json, w["value"], "{name} {key}");
            }
        }
    }

    let want_tensors = oracle["tensors"].as_array().unwrap();
    assert_eq!(f.tensor_infos().len(), want_tensors.len(), "{name}");
    for (t, w) in f.tensor_infos().iter().zip(want_tensors) {
        assert_eq!(t.name, w["name"].as_str().unwrap(), "{name}");
        assert_eq!(
            t.ty.name(),
            w["type"].as_str().unwrap(),
            "{name} {}",
            t.name
        );
        assert_eq!(Json::from(t.shape.clone()), w["shape"], "{name} {}", t.name);
        assert_eq!(t.offset, w["offset"], "{name} {}", t.name);
        assert_eq!(t.size, w["size"], "{name} {}", t.name);
        let view = f.tensor(&t.name).unwrap();
        assert_eq!(view.data.len() as u64, t.size);
        assert_eq!(view.n_elements(), t.n_elements());
    }
    let params: u64 = f.tensor_infos().iter().map(|t| t.n_elements()).sum();
    assert_eq!(params, oracle["parameter_count"], "{name}");
}

#[test]
fn fixtures_match_the_oracle() {
    let oracle = gguf_oracle();
    let all = fixtures();
    assert!(all.len() >= 16, "fixtures missing: {all:?}");
    for path in all {
        let name = path.file_name().unwrap().to_str().unwrap();
        let f = GgufFile::open(&path).unwrap();
        check_against_oracle(name, &f, &oracle[name]);
    }
}

#[test]
fn real_models_match_the_oracle() {
    let oracle = gguf_oracle();
    for name in REAL_MODELS {
        let Some(path) = model(name) else { continue };
        let (f, peak) = peak_allocation(|| GgufFile::open(&path).unwrap());
        check_against_oracle(name, &f, &oracle[name]);
        // The parsed header costs a small multiple of its encoded size (mmap is not counted).
        assert!(
            peak <= allocation_budget(f.data_offset() as usize),
            "{name}: {peak} bytes for a {}-byte header",
            f.data_offset()
        );
        eprintln!(
            "{name}: header {} bytes, parse allocated {peak} bytes at peak",
            f.data_offset()
        );
    }
}

#[test]
fn real_model_hyperparameters() {
    // Values from tests/data/gguf_oracle.json (Python gguf 0.19.0), read through the typed API.
    if let Some(path) = model(tinyrt_tests::SMOLLM2) {
        let f = GgufFile::open(path).unwrap();
        let md = f.metadata();
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(md.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(md.get_u32("llama.attention.head_count").unwrap(), 9);
        assert_eq!(md.get_u32("llama.attention.head_count_kv").unwrap(), 3);
        assert_eq!(md.get_u32("llama.embedding_length").unwrap(), 576);
        assert_eq!(md.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
        assert_eq!(
            md.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
            49152
        );
        assert_eq!(md.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
        assert_eq!(f.tensor_infos().len(), 272);
        let embd = f.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.ty, GgmlType::Q8_0);
        assert_eq!((embd.row_len(), embd.n_rows()), (576, 49152));
    }
    if let Some(path) = model(tinyrt_tests::GEMMA3) {
        let f = GgufFile::open(path).unwrap();
        let md = f.metadata();
        assert_eq!(f.architecture().unwrap(), "gemma3");
        assert_eq!(md.get_u32("gemma3.block_count").unwrap(), 18);
        assert_eq!(md.get_u32("gemma3.attention.key_length").unwrap(), 256);
        assert_eq!(
            md.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
            262144
        );
        assert_eq!(md.opt_u32("gemma3.rope.dimension_count").unwrap(), None);
    }
}
