//! `tinyrt serve` over raw HTTP: hostile bodies, the API key, the queue limit, slow and
//! vanishing clients, shutdown, and answers equal to `tinyrt generate` and to the library's
//! own greedy generation of the templated chat (batch-invariant: the same bits alone or among
//! 15 others).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tinyrt_tests::fixture;

const BIN: &str = env!("CARGO_BIN_EXE_tinyrt");
const TINY: &str = "llama-tiny-q8_0.gguf";

/// A running server; killed on drop.
struct Server {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        Server::start_env(model, extra, None)
    }

    /// With `TINYRT_API_KEY` set to `key` (unset when `None`).
    fn start_env(model: &Path, extra: &[&str], key: Option<&str>) -> Server {
        let mut cmd = Command::new(BIN);
        match key {
            Some(k) => cmd.env("TINYRT_API_KEY", k),
            None => cmd.env_remove("TINYRT_API_KEY"),
        };
        let mut child = cmd
            .arg("serve")
            .arg(model)
            .args(["--port", "0", "-t", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tinyrt serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let pipe = child.stderr.take().expect("stderr piped");
            let log = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("tinyrt serve: listening on http://") {
                        let port = rest.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                        let _ = tx.send(port);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(p)) => p,
            _ => {
                let _ = child.kill();
                panic!("the server did not start: {}", stderr.lock().unwrap());
            }
        };
        Server {
            child,
            port,
            stderr,
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(&mut s)
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn metric(&self, name: &str) -> f64 {
        let r = self.request("GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {}", r.body))
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts an OpenAI-shaped error with this status; returns its message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e["message"].as_str().unwrap().to_string()
    }
}

fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

fn tiny() -> PathBuf {
    fixture(TINY)
}

/// `tinyrt generate --json` greedy: the generated ids (an ending end-of-generation token
/// dropped) and text.
fn generate(model: &Path, prompt: &str, n: usize) -> (Vec<u64>, String) {
    let out = Command::new(BIN)
        .arg("generate")
        .arg(model)
        .args([
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--temp",
            "0",
            "--json",
            "--batch-invariant",
            "-t",
            "1",
        ])
        .output()
        .expect("run generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<u64> = v["gen_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    if v["stop_reason"] == "eos" {
        ids.pop();
    }
    (ids, v["gen_text"].as_str().unwrap().to_string())
}

fn greedy_completion(prompt: &str, n: usize) -> Value {
    json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "return_tokens": true})
}

