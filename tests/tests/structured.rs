//! Constrained generation on the real models: every JSON schema of `tests/data/schemas/`, at
//! several seeds and greedy, on SmolLM2 and Gemma-3; every complete output validated by
//! Python's `jsonschema` (Draft 2020-12, format checks on) through `$TINYRT_PYTHON`, and every
//! output cut by `max_tokens` reported as such.

use std::path::{Path, PathBuf};
use std::process::Command;

use tinyrt::constraint::ConstraintSpec;
use tinyrt::{
    GenerateOptions, LoadOptions, Model, SamplerOptions, Session, SessionOptions, StopReason,
};

/// The Python with `jsonschema`, or `None` (skip) when unset and models are not required.
fn python() -> Option<String> {
    let py = match std::env::var("TINYRT_PYTHON") {
        Ok(p) if p.contains('/') && !p.starts_with('/') => {
            tinyrt_tests::workspace_root().join(p).display().to_string()
        }
        Ok(p) => p,
        Err(_) => {
            assert!(
                !tinyrt_tests::models_required(),
                "TINYRT_PYTHON is unset and TINYRT_REQUIRE_MODELS=1 (a python with jsonschema)"
            );
            eprintln!("skipping: TINYRT_PYTHON is unset (a python with jsonschema)");
            return None;
        }
    };
    let ok = Command::new(&py)
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{py} cannot import jsonschema");
    Some(py)
}

