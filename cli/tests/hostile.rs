//! Hostile input against the `tinyrt` binary (issue #15): every command runs under an
//! address-space limit (`ulimit -v`), so a regression that exhausts memory fails here instead
//! of swapping, and each case asserts the contract: one error line and exit status 2 (or the
//! documented fallback), never a panic, a hang, or a lost or truncated file. The limits are
//! described in `docs/LIMITS.md`.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tinyrt::gguf::{GgufFile, GgufWriter, Value};
use tinyrt_tests::{
    assert_bad_input, assert_bad_input_last, fixture, model, stderr, TempDir, SMOLLM2,
};

/// The time bounds below are hang guards for a loaded 2-core CI host, not speed targets.
///
/// The address-space limit of every command here (KiB): far above what the tiny fixtures and
/// SmolLM2 need at their default contexts, far below what any of the hostile cases would take.
const ULIMIT_KB: u64 = 3 << 20;

/// `tinyrt ARGS` under `ulimit -v`, after the shell commands `setup` (each ended by `&&`) and
/// with the redirections `redirect`. The shell `exec`s tinyrt: the child's pid is tinyrt's.
fn limited(setup: &str, redirect: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "{setup} ulimit -v {ULIMIT_KB} && exec \"$0\" \"$@\" {redirect}"
        ))
        .arg(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args);
    cmd
}

