//! `tinyrt::tools::synth` and `tinyrt::tools::quantize`: synthesized files load and match their shape;
//! requantized files load, keep their metadata and stay within each type's error; the
//! per-tensor type choice and the bytes match llama-quantize where the reference tools are
//! installed (`~/.cache/tinyrt-ref/bin`) and the real models are at hand.

use std::path::{Path, PathBuf};

use tinyrt::gguf::{GgmlType, GgufFile, Value};
use tinyrt::kernels::quant;
use tinyrt::tools::quantize::{quantize_file, QuantizeOptions, Target};
use tinyrt::tools::synth::{self, Shape, SynthOptions, SynthReport, TokenizerSource};
use tinyrt_tests::{fixture, model, TempDir, GEMMA3, SMOLLM2};

fn synth_to(
    path: &Path,
    shape: Shape,
    target: &str,
    tokenizer: TokenizerSource,
    seed: u64,
) -> SynthReport {
    let options = SynthOptions {
        shape,
        target: Target::parse(target).unwrap(),
        tokenizer,
        seed,
    };
    synth::synthesize(path, &options, &mut |_, _, _| {}).unwrap()
}

fn tiny() -> Shape {
    Shape::by_name("tiny").unwrap()
}

fn dequantized(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file.tensor(name).unwrap();
    let mut out = vec![0f32; t.n_elements() as usize];
    quant::dequantize(t.ty, t.data, &mut out).unwrap();
    out
}

