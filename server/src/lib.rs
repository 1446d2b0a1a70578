//! `tinyrt-server`: an OpenAI-compatible HTTP server over a tinyrt model (`tinyrt serve`).
//!
//! [`serve`] binds the socket first (`GET /health` answers 503 while the model loads), loads
//! through the caller's closure, starts the [`scheduler`] thread over the [`engine`], then
//! answers until [`Shutdown::trigger`]: it stops accepting, lets in-flight requests finish
//! within the deadline, cuts the rest and returns. Modules: [`api`] (request fields, answer
//! pieces), [`error`] (OpenAI-shaped errors), [`metrics`] (Prometheus text), `http` (routes,
//! key check, request log, body limits).

pub mod api;
pub mod engine;
pub mod error;
mod http;
pub mod metrics;
pub mod scheduler;
pub mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tinyrt::adapters::LoraAdapter;
use tinyrt::embed::Embedder;
use tinyrt::Model;
use tokio::sync::Notify;

use crate::engine::Engine;

/// A line on stderr; a failed write is dropped (std's `eprintln!` would panic).
macro_rules! log_line {
    ($($arg:tt)+) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)+);
    }};
}
pub(crate) use log_line;

/// How the server listens and what it accepts.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub host: String,
    /// 0: an ephemeral port (printed once ready).
    pub port: u16,
    /// `Authorization: Bearer KEY` required on every route but `/health`.
    pub api_key: Option<String>,
    /// Requests waiting for a slot at most: with every slot busy and this many waiting, a new
    /// one is answered 429.
    pub max_queue: usize,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// Largest request body (413 above).
    pub body_limit: usize,
    /// Longest time to receive a request's headers (the connection is closed after) and,
    /// separately, its body (408 after).
    pub body_timeout: Duration,
    /// After a shutdown signal, how long in-flight requests may run before they are cut.
    pub shutdown_deadline: Duration,
    /// Told the bound address as soon as the socket listens, before the model is loaded
    /// (`/health` answers 503 until it is).
    pub bound: Option<std::sync::mpsc::Sender<SocketAddr>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_queue: 64,
            metrics: false,
            body_limit: 4 << 20,
            body_timeout: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(10),
            bound: None,
        }
    }
}

/// What the loading closure gives the server.
pub struct Loaded<E> {
    pub model: Model,
    /// The model's id in the API (`GET /v1/models`, the `model` field).
    pub name: String,
    pub engine: E,
    /// LoRA adapters by the names requests use.
    pub adapters: Vec<(String, Arc<LoraAdapter>)>,
    /// The embedding model's id and embedder (`POST /v1/embeddings`).
    pub embedder: Option<(String, Embedder)>,
}

/// Ends a running [`serve`] (a signal handler calls [`Shutdown::trigger`]).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<Notify>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.notify_one();
    }
}

/// Why [`serve`] failed.
#[derive(Debug)]
pub enum ServeError {
    /// The address could not be bound.
    Bind(String),
    /// The loading closure failed.
    Load(String),
    /// The async runtime or the scheduler thread could not start.
    Start(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Bind(m) | ServeError::Load(m) | ServeError::Start(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ServeError {}

/// Accepts connections until `stop`, then waits for the open ones to finish their requests.
/// A client gets `header_timeout` to send a request's headers (the body's own limit is in
/// the handlers).
async fn accept(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    stop: Arc<Notify>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let stream = match conn {
                    Ok((stream, _)) => stream,
                    // Out of descriptors and the like: pause instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.notified() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs the server until `shutdown` is triggered; returns once in-flight requests finished or
/// were cut at the deadline. Prints `tinyrt serve: listening on http://HOST:PORT` on stderr
/// once the model is loaded.
pub fn serve<E, F>(opts: ServerOptions, load: F, shutdown: Shutdown) -> Result<(), ServeError>
where
    E: Engine,
    F: FnOnce() -> Result<Loaded<E>, String> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tinyrt-http")
        .build()
        .map_err(|e| ServeError::Start(format!("cannot start the async runtime: {e}")))?;
    let result = rt.block_on(run(opts, load, shutdown));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run<E, F>(opts: ServerOptions, load: F, shutdown: Shutdown) -> Result<(), ServeError>
where
    E: Engine,
    F: FnOnce() -> Result<Loaded<E>, String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| {
            ServeError::Bind(format!("cannot listen on {}:{}: {e}", opts.host, opts.port))
        })?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(format!("cannot read the bound address: {e}")))?;
    if let Some(tx) = &opts.bound {
        let _ = tx.send(addr);
    }
    let deadline = opts.shutdown_deadline;
    let slow = opts.body_timeout;
    let app = Arc::new(http::App::new(opts));
    let stop = Arc::new(Notify::new());
    let mut server = {
        let stop = Arc::clone(&stop);
        let router = http::router(Arc::clone(&app));
        tokio::spawn(accept(listener, router, slow, stop))
    };
    let loading = tokio::task::spawn_blocking(load);
    let ready = tokio::select! {
        r = loading => {
            let loaded = r
                .map_err(|e| ServeError::Load(format!("loading failed: {e}")))?
                .map_err(ServeError::Load)?;
            http::Ready::start(loaded, Arc::clone(&app.metrics))?
        }
        _ = shutdown.0.notified() => return Ok(()),
    };
    let scheduler = ready.scheduler.clone();
    let _ = app.ready.set(Arc::new(ready));
    log_line!("tinyrt serve: listening on http://{addr}");
    shutdown.0.notified().await;
    log_line!(
        "tinyrt serve: shutting down (in-flight requests get {} s)",
        deadline.as_secs_f64()
    );
    stop.notify_one();
    tokio::select! {
        _ = &mut server => {}
        _ = tokio::time::sleep(deadline) => {
            scheduler.cut();
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
        }
    }
    Ok(())
}
