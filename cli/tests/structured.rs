//! `--json-schema`, `--grammar` and `--regex` on `generate` and `chat`: the output matches,
//! a cut-off is reported as one, bad input is one line with exit 2.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use tinyrt_tests::{assert_bad_input, fixture, workspace_root, TempDir};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn model() -> String {
    fixture("llama-tiny-q8_0.gguf").display().to_string()
}

fn generate_json(extra: &[&str]) -> (Json, String) {
    let m = model();
    let mut args = vec![
        "generate",
        m.as_str(),
        "-p",
        "Hello",
        "--json",
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    let o = tinyrt(&args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    (
        serde_json::from_slice(&o.stdout).expect("one JSON object"),
        err,
    )
}

#[test]
fn regex_and_schema_outputs_match_and_finish() {
    for temp in ["0", "0.8"] {
        let (j, _) = generate_json(&["--regex", "[0-9]{3}-[a-c]+", "-n", "40", "--temp", temp]);
        let text = j["gen_text"].as_str().unwrap();
        let (num, rest) = text.split_once('-').unwrap();
        assert!(
            num.len() == 3 && num.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        assert!(
            !rest.is_empty() && rest.bytes().all(|b| (b'a'..=b'c').contains(&b)),
            "{text:?}"
        );
        if j["stop_reason"] == "eos" {
            assert_eq!(j["constraint_satisfied"], true);
        }
    }
    let schema = r#"{"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}, "ok": {"type": "boolean"}}, "required": ["n", "ok"], "additionalProperties": false}"#;
    let (j, _) = generate_json(&["--json-schema", schema, "-n", "40", "--temp", "0"]);
    assert_eq!(j["stop_reason"], "eos", "{j}");
    assert_eq!(j["constraint_satisfied"], true);
    let v: Json = serde_json::from_str(j["gen_text"].as_str().unwrap()).unwrap();
    let n = v["n"].as_i64().unwrap();
    assert!((1..=9).contains(&n) && v["ok"].is_boolean(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2);
    // The same schema from a file.
    let dir = TempDir::new("structured-cli");
    let f = dir.write("s.json", schema.as_bytes());
    let (j2, _) = generate_json(&[
        "--json-schema",
        f.to_str().unwrap(),
        "-n",
        "40",
        "--temp",
        "0",
    ]);
    assert_eq!(j2["gen_text"], j["gen_text"]);
    // Unconstrained: no constraint key.
    let (j, _) = generate_json(&["-n", "2"]);
    assert!(j.get("constraint_satisfied").is_none());
}

#[test]
fn a_cut_off_value_is_reported() {
    let (j, err) = generate_json(&[
        "--json-schema",
        r#"{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}"#,
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    assert_eq!(j["stop_reason"], "length");
    assert_eq!(j["constraint_satisfied"], false);
    assert!(
        err.contains("cut the output before the constrained value was complete"),
        "{err}"
    );
}

#[test]
fn grammar_files_gbnf_and_lark() {
    let gbnf = workspace_root().join("tests/data/gbnf/list.gbnf");
    let (j, _) = generate_json(&[
        "--grammar",
        gbnf.to_str().unwrap(),
        "-n",
        "30",
        "--temp",
        "0.8",
    ]);
    let text = j["gen_text"].as_str().unwrap();
    assert!(text.starts_with("- "), "{text:?}");
    if j["constraint_satisfied"] == true {
        assert!(
            text.lines().all(|l| l.starts_with("- ")) && text.ends_with('\n'),
            "{text:?}"
        );
    }
    let dir = TempDir::new("structured-lark");
    let lark = dir.write("g.lark", b"start: \"yes\" | \"no\"\n");
    let (j, _) = generate_json(&[
        "--grammar",
        lark.to_str().unwrap(),
        "-n",
        "10",
        "--temp",
        "0",
    ]);
    assert!(
        ["yes", "no"].contains(&j["gen_text"].as_str().unwrap()),
        "{j}"
    );
    assert_eq!(j["stop_reason"], "eos");
}

#[test]
fn chat_replies_follow_the_schema() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args([
            "chat",
            &model(),
            "--temp",
            "0",
            "-n",
            "40",
            "--chat-template",
            "chatml",
        ])
        .args(["--regex", "(yes|no)!"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi\nAgain\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let replies: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(replies.len(), 2, "{out:?}");
    for r in replies {
        assert!(r == "yes!" || r == "no!", "{out:?}");
    }
}

#[test]
fn bad_constraints_are_one_line_errors() {
    let m = model();
    let dir = TempDir::new("structured-bad");
    let bad_gbnf = dir.write("bad.gbnf", b"root ::= [a-\n");
    let bad_lark = dir.write("bad.lark", b"start: nothing_here\n");
    let not_utf8 = dir.write("x.gbnf", b"root ::= \"\xff\"\n");
    let missing = dir.path().join("missing.json");
    let cases: Vec<Vec<String>> = vec![
        vec!["--json-schema".into(), "{not json".into()],
        vec!["--json-schema".into(), r#"{"type": "nonsense"}"#.into()],
        vec!["--json-schema".into(), missing.display().to_string()],
        vec!["--grammar".into(), bad_gbnf.display().to_string()],
        vec!["--grammar".into(), bad_lark.display().to_string()],
        vec!["--grammar".into(), not_utf8.display().to_string()],
        vec!["--regex".into(), "(unclosed".into()],
        vec!["--regex".into(), "".into()],
    ];
    for case in &cases {
        for cmd in ["generate", "chat"] {
            let mut args = vec![cmd, m.as_str()];
            if cmd == "generate" {
                args.extend(["-p", "Hi"]);
            }
            args.extend(case.iter().map(String::as_str));
            let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdin.take());
            let o = child.wait_with_output().unwrap();
            if cmd == "generate" {
                assert_bad_input(&o, &format!("{args:?}"));
            } else {
                tinyrt_tests::assert_bad_input_last(&o, &format!("{args:?}"));
            }
        }
    }
    // Two constraints at once.
    let o = tinyrt(&[
        "generate",
        &m,
        "-p",
        "Hi",
        "--regex",
        "a",
        "--json-schema",
        "{}",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