#[test]
fn bad_bodies_get_openai_errors() {
    let s = Server::start(&tiny(), &["-c", "64"]);
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("/v1/completions", b"{not json", "not JSON"),
        ("/v1/completions", b"[1, 2]", "JSON object"),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "temperature": "hot"}"#,
            "temperature",
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "max_tokens": 0}"#,
            "max_tokens",
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "max_tokens": -3}"#,
            "max_tokens",
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "model": "gpt-4"}"#,
            "unknown model",
        ),
        ("/v1/completions", br#"{"prompt": 7}"#, "prompt"),
        ("/v1/completions", br#"{"prompt": [1, 99999]}"#, "token ids"),
        ("/v1/completions", br#"{"prompt": "hi", "stop": 3}"#, "stop"),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "lora": "nope"}"#,
            "unknown adapter",
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "top_p": 2}"#,
            "top_p",
        ),
        ("/v1/completions", br#"{"prompt": "hi", "n": 2}"#, "n = 1"),
        ("/v1/chat/completions", br#"{"messages": "hi"}"#, "messages"),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"content": "hi"}]}"#,
            "role",
        ),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}"#,
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": "hi"}], "stream_options": 1}"#,
            "stream_options",
        ),
        ("/detokenize", br#"{"tokens": ["a"]}"#, "tokens"),
        ("/tokenize", br#"{"content": 5}"#, "content"),
    ];
    for (path, body, what) in cases {
        let r = s.request("POST", path, &[], body);
        let msg = r.error(400);
        assert!(
            msg.contains(what),
            "{path} {}: {msg}",
            String::from_utf8_lossy(body)
        );
    }
    // A prompt longer than the slot's 64 positions.
    let long = "word ".repeat(200);
    let msg = s
        .post("/v1/completions", &json!({"prompt": long}))
        .error(400);
    assert!(msg.contains("context"), "{msg}");
    // Unknown route, wrong method, no embedding model.
    assert!(s
        .request("GET", "/v2/nothing", &[], b"")
        .error(404)
        .contains("no route"));
    s.request("GET", "/v1/completions", &[], b"").error(405);
    // /metrics only with --metrics.
    s.request("GET", "/metrics", &[], b"").error(404);
    let msg = s.post("/v1/embeddings", &json!({"input": "hi"})).error(404);
    assert!(msg.contains("--embedding-model"), "{msg}");
    // A body declared over the 4 MiB limit is refused before it is read.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000000\r\n\r\n{\"prompt\": \"").unwrap();
    read_response(&mut c).error(413);
    // Sent in chunks past the limit (no length declared).
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..5 {
        if c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || c.write_all(&chunk).is_err()
            || c.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = c.write_all(b"0\r\n\r\n");
    read_response(&mut c).error(413);
    // Still healthy, and every request was logged with its status.
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
    let log = s.log();
    assert!(log.contains("POST /v1/completions 400 "), "{log}");
    assert!(log.contains("POST /v1/completions 413 "), "{log}");
}

#[test]
fn bad_options_exit_2_with_one_line() {
    for args in [
        vec!["serve", "/nonexistent.gguf", "--port", "0"],
        vec!["serve", "TINY", "--port", "0", "-np", "0"],
        vec!["serve", "TINY", "--port", "0", "--lora", "noequals"],
        vec![
            "serve",
            "TINY",
            "--port",
            "0",
            "--lora",
            "a=/nonexistent.gguf",
        ],
        vec!["serve", "TINY", "--port", "0", "-c", "4", "-np", "8"],
        vec!["serve", "TINY", "--port", "0", "--host", "not a host"],
    ] {
        let t = tiny();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "TINY" { t.to_str().unwrap() } else { a })
            .collect();
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn api_key_is_required_except_for_health() {
    let s = Server::start(&tiny(), &["-c", "256", "--api-key", "sekret"]);
    let body = br#"{"prompt": "hi", "max_tokens": 2}"#;
    s.request("POST", "/v1/completions", &[], body).error(401);
    s.request(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sekrex")],
        body,
    )
    .error(401);
    s.request(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sekret2")],
        body,
    )
    .error(401);
    s.request("GET", "/v1/models", &[("Authorization", "sekret")], b"")
        .error(401);
    let r = s.request(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sekret")],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
}

#[test]
fn api_key_can_come_from_the_environment() {
    let s = Server::start_env(&tiny(), &["-c", "256"], Some("from-env"));
    let body = br#"{"prompt": "hi", "max_tokens": 2}"#;
    s.request("POST", "/v1/completions", &[], body).error(401);
    let r = s.request(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer from-env")],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The key never shows in --help (hide_env_values).
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .env("TINYRT_API_KEY", "from-env")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("TINYRT_API_KEY"), "{help}");
    assert!(!help.contains("from-env"), "{help}");
}

/// Opens a stream that would run for a long time (no end token, a large slot) and reads
/// until its first token arrived.
fn open_long_stream(s: &Server) -> TcpStream {
    let body = json!({"prompt": "Once upon a time", "max_tokens": 100000, "ignore_eos": true,
                      "temperature": 0, "stream": true})
    .to_string();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"text\"") {
        let n = c.read(&mut buf).expect("stream data");
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    c
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_vanished_client_frees_its_slot() {
    let s = Server::start(&tiny(), &["-np", "1", "-c", "32768", "--metrics"]);
    let c = open_long_stream(&s);
    assert_eq!(s.metric("tinyrt_running_sequences"), 1.0);
    drop(c);
    wait_for("the slot to free", || {
        s.metric("tinyrt_running_sequences") == 0.0
    });
    // The one slot serves the next request.
    let r = s.post("/v1/completions", &greedy_completion("Hello", 4));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["tokens"].as_array().unwrap().len(),
        4
    );
    // What /metrics counted: two requests admitted, their prompts, tokens and latencies.
    assert_eq!(s.metric("tinyrt_queue_depth"), 0.0);
    assert_eq!(s.metric("tinyrt_time_to_first_token_seconds_count"), 2.0);
    assert!(s.metric("tinyrt_generated_tokens_total") >= 5.0);
    assert!(s.metric("tinyrt_inter_token_latency_seconds_count") >= 3.0);
    let n_tokens = |text: &str| {
        let v = s
            .post("/tokenize", &json!({"content": text, "add_special": true}))
            .json();
        v["tokens"].as_array().unwrap().len()
    };
    let prompts = n_tokens("Once upon a time") + n_tokens("Hello");
    assert_eq!(s.metric("tinyrt_prompt_tokens_total"), prompts as f64);
    assert!(s.metric("tinyrt_requests_total{status=\"200\"}") >= 2.0);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let s = Server::start(
        &tiny(),
        &["-np", "1", "-c", "32768", "--max-queue", "0", "--metrics"],
    );
    let c = open_long_stream(&s);
    let r = s.post("/v1/completions", &greedy_completion("Hello", 2));
    r.error(429);
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        r.head
    );
    drop(c);
    wait_for("a request to be taken again", || {
        s.post("/v1/completions", &greedy_completion("Hello", 2))
            .status
            == 200
    });
    assert!(s.metric("tinyrt_requests_total{status=\"429\"}") >= 1.0);
}

#[test]
fn a_slow_body_is_cut_and_does_not_block_others() {
    let s = Server::start(&tiny(), &["-c", "256", "--body-timeout", "1"]);
    let t0 = Instant::now();
    let port = s.port;
    let slow = std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 200\r\n\r\n").unwrap();
        for b in br#"{"prompt": "a very slow client"#.iter() {
            if c.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        read_response(&mut c)
    });
    // Meanwhile others are served.
    std::thread::sleep(Duration::from_millis(200));
    let r = s.post("/v1/completions", &greedy_completion("Hello", 2));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = slow.join().unwrap();
    r.error(408);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // Headers that never end: the connection is closed.
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
}