/// Runs `tinyrt ARGS` under `ulimit -v`, with `stdin` as its standard input.
fn run_limited(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = limited("", "", args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("run tinyrt");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait for tinyrt");
    (out, start.elapsed())
}

fn tinyrt(args: &[&str]) -> Output {
    run_limited(args, b"", &[]).0
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn hash(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// A copy of the fixture `name` with its metadata changed by `edit` and the tensors that
/// `keep` accepts (plus `extra` tensors, F32 of `n` values each).
fn rewrite(
    name: &str,
    edit: impl FnOnce(&mut GgufWriter),
    keep: impl Fn(&str) -> bool,
    extra: &[(&str, usize)],
) -> Vec<u8> {
    let src = GgufFile::open(fixture(name)).unwrap();
    let mut w = GgufWriter::new();
    w.set_all(src.metadata());
    edit(&mut w);
    for info in src.tensor_infos() {
        if keep(&info.name) {
            let t = src.tensor(&info.name).unwrap();
            w.add_tensor(&info.name, t.ty, t.shape, t.data.to_vec())
                .unwrap();
        }
    }
    for &(n, len) in extra {
        let data: Vec<u8> = vec![0u8; len * 4];
        w.add_tensor(n, tinyrt::gguf::GgmlType::F32, &[len as u64], data)
            .unwrap();
    }
    w.to_bytes().unwrap()
}

const TINY: &str = "llama-tiny-q8_0.gguf";

fn with_template(t: &str) -> Vec<u8> {
    rewrite(
        TINY,
        |w| {
            w.set("tokenizer.chat_template", Value::String(t.into()));
        },
        |_| true,
        &[],
    )
}

/// One template of each kind that exhausted memory or time before.
const HOSTILE_TEMPLATES: &[(&str, &str)] = &[
    ("string repetition", "{{ 'a' * 99999999 }}"),
    (
        "string doubling",
        "{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
    ),
    ("indent width", "{{ 'x\ny\nz' | indent(1000000000) }}"),
    ("format width", "{{ '%999999999s' | format('a') }}"),
    ("list repetition joined", "{{ (['aaaaaaaaaa'] * 100000000) | join('') }}"),
    ("replace of ''", "{{ (messages[0].content * 1000) | replace('', 'y' * 100000) }}"),
    ("tojson indent", "{{ messages | tojson(indent='          ' * 9999999) }}"),
    ("batch", "{{ messages | batch(1000000000) | list }}"),
    (
        "quadratic building",
        "{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ ('x' * 1000) %}{% endfor %}{{ ns.s | length }}",
    ),
    (
        "macro recursion doubling",
        "{% macro f(s, n) %}{% if n > 0 %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ f('ab', 90) }}",
    ),
];

#[test]
fn hostile_templates_in_the_file_fall_back_within_bounds() {
    let dir = TempDir::new("hostile-tpl");
    for (kind, t) in HOSTILE_TEMPLATES {
        let m = dir.write("m.gguf", &with_template(t));
        let (o, took) = run_limited(
            &["chat", path_str(&m), "--temp", "0", "-n", "2"],
            b"hi\n",
            &[],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{kind}: {err}");
        assert!(
            err.contains("chat template") && err.contains("built-in"),
            "{kind}: no fallback warning: {err}"
        );
        assert!(took < Duration::from_secs(20), "{kind}: took {took:?}");
    }
}

#[test]
fn hostile_templates_given_on_the_command_line_exit_2() {
    let dir = TempDir::new("hostile-tpl-cli");
    let m = dir.write("m.gguf", &with_template(""));
    for (kind, t) in HOSTILE_TEMPLATES {
        let (o, took) = run_limited(
            &[
                "chat",
                path_str(&m),
                "--temp",
                "0",
                "-n",
                "2",
                "--chat-template",
                t,
            ],
            b"hi\n",
            &[],
        );
        let err = assert_bad_input_last(&o, kind);
        assert!(err.contains("chat template"), "{kind}: {err}");
        assert!(took < Duration::from_secs(20), "{kind}: took {took:?}");
    }
}

#[test]
fn a_template_that_scans_for_long_is_stopped() {
    let dir = TempDir::new("hostile-deadline");
    let m = dir.write("m.gguf", &with_template(""));
    // No allocation in the loop: neither fuel (100k iterations) nor the budget stops it.
    let t = "{% set s = messages[0].content * 1500000 %}{% for i in range(40000) %}{% if 'b' in s %}x{% endif %}{% endfor %}";
    let (o, took) = run_limited(
        &["chat", path_str(&m), "-n", "2", "--chat-template", t],
        b"hi\n",
        &[],
    );
    // Whichever limit it meets first (the deadline, or the budget its loop's bookkeeping
    // adds up to), the render ends in bounded time with one error.
    let err = assert_bad_input_last(&o, "deadline");
    assert!(
        err.contains("longer than") || err.contains("more than"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn quantize_refuses_its_own_input_under_every_spelling() {
    let dir = TempDir::new("hostile-same");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let input = sub.join("in.gguf");
    std::fs::copy(fixture(TINY), &input).unwrap();
    std::os::unix::fs::symlink(&input, dir.path().join("link.gguf")).unwrap();
    std::fs::hard_link(&input, dir.path().join("hard.gguf")).unwrap();
    let before = hash(&input);
    let spellings = [
        input.clone(),
        sub.join(".").join("in.gguf"),
        sub.join("..").join("sub").join("in.gguf"),
        dir.path().join("link.gguf"),
        dir.path().join("hard.gguf"),
    ];
    for out in &spellings {
        let o = tinyrt(&["quantize", path_str(&input), path_str(out), "q4_0"]);
        assert_bad_input(&o, &out.display().to_string());
        assert_eq!(hash(&input), before, "{}", out.display());
    }
    // Relative spellings from inside the folder.
    let o = limited("", "", &["quantize", "in.gguf", "./in.gguf", "q4_0"])
        .current_dir(&sub)
        .output()
        .unwrap();
    assert_bad_input(&o, "./in.gguf");
    assert_eq!(hash(&input), before);
}

#[test]
fn quantize_never_removes_or_replaces_what_it_cannot_write() {
    let dir = TempDir::new("hostile-write");
    let input = fixture(TINY);
    // A device node is refused, not replaced or deleted.
    let o = tinyrt(&["quantize", path_str(&input), "/dev/null", "q4_0"]);
    assert_bad_input(&o, "/dev/null");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // A folder too.
    let o = tinyrt(&["quantize", path_str(&input), path_str(dir.path()), "q4_0"]);
    assert_bad_input(&o, "folder");
    // A write that fails midway (past the file-size limit, with SIGXFSZ ignored so that the
    // write returns EFBIG) is one error line, leaves the file the user had, and removes the
    // temporary.
    let out = dir.write("out.gguf", b"the user's file");
    let o = limited(
        "trap '' XFSZ && ulimit -f 8 &&",
        "",
        &["quantize", path_str(&input), path_str(&out), "f32"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the user's file");
    // A successful run replaces it with a complete file and leaves no temporary behind.
    let o = tinyrt(&["quantize", path_str(&input), path_str(&out), "q4_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    GgufFile::open(&out).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// SIGTERM or SIGKILL at any moment of a write leaves the old file or a complete new one under
/// the final name; SIGTERM also removes the temporary file.
#[test]
fn a_kill_during_a_write_leaves_the_old_file_or_a_complete_one() {
    let dir = TempDir::new("hostile-kill");
    // A file big enough that a kill lands mid-write: the tiny shape at f32 with a 32k
    // vocabulary (66 MiB; quantizing it to q8_0 on one thread takes about 0.1 s).
    let src = dir.path().join("src.gguf");
    let o = tinyrt(&["synth", "tiny", "f32", path_str(&src), "--vocab", "32768"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = dir.path().join("ref.gguf");
    let o = tinyrt(&["quantize", path_str(&src), path_str(&reference), "q8_0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let complete = hash(&reference);
    for (signal, delay_ms) in [
        ("TERM", 10),
        ("KILL", 10),
        ("TERM", 50),
        ("KILL", 50),
        ("INT", 30),
        ("KILL", 90),
    ] {
        let out = dir.path().join(format!("out-{signal}-{delay_ms}.gguf"));
        std::fs::write(&out, b"old").unwrap();
        let args = [
            "quantize",
            path_str(&src),
            path_str(&out),
            "q8_0",
            "-t",
            "1",
        ];
        let mut child = limited("", "", &args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status();
        let _ = child.wait();
        let now = hash(&out);
        assert!(
            now == b"old" || now == complete,
            "SIG{signal} after {delay_ms} ms left {} bytes that are neither",
            now.len()
        );
        if signal != "KILL" {
            let tmp: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!(".out-{signal}-{delay_ms}.")))
                .collect();
            assert!(tmp.is_empty(), "SIG{signal} left {tmp:?}");
        }
    }
}

#[test]
fn chat_save_replaces_the_file_whole() {
    let dir = TempDir::new("hostile-save");
    let save = dir.write("conv.json", b"old");
    let cmd = format!("/save {}\n", save.display());
    let (o, _) = run_limited(
        &["chat", path_str(&fixture(TINY)), "--temp", "0", "-n", "2"],
        format!("hi\n{cmd}").as_bytes(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&save).unwrap()).unwrap();
    assert_eq!(doc["messages"].as_array().map(Vec::len), Some(2));
    let (o, _) = run_limited(
        &["chat", path_str(&fixture(TINY)), "-n", "2"],
        b"/save /dev/null\n",
        &[],
    );
    assert_bad_input_last(&o, "/save /dev/null");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn context_sizes_are_checked_before_anything_is_allocated() {
    let Some(m) = model(SMOLLM2) else { return };
    let m = path_str(&m);
    for c in ["1000000", "4611686018427387904", "18446744073709551615"] {
        let (o, took) = run_limited(&["generate", m, "-p", "hi", "-n", "1", "-c", c], b"", &[]);
        let err = assert_bad_input(&o, c);
        assert!(err.contains("context"), "{c}: {err}");
        assert!(took < Duration::from_secs(20));
    }
    // A large context that fits costs only what is used.
    let o = tinyrt(&[
        "generate", m, "-p", "hi", "-n", "2", "--temp", "0", "-c", "100000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("longer than the 8192"),
        "{}",
        stderr(&o)
    );
    // perplexity checks the text before allocating a context.
    let dir = TempDir::new("hostile-ppl");
    let text = dir.write("t.txt", b"a short text");
    let o = tinyrt(&["perplexity", m, "-f", path_str(&text), "-c", "100000000"]);
    let err = assert_bad_input(&o, "perplexity -c");
    assert!(err.contains("tokens"), "{err}");
}

#[test]
fn inputs_are_read_with_a_cap_and_checked_against_the_context_first() {
    let tiny = fixture(TINY);
    let tiny = path_str(&tiny);
    let o = tinyrt(&["generate", tiny, "--file", "/dev/zero", "-n", "1"]);
    assert!(assert_bad_input(&o, "/dev/zero").contains("larger than"));
    let o = tinyrt(&["tokenize", tiny, "--file", "/dev/zero"]);
    assert_bad_input(&o, "tokenize /dev/zero");
    let o = tinyrt(&["perplexity", tiny, "-f", "/dev/zero"]);
    assert_bad_input(&o, "perplexity /dev/zero");
    let (o, _) = run_limited(&["chat", tiny, "-n", "1"], b"/load /dev/zero\n", &[]);
    assert_bad_input_last(&o, "/load /dev/zero");

    let dir = TempDir::new("hostile-word");
    // 40 MB in one word: refused before tokenizing (it cannot fit the context).
    let word = dir.write("word.txt", &vec![b'a'; 40 << 20]);
    let (o, took) = run_limited(
        &["generate", tiny, "--file", path_str(&word), "-n", "1"],
        b"",
        &[],
    );
    assert!(assert_bad_input(&o, "40 MB word").contains("does not fit"));
    assert!(took < Duration::from_secs(20), "{took:?}");
    // 8 MB in one word tokenizes in memory linear in the input, well inside the limit.
    let word = dir.write("word8.txt", &vec![b'a'; 8 << 20]);
    let (o, _) = run_limited(&["tokenize", tiny, "--file", path_str(&word)], b"", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_fifo_model_is_refused_without_blocking() {
    let dir = TempDir::new("hostile-fifo");
    let fifo = dir.path().join("m.gguf");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for cmd in ["info", "tokenize", "generate"] {
        let mut args = vec![cmd, path_str(&fifo)];
        if cmd != "info" {
            args.extend(["-p", "hi"]);
        }
        let (o, took) = run_limited(&args, b"", &[]);
        assert!(assert_bad_input(&o, cmd).contains("FIFO"), "{cmd}");
        assert!(took < Duration::from_secs(20));
    }
}

#[test]
fn option_ranges_are_checked() {
    let tiny = fixture(TINY);
    let tiny = path_str(&tiny);
    let bad: &[&[&str]] = &[
        &["--min-p", "1.5"],
        &["--min-p", "-0.1"],
        &["--top-p", "1.01"],
        &["--top-p", "-1"],
        &["--temp", "-1"],
        &["--top-k", "-5"],
        &["--repeat-last-n", "-2"],
        &["--repeat-penalty", "0"],
        &["-t", "100000"],
        &["-t", "0"],
    ];
    for extra in bad {
        let mut args = vec!["generate", tiny, "-p", "hi", "-n", "1"];
        args.extend_from_slice(extra);
        assert_bad_input(&tinyrt(&args), &extra.join(" "));
    }
    let dir = TempDir::new("hostile-opts");
    let out = dir.path().join("s.gguf");
    let o = tinyrt(&[
        "synth",
        "tiny",
        "q8_0",
        path_str(&out),
        "--vocab",
        "100000000",
    ]);
    assert_bad_input(&o, "synth --vocab");
    let o = tinyrt(&["quantize", tiny, path_str(&out), "q4_0", "-t", "100000"]);
    assert_bad_input(&o, "quantize -t");
    let (o, _) = run_limited(&["info", tiny], b"", &[("TINYRT_ISA", "bogus")]);
    assert_bad_input(&o, "TINYRT_ISA=bogus");
}

#[test]
fn a_non_utf8_line_and_a_closed_stderr_are_handled() {
    let tiny = fixture(TINY);
    let tiny = path_str(&tiny);
    let (o, _) = run_limited(&["chat", tiny, "-n", "1"], b"hi \xff\xfe there\n", &[]);
    assert!(assert_bad_input_last(&o, "non-UTF-8").contains("UTF-8"));
    // Stats on a closed or full stderr do not turn success into failure.
    for redirect in ["2>&-", "2>/dev/full"] {
        let redirect = format!(">/dev/null {redirect}");
        let args = ["generate", tiny, "-p", "hi", "-n", "2", "--temp", "0"];
        let status = limited("", &redirect, &args).status().unwrap();
        assert_eq!(status.code(), Some(0), "{redirect}");
    }
}

#[test]
fn inconsistent_and_mislabelled_files_are_refused() {
    let dir = TempDir::new("hostile-label");
    let src = GgufFile::open(fixture(TINY)).unwrap();
    let layers = src.metadata().get_u32("llama.block_count").unwrap();
    // block_count says one layer fewer than the file holds.
    let fewer = rewrite(
        TINY,
        |w| {
            w.set("llama.block_count", Value::U32(layers - 1));
        },
        |_| true,
        &[],
    );
    let p = dir.write("fewer.gguf", &fewer);
    let err = assert_bad_input(
        &tinyrt(&["generate", path_str(&p), "-p", "hi", "-n", "1"]),
        "block_count",
    );
    assert!(err.contains(&format!("blk.{}", layers - 1)), "{err}");
    // qwen3 tensors (with per-head Q/K norms, NeoX rope) labelled llama.
    let src = GgufFile::open(fixture("qwen3-tiny-q8_0.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata().iter() {
        w.set(&k.replace("qwen3.", "llama."), v.clone());
    }
    w.set("general.architecture", Value::String("llama".into()));
    for info in src.tensor_infos() {
        let t = src.tensor(&info.name).unwrap();
        w.add_tensor(&info.name, t.ty, t.shape, t.data.to_vec())
            .unwrap();
    }
    let p = dir.write("mislabelled.gguf", &w.to_bytes().unwrap());
    let err = assert_bad_input(
        &tinyrt(&["generate", path_str(&p), "-p", "hi", "-n", "1"]),
        "mislabelled",
    );
    assert!(err.contains("not used"), "{err}");
}

#[test]
fn control_characters_in_names_never_reach_the_terminal() {
    let dir = TempDir::new("hostile-names");
    let evil = rewrite(
        TINY,
        |w| {
            w.set(
                "general.name",
                Value::String("evil\u{1b}[2J\u{7}name".into()),
            );
        },
        |_| true,
        &[("blk.0.\u{1b}]0;pwned\u{7}", 4)],
    );
    let p = dir.write("evil.gguf", &evil);
    let o = tinyrt(&["info", path_str(&p)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.contains(&0x1b) && !o.stdout.contains(&0x07));
    assert!(String::from_utf8_lossy(&o.stdout).contains("evil\\u{1b}[2J"));
    let o = tinyrt(&["generate", path_str(&p), "-p", "hi", "-n", "1"]);
    let err = assert_bad_input(&o, "evil tensor name");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
}

/// Generation on an encoder, and embeddings from a decoder without a pooling, are one-line
/// errors with exit 2; with `--pooling last` a decoder embeds (llama.cpp's way).
#[test]
fn encoders_do_not_generate_and_decoders_do_not_embed() {
    let decoder = tinyrt_tests::fixture("llama-tiny-q8_0.gguf");
    let dec = decoder.to_str().unwrap();
    let (o, _) = run_limited(&["embed", dec, "-p", "hi"], b"", &[]);
    assert_bad_input(&o, "--pooling last or mean");
    let (o, _) = run_limited(
        &["embed", dec, "-p", "hi", "--pooling", "last", "--json"],
        b"",
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let dim = v["dim"].as_u64().unwrap() as usize;
    let emb = v["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(emb.len(), dim);
    // L2-normalised by default.
    let norm: f64 = emb.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-5, "norm² {norm}");
    let Some(encoder) = tinyrt_tests::model("all-MiniLM-L6-v2-q8_0.gguf") else {
        return;
    };
    let enc = encoder.to_str().unwrap();
    let (o, _) = run_limited(&["generate", enc, "-p", "hi", "-n", "2"], b"", &[]);
    assert_bad_input(&o, "encoder");
    let (o, _) = run_limited(&["chat", enc], b"hi\n", &[]);
    assert_bad_input(&o, "encoder");
    let (o, _) = run_limited(&["embed", enc, "-p", "hi", "--max-length", "1"], b"", &[]);
    assert_bad_input(&o, "--max-length");
    let (o, _) = run_limited(&["embed", enc, "-p", "hi", "--pooling", "bogus"], b"", &[]);
    assert_bad_input(&o, "unknown pooling");
    let (o, _) = run_limited(&["classify", enc, "-p", "hi"], b"", &[]);
    assert_bad_input(&o, "no classification head");
    if let Some(bert) = tinyrt_tests::model("bert-tiny-cls-f32.gguf") {
        let (o, _) = run_limited(&["classify", bert.to_str().unwrap(), "-p", "hi"], b"", &[]);
        assert_bad_input(&o, "pooler");
    }
}
