//! `tinyrt convert DIR OUT.gguf`: a good folder gives the file (llama.cpp's bf16 conversion:
//! the manifest's tensors), malformed folders exit 2 with one line and write nothing.

use std::process::Command;

use tinyrt::gguf::GgufFile;
use tinyrt_tests::hf_oracle;
use tinyrt_tests::{assert_bad_input, sha256_hex, TempDir};

fn tinyrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_folder_converts_to_llama_cpps_file() {
    let tmp = TempDir::new("cli-convert");
    let out = tmp.path().join("qwen3.gguf");
    let dir = hf_oracle::folder("tiny-qwen3");
    let o = tinyrt(&["convert", dir.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let file = GgufFile::open(&out).unwrap();
    let manifest = hf_oracle::manifest("tiny-qwen3");
    // The default outtype is the converter's `auto`: bf16 for these bf16 weights.
    let want = manifest["outtypes"]["bf16"]["tensors"].as_array().unwrap();
    assert_eq!(want.len(), file.tensor_infos().len());
    for (w, t) in want.iter().zip(file.tensors()) {
        assert_eq!(w["name"].as_str(), Some(t.name));
        assert_eq!(
            w["sha256"].as_str(),
            Some(sha256_hex(t.data).as_str()),
            "{}",
            t.name
        );
    }
    assert_eq!(file.metadata().get_u32("general.file_type").unwrap(), 32);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn malformed_folders_exit_2_with_one_line() {
    for (what, folder, break_it) in hf_oracle::breaks() {
        let (tmp, dir) = hf_oracle::copy(folder, "cli-convert-bad");
        break_it(&dir);
        let out_dir = tmp.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("model.gguf");
        let o = tinyrt(&["convert", dir.to_str().unwrap(), out.to_str().unwrap()]);
        let line = assert_bad_input(&o, what);
        if what == "unknown architecture" {
            assert!(line.contains("LlamaForCausalLM"), "{line}");
        }
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }
    let o = tinyrt(&["convert", "x", "y.gguf", "--outtype", "q9_z"]);
    assert_bad_input(&o, "unknown outtype");
}