#[test]
fn greedy_completions_equal_generate() {
    let mut models = vec![tiny()];
    models.extend(tinyrt_tests::model(tinyrt_tests::SMOLLM2));
    for model in models {
        let s = Server::start(&model, &["-np", "2", "-c", "4096"]);
        // A prompt past one 512-token chunk too (fed as generate feeds it: 512 + the rest).
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(60);
        for (prompt, n) in [
            ("The capital of France is", 24),
            ("Once upon a time", 9),
            (long.as_str(), 12),
        ] {
            let (ids, text) = generate(&model, prompt, n);
            for round in 0..2 {
                let r = s.post("/v1/completions", &greedy_completion(prompt, n));
                assert_eq!(r.status, 200, "{}", r.body);
                let v = r.json();
                let got: Vec<u64> = v["choices"][0]["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect();
                assert_eq!(got, ids, "{} {prompt:?} round {round}", model.display());
                assert_eq!(v["choices"][0]["text"], text.as_str());
                let u = &v["usage"];
                let n_prompt = u["prompt_tokens"].as_u64().unwrap();
                assert_eq!(
                    u["completion_tokens"].as_u64().unwrap() as usize,
                    ids.len() + usize::from(v["choices"][0]["finish_reason"] == "stop")
                );
                // The second time the prompt is in a slot's cache: all but its last token
                // (fed again for its logits; the batch's bits do not depend on the split).
                let cached = u["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap();
                let reused = n_prompt - 1;
                assert_eq!(cached, if round == 0 { 0 } else { reused }, "{v}");
            }
        }
        // Streamed: the same text in pieces, then [DONE].
        let (_, text) = generate(&model, "Once upon a time", 9);
        let mut req = greedy_completion("Once upon a time", 9);
        req["stream"] = json!(true);
        let r = s.post("/v1/completions", &req);
        assert_eq!(r.status, 200);
        let data = sse_data(&r.body);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            r.body
        );
        let joined: String = data[..data.len() - 1]
            .iter()
            .map(|d| {
                serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(joined, text);
    }
}

/// The reference for chat: the conversation rendered and tokenized by the library's chat
/// layer, then greedy generation in one session.
fn library_chat(
    model: &Path,
    messages: &[(&str, &str)],
    n: i64,
    n_ctx: usize,
) -> (Vec<u32>, String) {
    use tinyrt::chat::{encode_conversation, ChatFormat, Message};
    let m = tinyrt::Model::load(model, tinyrt::LoadOptions::default()).unwrap();
    let format = ChatFormat::from_metadata(m.file().metadata(), None).unwrap();
    let msgs: Vec<Message> = messages.iter().map(|(r, c)| Message::new(*r, *c)).collect();
    let prompt = encode_conversation(&format, m.tokenizer(), &msgs, true).unwrap();
    let mut session = tinyrt::Session::new(
        &m,
        tinyrt::SessionOptions {
            n_ctx: Some(n_ctx),
            batch_invariant: true,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = tinyrt::GenerateOptions {
        max_tokens: n,
        sampler: tinyrt::SamplerOptions::greedy(),
        top_logits: 0,
    };
    let ids: Vec<u32> = session
        .generate(&prompt, &opts)
        .unwrap()
        .map(|s| s.unwrap())
        .filter(|s| !s.is_eog)
        .map(|s| s.id)
        .collect();
    let text = m.tokenizer().decode(&ids).unwrap();
    (ids, text)
}

#[test]
fn chat_equals_the_templated_prompts_greedy_generation() {
    let mut models = vec![tiny()];
    models.extend(tinyrt_tests::model(tinyrt_tests::SMOLLM2));
    let conv = [
        ("system", "You are a helpful assistant."),
        ("user", "What is the capital of France?"),
    ];
    for model in models {
        let s = Server::start(&model, &["-np", "2", "-c", "1024"]);
        let (ids, text) = library_chat(&model, &conv, 32, 512);
        let messages: Vec<Value> = conv
            .iter()
            .map(|(r, c)| json!({"role": r, "content": c}))
            .collect();
        let body = json!({"messages": messages, "max_completion_tokens": 32, "temperature": 0, "return_tokens": true});
        let v = s.post("/v1/chat/completions", &body).json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            text.as_str(),
            "{}",
            model.display()
        );
        assert_eq!(v["choices"][0]["tokens"], json!(ids));
        // Streamed, with usage at the end.
        let mut body = body;
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = s.post("/v1/chat/completions", &body);
        let data = sse_data(&r.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let joined: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"].get(0)?["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(joined, text);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(
            usage["completion_tokens"].as_u64().unwrap() as usize,
            ids.len() + usize::from(ids.len() < 32)
        );
    }
}

#[test]
fn sixteen_concurrent_greedy_requests_equal_each_alone() {
    let s = Arc::new(Server::start(&tiny(), &["-np", "16", "-c", "8192"]));
    let words = [
        "The", "river", "runs", "quietly", "past", "old", "stone", "walls", "at", "dawn",
    ];
    // Prompts of 1 to about 200 tokens (both attention paths); the last four extend earlier
    // ones, so that prefix reuse takes part.
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            let (base, extra) = if i >= 12 {
                (i - 12, 1 + i * 11 % 90)
            } else {
                (i, 0)
            };
            let n = 1 + base * 13 % 97 + extra;
            (0..n)
                .map(|k| words[(k * 3 + base) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let bodies: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            json!({"prompt": prompt, "max_tokens": 8 + (i * 5) % 23, "temperature": 0,
                   "return_tokens": true, "logprobs": 3, "ignore_eos": i % 2 == 0})
        })
        .collect();
    let answer = |s: &Server, b: &Value| {
        let v = s.post("/v1/completions", b).json();
        let c = &v["choices"][0];
        (
            c["tokens"].clone(),
            c["logprobs"].clone(),
            c["text"].clone(),
        )
    };
    let alone: Vec<_> = bodies.iter().map(|b| answer(&s, b)).collect();
    for round in 0..2 {
        let handles: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|b| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || answer(&s, &b))
            })
            .collect();
        for (i, (h, want)) in handles.into_iter().zip(&alone).enumerate() {
            let got = h.join().unwrap();
            assert!(got.0.as_array().is_some_and(|a| !a.is_empty()), "{got:?}");
            // Bit-identical: serde_json prints f32 logprobs exactly, so equal values are equal bits.
            assert_eq!(&got, want, "request {i}, round {round}");
        }
    }
}

#[test]
fn sigterm_cuts_streams_at_the_deadline_and_exits_0() {
    let mut s = Server::start(
        &tiny(),
        &["-np", "1", "-c", "32768", "--shutdown-timeout", "1"],
    );
    let mut c = open_long_stream(&s);
    let t0 = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The stream is cut: it ends with a finish reason and [DONE].
    let mut rest = String::new();
    let _ = c.read_to_string(&mut rest);
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest:.300}");
    assert!(rest.contains("data: [DONE]"));
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", s.log());
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(s.log().contains("shutting down"));
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let s = Server::start(&tiny(), &["-c", "64"]);
    let v = s
        .post("/tokenize", &json!({"content": "Hello world"}))
        .json();
    let want = Command::new(BIN)
        .args([
            "tokenize",
            tiny().to_str().unwrap(),
            "-p",
            "Hello world",
            "--json",
        ])
        .output()
        .unwrap();
    let want: Value = serde_json::from_slice(&want.stdout).unwrap();
    let ids = v["tokens"].clone();
    assert!(!ids.as_array().unwrap().is_empty());
    // tinyrt tokenize adds the model's BOS; /tokenize does so with add_special.
    let with_bos = s
        .post(
            "/tokenize",
            &json!({"content": "Hello world", "add_special": true}),
        )
        .json();
    assert_eq!(with_bos["tokens"], want["ids"]);
    let back = s.post("/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(back["content"], "Hello world");
    let pieces = s
        .post(
            "/tokenize",
            &json!({"content": "Hello world", "with_pieces": true}),
        )
        .json();
    let joined: String = pieces["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["piece"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(joined, "Hello world");
}

#[test]
fn embeddings_equal_tinyrt_embed() {
    let Some(enc) = tinyrt_tests::model("all-MiniLM-L6-v2-f32.gguf") else {
        return;
    };
    let s = Server::start(
        &tiny(),
        &["-c", "64", "--embedding-model", enc.to_str().unwrap()],
    );
    let texts = ["a cat sits on the mat", "stock prices fell sharply"];
    let v = s
        .post(
            "/v1/embeddings",
            &json!({"input": texts, "model": "all-MiniLM-L6-v2-f32.gguf"}),
        )
        .json();
    for (i, t) in texts.iter().enumerate() {
        let out = Command::new(BIN)
            .args(["embed", enc.to_str().unwrap(), "-p", t, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["data"][i]["embedding"], want["data"][0]["embedding"],
            "{t}"
        );
    }
    // base64: the same floats, little-endian.
    let b = s
        .post(
            "/v1/embeddings",
            &json!({"input": texts[0], "encoding_format": "base64"}),
        )
        .json();
    assert!(b["data"][0]["embedding"].is_string());
    s.post("/v1/embeddings", &json!({"input": [1, 2]}))
        .error(400);
    s.post("/v1/embeddings", &json!({"input": "x", "model": "other"}))
        .error(400);
}

#[test]
fn openai_python_client() {
    let Some(python) = python_with("openai") else {
        return;
    };
    let model = tinyrt_tests::model(tinyrt_tests::SMOLLM2).unwrap_or_else(tiny);
    let enc = tinyrt_tests::model("all-MiniLM-L6-v2-f32.gguf");
    let mut args = vec!["-np", "2", "-c", "2048", "--api-key", "test-key"];
    let enc_s = enc.as_ref().map(|p| p.to_str().unwrap().to_string());
    if let Some(e) = &enc_s {
        args.extend(["--embedding-model", e.as_str()]);
    }
    let s = Server::start(&model, &args);
    let script = tinyrt_tests::workspace_root().join("tests/server/openai_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--base-url", &format!("http://127.0.0.1:{}/v1", s.port)])
        .args(["--api-key", "test-key"])
        .args(["--model", model.file_name().unwrap().to_str().unwrap()])
        .args(enc.iter().flat_map(|e| {
            [
                "--embedding-model".to_string(),
                e.file_name().unwrap().to_string_lossy().into_owned(),
            ]
        }))
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stdout:\n{so}\nstderr:\n{se}\nserver:\n{}",
        s.log()
    );
    assert!(so.contains("all checks passed"), "{so}");
}

/// Per-request adapters (the LoRA oracle's tiny base and two of its adapters): each answer
/// equals `tinyrt generate` with the same set, alone and with several sets running together.
#[test]
fn per_request_adapters_equal_generate_with_them() {
    let dir = tinyrt_tests::workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let a = dir.join("gguf/a-qv-r8-f32.gguf");
    let b = dir.join("gguf/b-all-r16-f32.gguf");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let s = Arc::new(Server::start(
        &base,
        &[
            "-np",
            "2",
            "-c",
            "512",
            "--lora",
            &format!("a={a_s}"),
            "--lora",
            &format!("b={b_s}"),
        ],
    ));
    let prompt = "The quick brown fox";
    let sets: Vec<(Value, Vec<&str>)> = vec![
        (json!(null), vec![]),
        (json!("a"), vec!["--lora-scaled", a_s, "1"]),
        (
            json!([{"name": "b", "scale": 0.5}]),
            vec!["--lora-scaled", b_s, "0.5"],
        ),
        (
            json!([{"name": "a"}, {"name": "b", "scale": 0.5}]),
            vec!["--lora-scaled", a_s, "1", "--lora-scaled", b_s, "0.5"],
        ),
        (json!(null), vec![]),
    ];
    let mut wants = Vec::new();
    for (_, args) in &sets {
        let out = Command::new(BIN)
            .arg("generate")
            .arg(&base)
            .args([
                "-p",
                prompt,
                "-n",
                "12",
                "--temp",
                "0",
                "--json",
                "--batch-invariant",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids = v["gen_ids"].as_array().unwrap().clone();
        if v["stop_reason"] == "eos" {
            ids.pop();
        }
        wants.push(json!(ids));
    }
    assert_ne!(wants[0], wants[1], "the adapter changes the answer");
    let body = |lora: &Value| {
        let mut b = greedy_completion(prompt, 12);
        b["lora"] = lora.clone();
        b
    };
    for ((lora, _), want) in sets.iter().zip(&wants) {
        let v = s.post("/v1/completions", &body(lora)).json();
        assert_eq!(&v["choices"][0]["tokens"], want, "lora {lora}");
    }
    let handles: Vec<_> = sets
        .iter()
        .map(|(lora, _)| {
            let (s, b) = (Arc::clone(&s), body(lora));
            std::thread::spawn(move || s.post("/v1/completions", &b).json())
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&wants) {
        assert_eq!(&h.join().unwrap()["choices"][0]["tokens"], want);
    }
}

/// Stop strings cut the text as `tinyrt generate --stop` does, streamed or not, and the
/// finish reason is `stop`.
#[test]
fn stop_strings_equal_generate() {
    let model = tiny();
    let s = Server::start(&model, &["-c", "256"]);
    let prompt = "Hello world";
    let (_, full) = generate(&model, prompt, 24);
    // A stop string from the middle of the greedy text (it spans tokens or not).
    let chars: Vec<char> = full.chars().collect();
    let mid = chars.len() / 2;
    let stop: String = chars[mid..(mid + 3).min(chars.len())].iter().collect();
    let out = Command::new(BIN)
        .arg("generate")
        .arg(&model)
        .args([
            "-p",
            prompt,
            "-n",
            "24",
            "--temp",
            "0",
            "--json",
            "--batch-invariant",
            "--stop",
            &stop,
        ])
        .output()
        .unwrap();
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want_text = want["gen_text"].as_str().unwrap();
    assert!(want_text.len() < full.len(), "{want_text:?} {full:?}");
    let mut body = greedy_completion(prompt, 24);
    body["stop"] = json!([stop, "never-in-the-text"]);
    let v = s.post("/v1/completions", &body).json();
    assert_eq!(v["choices"][0]["text"], want_text, "stop {stop:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let r = s.post("/v1/completions", &body);
    let data = sse_data(&r.body);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(joined, want_text);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

/// The python that has `openai` (and `jsonschema`), or `None` (skipped unless models are
/// required).
fn python_with(modules: &str) -> Option<String> {
    // A relative path is taken from the workspace root (tests run in cli/).
    let python = match std::env::var("TINYRT_PYTHON") {
        Ok(p) if p.contains('/') && !p.starts_with('/') => {
            tinyrt_tests::workspace_root().join(p).display().to_string()
        }
        Ok(p) => p,
        Err(_) => "python3".into(),
    };
    let probe = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    assert!(
        !tinyrt_tests::models_required(),
        "`{python} -c 'import {modules}'` failed and TINYRT_REQUIRE_MODELS=1 (set TINYRT_PYTHON)"
    );
    eprintln!("skipping: {python} cannot import {modules} (set TINYRT_PYTHON)");
    None
}

/// Tool calling and `response_format` with the official client on SmolLM2 and Gemma 3 (whose
/// templates take no tools: the generic JSON format): tests/server/tools_client.py.
#[test]
fn structured_output_and_tools_with_the_openai_client() {
    let Some(python) = python_with("openai, jsonschema") else {
        return;
    };
    for name in tinyrt_tests::REAL_MODELS {
        let Some(model) = tinyrt_tests::model(name) else {
            eprintln!("skipping: {name} is not fetched");
            continue;
        };
        tools_client(&python, &model);
    }
}

fn tools_client(python: &str, model: &Path) {
    let s = Server::start(model, &["-np", "2", "-c", "4096"]);
    let script = tinyrt_tests::workspace_root().join("tests/server/tools_client.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--base-url", &format!("http://127.0.0.1:{}/v1", s.port)])
        .args(["--model", model.file_name().unwrap().to_str().unwrap()])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && so.contains("all checks passed"),
        "stdout:\n{so}\nstderr:\n{se}\nserver:\n{}",
        s.log()
    );
}

/// A template that takes tools and writes Hermes `<tool_call>` tags (the Qwen 2.5 template of
/// the tiny Qwen2 checkpoint, random weights): the tools reach the prompt, a required call is
/// held to the declared schema and comes back as `tool_calls`, and a conversation with the
/// call and its result renders.
#[test]
fn hermes_tool_calls_on_a_qwen2_folder() {
    let folder = tinyrt_tests::hf_oracle::folder("tiny-qwen2");
    if !folder.is_dir() {
        assert!(
            !tinyrt_tests::models_required(),
            "{} is missing",
            folder.display()
        );
        return;
    }
    let s = Server::start(&folder, &["-c", "2048"]);
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string", "maxLength": 8},
            "lang": {"enum": ["en", "fr"]}}, "required": ["word", "lang"], "additionalProperties": false}}}]);
    let ask = json!([{"role": "user", "content": "Look up 'chat'."}]);
    for seed in [1, 2, 3] {
        let r = s
            .post(
                "/v1/chat/completions",
                &json!({"messages": ask, "tools": tools, "tool_choice": "required", "parallel_tool_calls": false,
                        "max_tokens": 200, "temperature": 1.0, "seed": seed}),
            )
            .json();
        let ch = &r["choices"][0];
        assert_eq!(ch["finish_reason"], "tool_calls", "{r}");
        let calls = ch["message"]["tool_calls"].as_array().expect("tool_calls");
        assert!(!calls.is_empty(), "{r}");
        for c in calls {
            assert_eq!(c["function"]["name"], "lookup", "{r}");
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{e}: {r}"));
            assert!(
                args["word"]
                    .as_str()
                    .is_some_and(|w| w.chars().count() <= 8),
                "{r}"
            );
            assert!(
                ["en", "fr"].contains(&args["lang"].as_str().unwrap_or("")),
                "{r}"
            );
            assert_eq!(args.as_object().unwrap().len(), 2, "{r}");
        }
    }
    // auto: text that does not open with a tag, or calls.
    for seed in [1, 2] {
        let r = s
            .post(
                "/v1/chat/completions",
                &json!({"messages": ask, "tools": tools, "max_tokens": 40, "temperature": 1.0, "seed": seed}),
            )
            .json();
        let m = &r["choices"][0]["message"];
        match m.get("tool_calls") {
            Some(calls) => assert_eq!(calls[0]["function"]["name"], "lookup", "{r}"),
            None => assert!(
                !m["content"].as_str().unwrap().trim_start().starts_with('<'),
                "{r}"
            ),
        }
    }
    // The prompt holds the tools (rendered by the template) and the earlier call and result.
    let convo = json!([
        {"role": "user", "content": "Look up 'chat'."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"word\": \"chat\", \"lang\": \"fr\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "cat"},
    ]);
    let prompt_tokens = |body: Value| {
        let r = s.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    let with = prompt_tokens(json!({"messages": convo, "tools": tools, "max_tokens": 1}));
    let without = prompt_tokens(json!({"messages": convo, "max_tokens": 1}));
    let none = prompt_tokens(
        json!({"messages": convo, "tools": tools, "tool_choice": "none", "max_tokens": 1}),
    );
    let tool_json = s
        .post("/tokenize", &json!({"content": tools[0].to_string()}))
        .json();
    let n_tool = tool_json["tokens"].as_array().unwrap().len() as u64;
    assert!(
        with >= without + n_tool,
        "tools in the prompt: {with} vs {without} + {n_tool}"
    );
    assert_eq!(none, without, "tool_choice none shows no tools");
}

/// Bad tools, tool choices and output formats: OpenAI-shaped 400s naming the field.
#[test]
fn bad_tools_and_formats_are_400s() {
    let s = Server::start(&tiny(), &[]);
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let f = |name: &str| json!([{"type": "function", "function": {"name": name}}]);
    for (body, param) in [
        (json!({"messages": msgs, "tools": "x"}), "tools"),
        (json!({"messages": msgs, "tools": f("has space")}), "tools"),
        (
            json!({"messages": msgs, "tools": f("a"), "tool_choice": "maybe"}),
            "tool_choice",
        ),
        (
            json!({"messages": msgs, "tools": f("a"), "tool_choice": {"type": "function", "function": {"name": "b"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": msgs, "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer", "minimum": "low"}}}}}], "tool_choice": "required"}),
            "tools",
        ),
        (
            json!({"messages": msgs, "response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"messages": msgs, "response_format": {"type": "json_schema"}}),
            "response_format",
        ),
        (
            json!({"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": "low"}}}}),
            "response_format",
        ),
        (
            json!({"messages": msgs, "grammar": "root ::= undefined_rule"}),
            "grammar",
        ),
        (
            json!({"messages": msgs, "grammar": "x", "json_schema": {"type": "object"}}),
            "grammar",
        ),
        (
            json!({"messages": msgs, "tools": f("a"), "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": "x"}]}),
            "messages",
        ),
    ] {
        let r = s.post("/v1/chat/completions", &body);
        r.error(400);
        assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.body);
    }
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "json_schema": {"type": "object", "required": 3}}),
    );
    r.error(400);
}

