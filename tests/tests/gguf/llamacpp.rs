//! llama.cpp reads what the writer writes.

use super::*;

/// Builds a new llama-architecture model with the writer: the tokenizer and hyperparameters of
/// the llama-tiny fixture, fresh deterministic F32 weights (output.weight kept as Q8_0 blocks),
/// alignment 64 and extra keys of unusual types; then runs llama.cpp's `llama-simple` on it.
#[test]
fn llama_cpp_loads_a_model_written_by_the_writer() {
    let Some(llama_simple) = tinyrt_tests::reference_tool("llama-simple") else {
        return;
    };
    let src = GgufFile::open(fixture("llama-tiny-q8_0.gguf")).unwrap();
    let mut w = GgufWriter::new();
    w.set_all(src.metadata())
        .set("general.name", Value::String("tinyrt-writer-test".into()))
        .set("general.file_type", Value::U32(0))
        .set("tinyrt.test.f64", Value::F64(0.5))
        .set("tinyrt.test.u16s", Value::Array(Array::U16(vec![1, 2, 3])))
        .set("tinyrt.test.bools", Value::Array(Array::Bool(vec![true])))
        .alignment(64);
    let mut rng = tinyrt::kernels::rng::SplitMix64::new(0x853C_49E6_748F_EA9B);
    for t in src.tensors() {
        let keep = t.name == "output.weight" || t.name == "rope_freqs.weight";
        if keep {
            w.add_tensor(t.name, t.ty, t.shape, t.data).unwrap();
            continue;
        }
        let n = t.n_elements() as usize;
        let data: Vec<u8> = (0..n)
            .flat_map(|_| {
                let v = if t.shape.len() == 1 {
                    1.0 // norm weights
                } else {
                    rng.unit_f32() * 0.05
                };
                v.to_le_bytes()
            })
            .collect();
        w.add_tensor(t.name, GgmlType::F32, t.shape, data).unwrap();
    }
    let dir = tinyrt_tests::TempDir::new("gguf-llamacpp");
    let path = dir.path().join("written.gguf");
    w.write_to_path(&path).unwrap();
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(ours.alignment(), 64);

    let out = std::process::Command::new(llama_simple)
        .args(["-m", path.to_str().unwrap(), "-n", "4", "Hello world"])
        .output()
        .expect("run llama-simple");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "llama-simple failed ({:?}): {}",
        out.status,
        stderr.lines().rev().take(8).collect::<Vec<_>>().join("\n")
    );
    // llama.cpp's loader reports what it read: our key count and tensor count.
    let expected_kv = format!(
        "loaded meta data with {} key-value pairs and {} tensors",
        ours.metadata().len(),
        ours.tensor_infos().len()
    );
    assert!(
        stderr.contains(&expected_kv),
        "llama.cpp log lacks {expected_kv:?}"
    );
    assert!(!out.stdout.is_empty());
    eprintln!(
        "llama-simple: {expected_kv}; output {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}
