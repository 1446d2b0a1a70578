//! `GET /health` (and every other route) answers 503 with `Retry-After` while the model loads,
//! 200 once it is loaded; a load that fails ends `serve` with that error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tinyrt::{LoadOptions, Model, SessionOptions};
use tinyrt_server::engine::SessionEngine;
use tinyrt_server::{serve, Loaded, ServeError, ServerOptions, Shutdown};

/// One raw request; the status code and the whole answer.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    (code, out)
}

fn options(bound: mpsc::Sender<SocketAddr>) -> ServerOptions {
    ServerOptions {
        port: 0,
        bound: Some(bound),
        ..ServerOptions::default()
    }
}

#[test]
fn health_is_503_while_loading_then_200() {
    let (bound_tx, bound_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let shutdown = Shutdown::default();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            serve(
                options(bound_tx),
                move || {
                    go_rx.recv().map_err(|e| e.to_string())?;
                    let model = Model::load(
                        "../tests/fixtures/llama-tiny-q8_0.gguf",
                        LoadOptions::default(),
                    )
                    .map_err(|e| e.to_string())?;
                    let engine = SessionEngine::new(&model, 1, 64, SessionOptions::default())?;
                    Ok(Loaded {
                        model,
                        name: "tiny".into(),
                        engine,
                        adapters: Vec::new(),
                        embedder: None,
                    })
                },
                shutdown,
            )
        })
    };
    let addr = bound_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    for path in ["/health", "/v1/models"] {
        let (code, answer) = get(addr, path);
        assert_eq!(code, 503, "{path} while loading: {answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("retry-after: 1"), "{answer}");
        assert!(
            answer.contains("\"type\":\"unavailable_error\""),
            "{answer}"
        );
        assert!(answer.contains("loading"), "{answer}");
    }
    go_tx.send(()).unwrap();
    let t = std::time::Instant::now();
    loop {
        let (code, answer) = get(addr, "/health");
        if code == 200 {
            assert!(answer.contains("\"status\":\"ok\""), "{answer}");
            break;
        }
        assert_eq!(code, 503, "{answer}");
        assert!(t.elapsed() < Duration::from_secs(60), "never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, answer) = get(addr, "/v1/models");
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("\"id\":\"tiny\""), "{answer}");
    shutdown.trigger();
    server.join().unwrap().unwrap();
}

#[test]
fn a_failed_load_ends_serve_with_its_error() {
    let (bound_tx, bound_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        serve::<SessionEngine, _>(
            options(bound_tx),
            move || {
                let _ = go_rx.recv();
                Err("model.gguf: not a GGUF file".into())
            },
            Shutdown::default(),
        )
    });
    let addr = bound_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(get(addr, "/health").0, 503);
    go_tx.send(()).unwrap();
    match server.join().unwrap() {
        Err(ServeError::Load(m)) => assert!(m.contains("not a GGUF file"), "{m}"),
        Err(e) => panic!("another error: {e}"),
        Ok(()) => panic!("serve ran on after a failed load"),
    }
}