#[test]
fn synthesized_tiny_models_load_with_the_shape_of_their_config() {
    let dir = TempDir::new("synth");
    for target in ["q4_0", "q4_k_m", "q8_0", "f16"] {
        let path = dir.path().join(format!("tiny-{target}.gguf"));
        let report = synth_to(&path, tiny(), target, TokenizerSource::Default, 1);
        let file = GgufFile::open(&path).unwrap();
        let md = file.metadata();
        let s = tiny();
        assert_eq!(md.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(md.get_u32("llama.block_count").unwrap() as u64, s.n_layer);
        assert_eq!(
            md.get_u32("llama.embedding_length").unwrap() as u64,
            s.n_embd
        );
        assert_eq!(
            md.get_u32("llama.attention.head_count_kv").unwrap() as u64,
            s.n_head_kv
        );
        assert_eq!(
            md.get_u32("general.file_type").unwrap(),
            Target::parse(target).unwrap().ftype()
        );
        let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len() as u64, s.default_vocab);
        assert_eq!(report.n_vocab, s.default_vocab);
        let expected = s.tensors(s.default_vocab);
        assert_eq!(file.tensor_infos().len(), expected.len());
        for (name, shape, _) in &expected {
            let t = file
                .tensor(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(t.shape, &shape[..], "{name}");
            if shape.len() == 1 {
                assert_eq!(t.ty, GgmlType::F32, "{name}");
                assert!(dequantized(&file, name).iter().all(|&x| x == 1.0), "{name}");
            }
        }
        // The type choice of llama-quantize: output at Q6_K for quantized targets, the
        // default type for the embedding of an untied model.
        let out_ty = file.tensor("output.weight").unwrap().ty;
        let embd_ty = file.tensor("token_embd.weight").unwrap().ty;
        let (want_out, want_embd) = match target {
            "q4_0" => (GgmlType::Q6_K, GgmlType::Q4_0),
            "q4_k_m" => (GgmlType::Q6_K, GgmlType::Q4_K),
            "q8_0" => (GgmlType::Q8_0, GgmlType::Q8_0),
            _ => (GgmlType::F16, GgmlType::F16),
        };
        assert_eq!((out_ty, embd_ty), (want_out, want_embd), "{target}");
        // Random matrices have a spread of about 0.02 and distinct rows.
        let w = dequantized(&file, "blk.0.ffn_up.weight");
        let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        assert!((0.015..0.025).contains(&rms), "{target}: rms {rms}");
        let row = s.n_embd as usize;
        assert_ne!(&w[..row], &w[row..2 * row]);
    }
}

#[test]
fn synthesis_is_deterministic_per_seed() {
    let dir = TempDir::new("synth-seed");
    let (a, b, c) = (
        dir.path().join("a.gguf"),
        dir.path().join("b.gguf"),
        dir.path().join("c.gguf"),
    );
    synth_to(&a, tiny(), "q4_k_m", TokenizerSource::Synthetic(300), 5);
    synth_to(&b, tiny(), "q4_k_m", TokenizerSource::Synthetic(300), 5);
    synth_to(&c, tiny(), "q4_k_m", TokenizerSource::Synthetic(300), 6);
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// A copied tokenizer sets the vocabulary size; large matrices take the pooled path.
#[test]
fn synthesis_copies_a_tokenizer() {
    let dir = TempDir::new("synth-tok");
    let src = GgufFile::open(fixture("ggml-vocab-llama-spm.gguf")).unwrap();
    let tok = synth::tokenizer_keys(&src);
    let path = dir.path().join("spm.gguf");
    let report = synth_to(&path, tiny(), "q4_0", TokenizerSource::Copy(tok), 1);
    assert_eq!(report.n_vocab, 32000);
    let file = GgufFile::open(&path).unwrap();
    for (k, v) in src
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
    {
        assert_eq!(file.metadata().get(k), Some(v), "{k}");
    }
    assert_eq!(file.tensor("output.weight").unwrap().shape, &[256, 32000]);
    let w = dequantized(&file, "output.weight");
    let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&rms), "rms {rms}");
    let row = 256;
    let distinct = w
        .chunks_exact(row)
        .take(2000)
        .map(|r| r.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
        .collect::<std::collections::HashSet<_>>();
    // Rows of one Q6_K block can coincide (pool block and rounded scale): rarely.
    assert!(
        distinct.len() >= 1990,
        "{} distinct rows of 2000",
        distinct.len()
    );
}

/// The tensor tables of the real-shape presets are those of the real files.
#[test]
fn real_shapes_match_the_real_models() {
    for (shape, name) in [("smollm2-135m", SMOLLM2), ("gemma3-270m", GEMMA3)] {
        let Some(path) = model(name) else { continue };
        let real = GgufFile::open(path).unwrap();
        let s = Shape::by_name(shape).unwrap();
        let n_vocab = real
            .metadata()
            .get_str_array("tokenizer.ggml.tokens")
            .unwrap()
            .len() as u64;
        let table = s.tensors(n_vocab);
        assert_eq!(table.len(), real.tensor_infos().len(), "{shape}");
        for (tname, tshape, _) in &table {
            let t = real
                .tensor_info(tname)
                .unwrap_or_else(|| panic!("{shape}: {tname}"));
            assert_eq!(&t.shape, tshape, "{shape}: {tname}");
        }
        // Every hyperparameter key the real file has under the architecture prefix is set to
        // the same value, except the context length (ours may be shorter).
        let md = s.metadata(n_vocab);
        let arch = real.metadata().get_str("general.architecture").unwrap();
        for (k, v) in real.metadata().iter() {
            if k.starts_with(&format!("{arch}.")) && !k.ends_with("context_length") {
                let ours = md.get(k).unwrap_or_else(|| panic!("{shape}: {k} missing"));
                match (ours, v) {
                    (Value::F32(a), Value::F32(b)) => {
                        assert!((a - b).abs() <= 1e-6 * b.abs(), "{k}")
                    }
                    _ => assert_eq!(ours, v, "{shape}: {k}"),
                }
            }
        }
    }
}

/// A shape whose rows (96) are not a multiple of 256: k-quants fall back as in llama.cpp.
#[test]
fn k_quant_fallbacks_are_reported() {
    let dir = TempDir::new("fallback");
    let shape = Shape {
        name: "narrow",
        n_embd: 96,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 48,
        n_ff: 256,
        ..tiny()
    };
    let path = dir.path().join("narrow.gguf");
    let report = synth_to(&path, shape, "q4_k_m", TokenizerSource::Synthetic(300), 1);
    assert!(!report.fallbacks.is_empty());
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(
        file.tensor("blk.0.attn_q.weight").unwrap().ty,
        GgmlType::Q5_0
    );
    // With 2 layers llama.cpp's use_more_bits picks the second layer only: Q4_K → Q5_0 and
    // Q6_K → Q8_0 for the 96-wide attn_v rows.
    assert_eq!(
        file.tensor("blk.0.attn_v.weight").unwrap().ty,
        GgmlType::Q5_0
    );
    assert_eq!(
        file.tensor("blk.1.attn_v.weight").unwrap().ty,
        GgmlType::Q8_0
    );
    assert_eq!(file.tensor("output.weight").unwrap().ty, GgmlType::Q8_0);
    // ffn_down rows are 256 long: k-quants apply.
    assert_eq!(
        file.tensor("blk.0.ffn_down.weight").unwrap().ty,
        GgmlType::Q4_K
    );
    assert_eq!(
        file.tensor("blk.1.ffn_down.weight").unwrap().ty,
        GgmlType::Q6_K
    );
}

/// Relative RMS error of a round trip through each type, on random-looking weights (bounds
/// several times above what the formats give on Gaussian data).
fn error_bound(ty: GgmlType) -> f32 {
    use GgmlType as T;
    match ty {
        T::F32 => 0.0,
        T::F16 => 1e-3,
        T::BF16 => 6e-3,
        T::Q8_0 => 0.01,
        T::Q6_K => 0.03,
        T::Q5_0 | T::Q5_1 | T::Q5_K => 0.06,
        T::Q4_0 | T::Q4_1 | T::Q4_K | T::IQ4_NL => 0.13,
        _ => 0.3,
    }
}

#[test]
fn quantize_round_trips_every_target() {
    let dir = TempDir::new("quantize");
    let src_path = fixture("stablelm-tiny-f32.gguf");
    let src = GgufFile::open(&src_path).unwrap();
    for name in Target::NAMES {
        let target = Target::parse(name).unwrap();
        let out = dir.path().join(format!("{name}.gguf"));
        let options = QuantizeOptions {
            target,
            output_type: None,
        };
        let mut seen = 0;
        let report = quantize_file(&src, &out, &options, &mut |_, _, _| seen += 1).unwrap();
        assert_eq!(seen, src.tensor_infos().len());
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(report.output_bytes, file.file_size());
        // Metadata preserved, file type updated.
        for (k, v) in src.metadata().iter() {
            if k != "general.file_type" && k != "general.quantization_version" {
                assert_eq!(file.metadata().get(k), Some(v), "{name}: {k}");
            }
        }
        assert_eq!(
            file.metadata().get_u32("general.file_type").unwrap(),
            target.ftype()
        );
        assert_eq!(file.tensor_infos().len(), src.tensor_infos().len());
        for t in src.tensors() {
            let q = file.tensor(t.name).unwrap();
            assert_eq!(q.shape, t.shape, "{name}: {}", t.name);
            if t.shape.len() == 1 {
                assert_eq!(q.ty, t.ty, "{name}: {} keeps its type", t.name);
                assert_eq!(q.data, t.data);
                continue;
            }
            let (a, b) = (dequantized(&src, t.name), dequantized(&file, t.name));
            let err: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            let norm: f32 = a.iter().map(|x| x * x).sum();
            let rel = (err / norm).sqrt();
            assert!(
                rel <= error_bound(q.ty),
                "{name}: {} ({}) relative error {rel}",
                t.name,
                q.ty
            );
        }
    }
}

#[test]
fn keep_output_overrides_the_output_type() {
    let dir = TempDir::new("keep-output");
    let src = GgufFile::open(fixture("phi2-tiny-f32.gguf")).unwrap();
    let out = dir.path().join("q4_0-f16out.gguf");
    let options = QuantizeOptions {
        target: Target::Q4_0,
        output_type: Some(GgmlType::F16),
    };
    quantize_file(&src, &out, &options, &mut |_, _, _| {}).unwrap();
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.tensor("output.weight").unwrap().ty, GgmlType::F16);
    assert_eq!(file.tensor("token_embd.weight").unwrap().ty, GgmlType::Q4_0);
    assert_eq!(
        file.tensor("blk.0.attn_qkv.weight").unwrap().ty,
        GgmlType::Q4_0
    );
}

