//! `tinyrt convert-lora PEFT_DIR BASE OUT`: the oracle's PEFT folders written as GGUF adapters
//! hold exactly the tensors of llama.cpp's own conversions (`gguf/<name>-f32.gguf`, names,
//! shapes and bytes; `c-rslora-r4`'s with the corrected alpha), read back as adapters, and bad
//! input exits 2 with one line.

use std::process::Command;

use tinyrt::adapters::LoraAdapter;
use tinyrt::gguf::GgufFile;
use tinyrt_tests::{assert_bad_input, workspace_root, TempDir};

fn tinyrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn converted_folders_equal_llama_cpp_conversions() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base_path = dir.join("llama-lora-tiny-f32.gguf");
    let base = GgufFile::open(&base_path).unwrap();
    let tmp = TempDir::new("convert-lora");
    for name in ["a-qv-r8", "b-all-r16", "c-rslora-r4"] {
        let out = tmp.path().join(format!("{name}.gguf"));
        let o = tinyrt(&[
            "convert-lora",
            dir.join("peft").join(name).to_str().unwrap(),
            base_path.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {o:?}");
        let got = GgufFile::open(&out).unwrap();
        let want = GgufFile::open(dir.join("gguf").join(format!("{name}-f32.gguf"))).unwrap();
        for key in ["general.architecture", "general.type", "adapter.type"] {
            assert_eq!(
                got.metadata().get_str(key).unwrap(),
                want.metadata().get_str(key).unwrap(),
                "{name}: {key}"
            );
        }
        let alpha = |f: &GgufFile| {
            f.metadata()
                .get_f32("adapter.lora.alpha")
                .unwrap()
                .to_bits()
        };
        assert_eq!(alpha(&got), alpha(&want), "{name}: alpha");
        let names = |f: &GgufFile| {
            let mut v: Vec<String> = f.tensor_infos().iter().map(|t| t.name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&got), names(&want), "{name}: tensor names");
        for t in want.tensor_infos() {
            let g = got.tensor_info(&t.name).unwrap();
            assert_eq!((g.ty, &g.shape), (t.ty, &t.shape), "{name}: {}", t.name);
            assert!(
                got.tensor(&t.name).unwrap().data == want.tensor(&t.name).unwrap().data,
                "{name}: {} bytes differ",
                t.name
            );
        }
        let back = LoraAdapter::from_gguf(&out, &base).unwrap();
        assert_eq!(back.pairs.len(), want.tensor_infos().len() / 2, "{name}");
    }
}

#[test]
fn bad_folders_and_paths_exit_2() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let tmp = TempDir::new("convert-lora-bad");
    let out = tmp.path().join("out.gguf");
    let (base, out) = (base.to_str().unwrap(), out.to_str().unwrap());
    let missing = tmp.path().join("absent");
    let o = tinyrt(&["convert-lora", missing.to_str().unwrap(), base, out]);
    let err = assert_bad_input(&o, "missing folder");
    assert!(err.contains("adapter_config.json"), "{err}");
    // A folder for another base: the shapes do not match.
    let other = workspace_root().join("../shared/fixtures/llama-tiny-q8_0.gguf");
    let peft = dir.join("peft/a-qv-r8");
    let o = tinyrt(&[
        "convert-lora",
        peft.to_str().unwrap(),
        other.to_str().unwrap(),
        out,
    ]);
    let err = assert_bad_input(&o, "another base");
    assert!(err.contains("→"), "{err}");
    // The base is not overwritten.
    let o = tinyrt(&["convert-lora", peft.to_str().unwrap(), base, base]);
    assert_bad_input(&o, "output = base");
    assert!(!std::path::Path::new(out).exists());
}