/// Constrained sequences batched together: each keeps its own schema or grammar, and a greedy
/// answer among others equals the same request alone.
#[test]
fn concurrent_constrained_requests_equal_each_alone() {
    let Some(model) = tinyrt_tests::model(tinyrt_tests::SMOLLM2) else {
        eprintln!("skipping: {} is not fetched", tinyrt_tests::SMOLLM2);
        return;
    };
    let s = Arc::new(Server::start(&model, &["-np", "6", "-c", "6144"]));
    let ask = |q: &str| json!([{"role": "user", "content": q}]);
    let fmt = |schema: Value| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
    let bodies = [
        json!({"messages": ask("A city as JSON."), "response_format": fmt(json!({"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer", "minimum": 0}},
            "required": ["city", "population"]}))}),
        json!({"messages": ask("Pick a colour."), "response_format": fmt(json!({"enum": ["red", "green", "blue"]}))}),
        json!({"messages": ask("Three numbers."), "response_format": fmt(json!({"type": "array",
            "items": {"type": "number"}, "minItems": 3, "maxItems": 3}))}),
        json!({"messages": ask("A date."), "grammar": "root ::= [0-9]{4} \"-\" [0-1][0-9] \"-\" [0-3][0-9]"}),
        json!({"messages": ask("Anything as JSON."), "response_format": {"type": "json_object"}}),
        json!({"messages": ask("Say hi.")}),
    ];
    let bodies: Vec<Value> = bodies
        .into_iter()
        .map(|mut b| {
            b["max_tokens"] = json!(48);
            b["temperature"] = json!(0);
            b["return_tokens"] = json!(true);
            b
        })
        .collect();
    let answer = |s: &Server, b: &Value| {
        let v = s.post("/v1/chat/completions", b).json();
        let c = &v["choices"][0];
        (
            c["tokens"].clone(),
            c["message"]["content"].clone(),
            c["finish_reason"].clone(),
        )
    };
    let alone: Vec<_> = bodies.iter().map(|b| answer(&s, b)).collect();
    for (i, (_, text, reason)) in alone.iter().enumerate().take(5) {
        if reason == "stop" && i < 3 {
            let v: Value = serde_json::from_str(text.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{e}: {text}"));
            match i {
                0 => assert!(
                    v["city"].is_string() && v["population"].as_u64().is_some(),
                    "{v}"
                ),
                1 => assert!(
                    ["red", "green", "blue"].contains(&v.as_str().unwrap_or("")),
                    "{v}"
                ),
                _ => assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}"),
            }
        }
        if i == 3 {
            let t = text.as_str().unwrap();
            assert!(
                t.len() == 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-',
                "{t}"
            );
        }
    }
    let handles: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|b| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || answer(&s, &b))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), alone[i], "request {i} among others");
    }
}