/// A requantized file can itself be requantized (Q8_0 → Q4_K_M), and a tensor already of the
/// chosen type is copied unchanged.
#[test]
fn quantized_sources_are_requantized() {
    let dir = TempDir::new("requant");
    let src = GgufFile::open(fixture("llama-tiny-q8_0.gguf")).unwrap();
    let out = dir.path().join("q8.gguf");
    let options = QuantizeOptions {
        target: Target::Q8_0,
        output_type: None,
    };
    quantize_file(&src, &out, &options, &mut |_, _, _| {}).unwrap();
    let same = GgufFile::open(&out).unwrap();
    for t in src.tensors() {
        assert_eq!(same.tensor(t.name).unwrap().data, t.data, "{}", t.name);
    }
}

fn reference_tool(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/tinyrt-ref/bin").join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

/// Quantizing the f32 fixtures gives llama-quantize's tensor types and bytes.
#[test]
fn quantize_matches_llama_quantize_byte_for_byte() {
    let Some(tool) = reference_tool("llama-quantize") else {
        return;
    };
    let dir = TempDir::new("vs-llama-quantize");
    for fixture_name in ["stablelm-tiny-f32.gguf", "phi2-tiny-f32.gguf"] {
        let src_path = fixture(fixture_name);
        let src = GgufFile::open(&src_path).unwrap();
        for name in [
            "q4_0", "q8_0", "q4_k_m", "q5_k_m", "q4_k_s", "q6_k", "iq4_nl", "f16",
        ] {
            let target = Target::parse(name).unwrap();
            let ours = dir.path().join(format!("ours-{name}.gguf"));
            let theirs = dir.path().join(format!("ref-{name}.gguf"));
            let options = QuantizeOptions {
                target,
                output_type: None,
            };
            quantize_file(&src, &ours, &options, &mut |_, _, _| {}).unwrap();
            let status = std::process::Command::new(&tool)
                .arg(&src_path)
                .arg(&theirs)
                .arg(target.name())
                .arg("2")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "llama-quantize {name}");
            let (a, b) = (
                GgufFile::open(&ours).unwrap(),
                GgufFile::open(&theirs).unwrap(),
            );
            let names = |f: &GgufFile| {
                f.tensor_infos()
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&a), names(&b), "{fixture_name} {name}: tensor order");
            for t in b.tensors() {
                let o = a.tensor(t.name).unwrap();
                assert_eq!(o.ty, t.ty, "{fixture_name} {name}: {}", t.name);
                assert!(
                    o.data == t.data,
                    "{fixture_name} {name}: {} bytes differ",
                    t.name
                );
            }
            assert_eq!(
                a.metadata(),
                b.metadata(),
                "{fixture_name} {name}: metadata"
            );
        }
    }
}