fn schemas() -> Vec<PathBuf> {
    let dir = tinyrt_tests::workspace_root().join("tests/data/schemas");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

struct Outcome {
    text: String,
    stop: StopReason,
    satisfied: bool,
    tokens: usize,
}

fn run(
    session: &mut Session,
    prompt: &[u32],
    spec: &ConstraintSpec,
    sampler: SamplerOptions,
    max: i64,
) -> Outcome {
    session.reset();
    let opts = GenerateOptions {
        max_tokens: max,
        sampler: SamplerOptions {
            constraint: Some(spec.clone()),
            ..sampler
        },
        top_logits: 0,
    };
    let model = session.model().clone();
    let mut gen = session
        .generate(prompt, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    for step in gen.by_ref() {
        let step = step.unwrap();
        if !step.is_eog {
            ids.push(step.id);
        }
    }
    Outcome {
        text: model.tokenizer().decode(&ids).unwrap(),
        stop: gen.stop_reason().unwrap(),
        satisfied: gen.constraint_satisfied().unwrap(),
        tokens: ids.len(),
    }
}

fn title(schema: &serde_json::Value, path: &Path) -> String {
    schema["title"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| path.file_stem().unwrap().to_string_lossy().into_owned())
}

/// Sampled runs per schema besides greedy: 2 on SmolLM2 and 1 on Gemma-3 (CI time; Gemma-3's
/// 270M decode is the slower), or `TINYRT_STRUCTURED_SEEDS` on both.
fn seeds(model: &str) -> u64 {
    match std::env::var("TINYRT_STRUCTURED_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) => n,
        None if model == tinyrt_tests::SMOLLM2 => 2,
        None => 1,
    }
}

#[test]
fn every_schema_validates_on_both_models() {
    let Some(py) = python() else { return };
    let schemas = schemas();
    assert!(schemas.len() >= 50, "{} schemas", schemas.len());
    let tmp = tinyrt_tests::TempDir::new("structured");
    let mut lines = String::new();
    let (mut complete, mut cut) = (0usize, 0usize);
    for name in tinyrt_tests::REAL_MODELS {
        let Some(path) = tinyrt_tests::model(name) else {
            return;
        };
        let model = Model::load(&path, LoadOptions::default()).unwrap();
        let t = std::time::Instant::now();
        model.grammars().unwrap();
        eprintln!(
            "{name}: token masks for {} tokens built in {:.0} ms",
            model.tokenizer().n_vocab(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut session = Session::new(
            &model,
            SessionOptions {
                n_ctx: Some(512),
                ..SessionOptions::default()
            },
        )
        .unwrap();
        let t = std::time::Instant::now();
        let mut tokens = 0;
        for file in &schemas {
            let text = std::fs::read_to_string(file).unwrap();
            let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
            let prompt = format!("A JSON object ({}):\n", title(&schema, file));
            let prompt = model.tokenizer().encode(prompt.as_bytes()).unwrap();
            let spec = ConstraintSpec::JsonSchema(schema);
            let mut samplers = vec![("greedy".to_string(), SamplerOptions::greedy())];
            for seed in 1..=seeds(name) {
                samplers.push((
                    format!("seed{seed}"),
                    SamplerOptions {
                        temperature: 0.8,
                        seed: Some(seed),
                        ..SamplerOptions::default()
                    },
                ));
            }
            for (how, sampler) in samplers {
                let case = format!(
                    "{name}/{}/{how}",
                    file.file_name().unwrap().to_string_lossy()
                );
                let o = run(&mut session, &prompt, &spec, sampler, 128);

                tokens += o.tokens;
                if o.satisfied {
                    complete += 1;
                    lines.push_str(
                        &serde_json::json!({"schema": file, "output": o.text, "case": case})
                            .to_string(),
                    );
                    lines.push('\n');
                } else {
                    eprintln!("{case}: cut: {:?}", o.text);
                    // Never a finished generation that is not a complete value.
                    assert_eq!(o.stop, StopReason::Length, "{case}: {:?}", o.text);
                    cut += 1;
                }
            }
        }
        eprintln!(
            "{name}: {tokens} tokens in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("{complete} complete outputs validated, {cut} cut by max_tokens");
    assert!(complete >= cut * 4, "{complete} complete, {cut} cut");
    let file = tmp.write("outputs.jsonl", lines.as_bytes());
    let script = tinyrt_tests::workspace_root().join("tests/scripts/validate_json.py");
    let out = Command::new(&py).arg(script).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "jsonschema refused outputs:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_schema_compiles() {
    let Some(path) = tinyrt_tests::model(tinyrt_tests::SMOLLM2) else {
        return;
    };
    let model = Model::load(&path, LoadOptions::default()).unwrap();
    let g = model.grammars().unwrap();
    let bad: Vec<String> = schemas()
        .iter()
        .filter_map(|f| {
            let spec =
                ConstraintSpec::json_schema_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            g.compile(&spec)
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn an_output_cut_by_max_tokens_is_reported_as_cut() {
    let Some(path) = tinyrt_tests::model(tinyrt_tests::SMOLLM2) else {
        return;
    };
    let model = Model::load(&path, LoadOptions::default()).unwrap();
    let mut session = Session::new(&model, SessionOptions::default()).unwrap();
    let file = tinyrt_tests::workspace_root().join("tests/data/schemas/02-invoice.json");
    let spec = ConstraintSpec::json_schema_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let prompt = model.tokenizer().encode(b"An invoice:\n").unwrap();
    let o = run(&mut session, &prompt, &spec, SamplerOptions::greedy(), 6);
    assert_eq!(o.stop, StopReason::Length);
    assert!(!o.satisfied, "{:?}", o.text);
    assert!(o.text.starts_with('{'), "{:?}", o.text);
    // A bad schema fails before any work.
    let bad = SamplerOptions {
        constraint: Some(ConstraintSpec::JsonSchema(
            serde_json::json!({"type": "nope"}),
        )),
        ..SamplerOptions::greedy()
    };
    let before = session.n_past();
    let e = session
        .generate(
            &prompt,
            &GenerateOptions {
                sampler: bad,
                ..GenerateOptions::default()
            },
        )
        .err()
        .unwrap();
    assert!(matches!(e, tinyrt::SessionError::Constraint(_)), "{e}");
    assert_eq!(session.n_past(), before);
}
