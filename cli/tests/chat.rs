//! `tinyrt chat` scripted (stdin not a terminal): one user turn per line, replies on stdout,
//! `/save` `/load` `/reset`, and the error contract for bad options. Runs on the llama-tiny
//! fixture (random weights, built-in ChatML format) and, when present, SmolLM2.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tinyrt_tests::{fixture, model, TempDir, SMOLLM2};

fn chat(model: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .arg("chat")
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tinyrt");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn tiny() -> String {
    fixture("llama-tiny-q8_0.gguf").display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

#[test]
fn scripted_turns_save_load_reset() {
    let dir = TempDir::new("chat-cli");
    let saved = dir.path().join("conv.json");
    let saved = saved.display().to_string();
    // One line per reply: a newline ends it.
    let args = ["--temp", "0", "-n", "6", "-s", "Be brief.", "--stop", "\n"];
    // Two turns, then save.
    let o = chat(
        &tiny(),
        &args,
        &format!("Hello\nHow are you?\n/save {saved}\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let two = stdout(&o);
    assert_eq!(two.lines().count(), 2, "{two:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let msgs = doc["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[0]["content"], "Be brief.");
    assert_eq!(msgs[1]["content"], "Hello");
    assert_eq!(msgs[4]["role"], "assistant");

    // A third turn after /load answers as a third turn in one run does.
    let o = chat(&tiny(), &args, "Hello\nHow are you?\nAnd then?\n");
    let three = stdout(&o);
    let o = chat(&tiny(), &args, &format!("/load {saved}\nAnd then?\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), three.lines().nth(2).unwrap().to_string() + "\n");

    // /reset forgets: the second "Hello" is answered like the first.
    let o = chat(&tiny(), &args, "Hello\n/reset\nHello\n");
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn bad_options_and_files_exit_2() {
    for (args, stdin) in [
        (vec!["--chat-template", "nonsense"], ""),
        (vec!["-n", "0"], ""),
        (vec!["--temp", "nan"], ""),
        (vec!["--stop", ""], ""),
        (vec![], "/load /nonexistent/conv.json\n"),
        (vec![], "/frobnicate\n"),
    ] {
        let o = chat(&tiny(), &args, stdin);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?} {stdin:?}: {err}");
        let last = err.lines().last().unwrap_or("");
        assert!(last.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = chat("/nonexistent/model.gguf", &[], "");
    assert_eq!(o.status.code(), Some(2));
}

/// The scripted SmolLM2 transcript of the issue: each reply is one line, greedy replies are
/// reproducible.
#[test]
fn smollm2_scripted_chat() {
    let Some(path) = model(SMOLLM2) else {
        return;
    };
    let path = path.display().to_string();
    let o = chat(&path, &["--temp", "0", "-n", "32"], "Hi\nWhat is 2+2?\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out:?}");
    assert!(out.lines().nth(1).unwrap().contains('4'), "{out:?}");
    let again = chat(&path, &["--temp", "0", "-n", "32"], "Hi\nWhat is 2+2?\n");
    assert_eq!(stdout(&again), out);
}

fn generate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .arg("generate")
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// `generate --stop`: the text ends right before the first stop string (printed or in
/// `--json`), `stop_reason` is "stop", and the tokens are a prefix of the unstopped run.
#[test]
fn generate_stop_strings() {
    let m = tiny();
    let base = ["--temp", "0", "-n", "24", "-p", "Once upon a time"];
    let full = json_of(&generate(&[&[m.as_str()][..], &base, &["--json"]].concat()));
    let text = full["gen_text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 8, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &text[..text.find(&stop).unwrap()];

    let cut = json_of(&generate(
        &[
            &[m.as_str()][..],
            &base,
            &["--json", "--stop", &stop, "--stop", "never-appears"],
        ]
        .concat(),
    ));
    assert_eq!(cut["gen_text"], want, "stop {stop:?}");
    assert_eq!(cut["stop_reason"], "stop");
    let full_ids = full["gen_ids"].as_array().unwrap();
    let cut_ids = cut["gen_ids"].as_array().unwrap();
    assert!(cut_ids.len() < full_ids.len() && full_ids.starts_with(cut_ids));

    let o = generate(&[&[m.as_str()][..], &base, &["--stop", &stop]].concat());
    assert!(o.status.success());
    assert_eq!(stdout(&o), format!("{want}\n"));
    assert_eq!(full["stop_reason"], "length");
}

/// `generate --ignore-eos` runs past the end-of-generation token where a plain run stops.
#[test]
fn generate_ignore_eos() {
    let Some(path) = model(SMOLLM2) else {
        return;
    };
    let path = path.display().to_string();
    // SmolLM2's template with its default system prompt: the reply ends with <|im_end|>.
    let prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let base = [
        path.as_str(),
        "--temp",
        "0",
        "-n",
        "40",
        "--json",
        "-p",
        prompt,
    ];
    let plain = json_of(&generate(&base));
    assert_eq!(plain["stop_reason"], "eos", "{plain}");
    let plain_ids = plain["gen_ids"].as_array().unwrap();
    let longer = json_of(&generate(&[&base[..], &["--ignore-eos"]].concat()));
    assert_eq!(longer["stop_reason"], "length");
    let ids = longer["gen_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 40);
    // Identical up to the token where the plain run sampled its end-of-generation token.
    assert!(ids.starts_with(&plain_ids[..plain_ids.len() - 1]));
    assert_ne!(ids[plain_ids.len() - 1], plain_ids[plain_ids.len() - 1]);
}