/// `tinyrt::tools::perplexity` over a session of SmolLM2 Q4_1 reproduces llama-perplexity on the
/// first 4 chunks of the golden text (`llama-perplexity -m SmolLM2-135M-Instruct.Q4_1.gguf
/// -f tests/golden/perplexity.gpl3.txt -c 256 -b 256 -t 2 --chunks 4`, build 11434:
/// `[1]16.8243,[2]17.7902,[3]19.8141,[4]19.3583`, `PPL = 19.3583 +/- 2.42715`) within 1%.
/// The whole text (20.8533, tests/golden/README.md) takes minutes on two cores.
#[test]
fn perplexity_matches_llama_perplexity_on_smollm2() {
    let Some(path) = model(SMOLLM2) else { return };
    let model = tinyrt::Model::load(&path, tinyrt::LoadOptions::default()).unwrap();
    let mut text =
        std::fs::read(tinyrt_tests::workspace_root().join("tests/golden/perplexity.gpl3.txt"))
            .unwrap();
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    let tok = model.tokenizer();
    let tokens = tok.tokenize(&text, true, false).unwrap();
    let options = tinyrt::tools::perplexity::PerplexityOptions {
        n_ctx: 256,
        max_chunks: Some(4),
        bos: if tok.add_bos() { tok.bos() } else { None },
        n_vocab: model.config().vocab_size,
    };
    let mut session = tinyrt::Session::new(
        &model,
        tinyrt::SessionOptions {
            n_ctx: Some(256),
            ..tinyrt::SessionOptions::default()
        },
    )
    .unwrap();
    let r = tinyrt::tools::perplexity::perplexity(
        &tokens,
        &options,
        |chunk| {
            session.reset();
            session.feed_all(chunk)
        },
        |_, _, _| {},
    )
    .unwrap();
    let reference = [16.8243, 17.7902, 19.8141, 19.3583];
    assert_eq!(r.chunks, 4);
    assert_eq!(r.tokens_scored, 4 * 127);
    for (ours, theirs) in r.running.iter().zip(reference) {
        assert!(
            (ours / theirs - 1.0).abs() < 0.01,
            "running PPL {ours} vs llama.cpp {theirs}"
        );
    }
    let se = r.ppl_stderr.unwrap();
    assert!((se / 2.42715 - 1.0).abs() < 0.02, "stderr {se}");
}
