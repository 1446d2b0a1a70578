//! Routes, the API key check, the request log, body limits, and the handlers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tinyrt::adapters::LoraAdapter;
use tinyrt::chat::{encode_conversation_with_tools, ChatFormat, Message};
use tinyrt::constraint::{Constraint, ConstraintSpec};
use tinyrt::embed::Embedder;
use tinyrt::Model;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{self, GenParams, Obj};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::scheduler::{Event, FinishReason, Job, Scheduler, TokenLogprob};
use crate::tools::{self, CallFormat, ToolRequest};
use crate::{log_line, Loaded, ServeError, ServerOptions};

/// Most texts one embeddings request may send.
const MAX_EMBED_INPUTS: usize = 2048;

pub(crate) struct App {
    opts: ServerOptions,
    /// Generation requests between their admission check and their answer's end.
    inflight: Arc<AtomicUsize>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: OnceLock<Arc<Ready>>,
}

impl App {
    pub(crate) fn new(opts: ServerOptions) -> App {
        App {
            opts,
            inflight: Arc::new(AtomicUsize::new(0)),
            metrics: Arc::new(Metrics::default()),
            ready: OnceLock::new(),
        }
    }

    fn ready(&self) -> Result<Arc<Ready>, ApiError> {
        self.ready
            .get()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("the model is loading"))
    }
}

/// The loaded model and what serves it.
pub(crate) struct Ready {
    model: Model,
    name: String,
    pub(crate) scheduler: Scheduler,
    chat: Result<Mutex<ChatFormat>, String>,
    adapters: HashMap<String, Arc<LoraAdapter>>,
    embedder: Option<(String, Mutex<Embedder>)>,
    created: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ready {
    pub(crate) fn start<E: crate::engine::Engine>(
        loaded: Loaded<E>,
        metrics: Arc<Metrics>,
    ) -> Result<Ready, ServeError> {
        let chat = ChatFormat::from_metadata(loaded.model.file().metadata(), None)
            .map(Mutex::new)
            .map_err(|e| format!("the model's chat template cannot be used: {e}"));
        if let Err(e) = &chat {
            log_line!("warning: {e}");
        }
        let scheduler = Scheduler::start(loaded.engine, loaded.model.clone(), metrics)
            .map_err(|e| ServeError::Start(format!("cannot start the scheduler: {e}")))?;
        Ok(Ready {
            model: loaded.model,
            name: loaded.name,
            scheduler,
            chat,
            adapters: loaded.adapters.into_iter().collect(),
            embedder: loaded.embedder.map(|(n, e)| (n, Mutex::new(e))),
            created: unix_now(),
        })
    }

    /// The prompt of a conversation, and with tools the format calls are written in.
    fn encode_chat(
        &self,
        messages: Vec<Message>,
        tools: Option<&ToolRequest>,
    ) -> Result<(Vec<u32>, Option<CallFormat>), ApiError> {
        let chat = self.chat.as_ref().map_err(ApiError::bad_request)?;
        let format = chat
            .lock()
            .map_err(|_| ApiError::internal("the chat template lock is poisoned"))?;
        let template_format = tools::format_of(format.active().source());
        let call_format = tools.map(|_| template_format);
        let (messages, raw) = match (tools, call_format) {
            (Some(t), Some(f)) => (
                t.messages(f, messages),
                (f == CallFormat::Hermes).then_some(&t.raw),
            ),
            _ if tools::has_tool_turns(&messages) && template_format == CallFormat::Generic => {
                (tools::generic_history(messages), None)
            }
            _ => (messages, None),
        };
        let ids = encode_conversation_with_tools(
            &format,
            self.model.tokenizer(),
            &messages,
            raw,
            true,
        )
        .map_err(|e| ApiError::bad_param("messages", format!("cannot render the chat: {e}")))?;
        if let Some(w) = format.take_warning() {
            log_line!("warning: {w}");
        }
        Ok((ids, call_format))
    }

    /// Compiles an output constraint against the vocabulary (a bad one is a 400 naming `param`).
    fn compile(&self, spec: &ConstraintSpec, param: &str) -> Result<Constraint, ApiError> {
        self.model
            .grammars()
            .and_then(|g| g.compile(spec))
            .map_err(|e| ApiError::bad_param(param, format!("bad {}: {e}", spec.kind())))
    }
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize));
    if app.opts.metrics {
        r = r.route("/metrics", get(metrics));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(Arc::clone(&app), auth))
        .layer(from_fn_with_state(Arc::clone(&app), log))
        .with_state(app)
}

/// One request's log line, printed when the last holder drops it (the handler, or the stream
/// of a streamed answer).
pub(crate) struct ReqLog {
    method: String,
    path: String,
    start: Instant,
    status: AtomicU16,
    prompt: AtomicUsize,
    generated: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl ReqLog {
    fn tokens(&self, prompt: usize, generated: usize) {
        self.prompt.store(prompt, Ordering::Relaxed);
        self.generated.store(generated, Ordering::Relaxed);
    }
}

impl Drop for ReqLog {
    fn drop(&mut self) {
        let status = self.status.load(Ordering::Relaxed);
        self.metrics.count_request(status);
        log_line!(
            "{} {} {} prompt {} gen {} {:.1} ms",
            self.method,
            self.path,
            status,
            self.prompt.load(Ordering::Relaxed),
            self.generated.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64() * 1e3
        );
    }
}

async fn log(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let entry = Arc::new(ReqLog {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(200).collect(),
        start: Instant::now(),
        status: AtomicU16::new(0),
        prompt: AtomicUsize::new(0),
        generated: AtomicUsize::new(0),
        metrics: Arc::clone(&app.metrics),
    });
    req.extensions_mut().insert(Arc::clone(&entry));
    let resp = next.run(req).await;
    entry
        .status
        .store(resp.status().as_u16(), Ordering::Relaxed);
    resp
}

/// Equal bytes, in a time that depends only on the lengths.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.opts.api_key {
        if req.uri().path() != "/health" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .and_then(|v| v.strip_prefix(b"Bearer "))
                .unwrap_or(b"");
            if !same_key(given, key.as_bytes()) {
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.uri().path().chars().take(200).collect::<String>()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ))
    }
}

/// The body, within the size limit and the time limit.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = app.opts.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let read = async {
        let mut buf = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    match tokio::time::timeout(app.opts.body_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::timeout(format!(
            "the request body did not arrive within {} s",
            app.opts.body_timeout.as_secs_f64()
        ))),
    }
}

async fn read_object(app: &App, headers: &HeaderMap, body: Body) -> Result<Obj, ApiError> {
    api::parse_object(&read_body(app, headers, body).await?)
}

async fn health(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    app.ready()?;
    Ok(Json(json!({"status": "ok"})))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let r = app.ready()?;
    let entry =
        |id: &str| json!({"id": id, "object": "model", "created": r.created, "owned_by": "tinyrt"});
    let mut data = vec![entry(&r.name)];
    if let Some((name, _)) = &r.embedder {
        data.push(entry(name));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Runs a blocking closure off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
}

/// One place of the server's capacity (slots + queue), released on drop.
struct Inflight(Arc<AtomicUsize>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Queues a generation; its events come back on the receiver. 429 when every slot is busy
/// and `max_queue` requests already wait.
fn start_job(
    app: &App,
    r: &Ready,
    prompt: Vec<u32>,
    params: &GenParams,
    logprobs: Option<usize>,
    constraint: Option<Constraint>,
    entry: &ReqLog,
) -> Result<(UnboundedReceiver<Event>, Inflight), ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let ctx = r.scheduler.slot_ctx();
    if prompt.len() > ctx {
        return Err(ApiError::bad_param(
            "prompt",
            format!(
                "the prompt has {} tokens, more than the context of {ctx} of a slot (raise -c or lower -np)",
                prompt.len()
            ),
        ));
    }
    entry.tokens(prompt.len(), 0);
    let capacity = r.scheduler.n_slots().saturating_add(app.opts.max_queue);
    let place = Inflight(Arc::clone(&app.inflight));
    if app.inflight.fetch_add(1, Ordering::Relaxed) >= capacity {
        return Err(ApiError::queue_full());
    }
    app.metrics.queued.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt,
        max_tokens: params.max_tokens,
        sampler: params.sampler.clone(),
        stop: params.stop.clone(),
        logprobs,
        ignore_eos: params.ignore_eos,
        adapters: params.adapters.clone(),
        constraint,
        events: tx,
        arrived: Instant::now(),
    };
    if !r.scheduler.submit(job) {
        app.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("the scheduler has stopped"));
    }
    Ok((rx, place))
}

/// A whole answer.
struct Collected {
    ids: Vec<u32>,
    text: String,
    logprobs: Vec<(u32, TokenLogprob)>,
    reason: FinishReason,
    prompt: usize,
    cached: usize,
    completion: usize,
}

async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Collected, ApiError> {
    let mut c = Collected {
        ids: Vec::new(),
        text: String::new(),
        logprobs: Vec::new(),
        reason: FinishReason::Length,
        prompt: 0,
        cached: 0,
        completion: 0,
    };
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text, logprob }) => {
                c.ids.push(id);
                c.text.push_str(&text);
                if let Some(lp) = logprob {
                    c.logprobs.push((id, lp));
                }
            }
            Some(Event::Done {
                reason,
                tail,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            }) => {
                c.text.push_str(&tail);
                c.reason = reason;
                c.prompt = prompt_tokens;
                c.cached = cached_tokens;
                c.completion = completion_tokens;
                return Ok(c);
            }
            Some(Event::Error(e)) => return Err(ApiError::internal(e)),
            None => return Err(ApiError::internal("the scheduler stopped")),
        }
    }
}

fn answer_id(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{:x}{:06x}",
        unix_now(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// The state of a streamed answer: chunks to send, then `[DONE]`.
struct Streaming {
    rx: UnboundedReceiver<Event>,
    out: VecDeque<String>,
    done: bool,
    kind: Kind,
    id: String,
    created: u64,
    ready: Arc<Ready>,
    include_usage: bool,
    return_tokens: bool,
    text_offset: usize,
    entry: Arc<ReqLog>,
    /// With tools: the call format, and the text held back while it may still be a call.
    tools: Option<StreamTools>,
    _place: Inflight,
}

/// A streamed answer under tools: text is held back until it cannot be a call (Hermes: it does
/// not open with a tag) or the answer ends (the generic format's JSON).
struct StreamTools {
    format: CallFormat,
    held: String,
    /// The text is plain content: stream it as it comes.
    passing: bool,
}

impl Streaming {
    fn chunk(&self, choice: Value) -> String {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.ready.name,
            "choices": [choice],
        })
        .to_string()
    }

    fn text_choice(
        &mut self,
        text: &str,
        token: Option<(u32, &TokenLogprob)>,
        ids: &[u32],
    ) -> Value {
        let tok = self.ready.model.tokenizer();
        let mut choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "delta": {"content": text},
                "logprobs": token.map(|(id, lp)| json!({"content": [api::chat_logprob_entry(tok, id, lp)]})),
                "finish_reason": null,
            }),
            Kind::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": token.map(|(id, lp)| api::completion_logprobs_obj(tok, &[(id, lp.clone())], self.text_offset)),
                "finish_reason": null,
            }),
        };
        if self.return_tokens {
            choice["tokens"] = json!(ids);
        }
        self.text_offset += text.len();
        choice
    }

    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Event::Token { id, text, logprob }) => {
                if let Some(t) = self.tools.as_mut().filter(|t| !t.passing) {
                    t.held.push_str(&text);
                    let start = t.held.trim_start();
                    if t.format == CallFormat::Hermes
                        && !start.is_empty()
                        && !start.starts_with('<')
                    {
                        t.passing = true;
                        let held = std::mem::take(&mut t.held);
                        let c = self.text_choice(&held, None, &[]);
                        let s = self.chunk(c);
                        self.out.push_back(s);
                    }
                    return;
                }
                if !text.is_empty() || logprob.is_some() || self.return_tokens {
                    let c = self.text_choice(&text, logprob.as_ref().map(|lp| (id, lp)), &[id]);
                    let s = self.chunk(c);
                    self.out.push_back(s);
                }
            }
            Some(Event::Done {
                reason,
                tail,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            }) => {
                let mut finish = reason.as_str();
                match self.tools.as_mut().filter(|t| !t.passing) {
                    Some(t) => {
                        t.held.push_str(&tail);
                        let held = std::mem::take(&mut t.held);
                        let (content, calls) = if reason == FinishReason::Stop {
                            tools::parse_output(t.format, &held)
                        } else {
                            (Some(held), Vec::new())
                        };
                        if let Some(content) = content.filter(|c| !c.is_empty()) {
                            let c = self.text_choice(&content, None, &[]);
                            let s = self.chunk(c);
                            self.out.push_back(s);
                        }
                        if !calls.is_empty() {
                            finish = "tool_calls";
                            let mut list = tools::calls_json(&calls, &self.id);
                            for (i, c) in list.as_array_mut().into_iter().flatten().enumerate() {
                                c["index"] = json!(i);
                            }
                            let c = json!({"index": 0, "delta": {"tool_calls": list}, "logprobs": null, "finish_reason": null});
                            let s = self.chunk(c);
                            self.out.push_back(s);
                        }
                    }
                    None => {
                        if !tail.is_empty() {
                            let c = self.text_choice(&tail, None, &[]);
                            let s = self.chunk(c);
                            self.out.push_back(s);
                        }
                    }
                }
                let last = match self.kind {
                    Kind::Chat => {
                        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish})
                    }
                    Kind::Completion => {
                        json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason.as_str()})
                    }
                };
                let s = self.chunk(last);
                self.out.push_back(s);
                if self.include_usage {
                    let mut u: Value =
                        serde_json::from_str(&self.chunk(json!(null))).unwrap_or(Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = api::usage(prompt_tokens, cached_tokens, completion_tokens);
                    self.out.push_back(u.to_string());
                }
                self.entry.tokens(prompt_tokens, completion_tokens);
                self.finish();
            }
            Some(Event::Error(e)) => {
                self.out.push_back(ApiError::internal(e).body().to_string());
                self.finish();
            }
            None => {
                self.out.push_back(
                    ApiError::internal("the scheduler stopped")
                        .body()
                        .to_string(),
                );
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.out.push_back("[DONE]".into());
        self.done = true;
    }
}

fn stream_response(mut st: Streaming) -> Response {
    if st.kind == Kind::Chat {
        let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
        let s = st.chunk(first);
        st.out.push_back(s);
    }
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(s) = st.out.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(s)), st));
            }
            if st.done {
                return None;
            }
            let ev = st.rx.recv().await;
            st.on_event(ev);
        }
    });
    Sse::new(stream).into_response()
}

async fn chat(
    State(app): State<Arc<App>>,
    Extension(entry): Extension<Arc<ReqLog>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?;
    let o = read_object(&app, &headers, body).await?;
    api::check_model(&o, &[&r.name])?;
    let messages = api::messages(&o)?;
    let logprobs = api::chat_logprobs(&o)?;
    let params = api::gen_params(&o, &["max_tokens", "max_completion_tokens"], &r.adapters)?;
    let tool_req = tools::parse(&o)?;
    let output = api::output_constraint(&o)?;
    if let (Some(_), Some((param, _))) = (&tool_req, &output) {
        return Err(ApiError::bad_param(
            param,
            "response_format, json_schema or grammar with tools is not supported: the tools set the output's format",
        ));
    }
    let (prompt, call_format, constraint) = {
        let r = Arc::clone(&r);
        let tool_req = tool_req.clone();
        blocking(move || {
            let (prompt, call_format) = r.encode_chat(messages, tool_req.as_ref())?;
            let constraint = match (&tool_req, call_format, &output) {
                (Some(t), Some(f), _) => Some(r.compile(&t.constraint(f), "tools")?),
                (_, _, Some((param, spec))) => Some(r.compile(spec, param)?),
                _ => None,
            };
            Ok((prompt, call_format, constraint))
        })
        .await?
    };
    let (rx, place) = start_job(&app, &r, prompt, &params, logprobs, constraint, &entry)?;
    let stream_tools = call_format.map(|format| StreamTools {
        format,
        held: String::new(),
        passing: false,
    });
    let id = answer_id("chatcmpl");
    if params.stream {
        return Ok(stream_response(Streaming {
            rx,
            out: VecDeque::new(),
            done: false,
            kind: Kind::Chat,
            id,
            created: unix_now(),
            ready: Arc::clone(&r),
            include_usage: params.include_usage,
            return_tokens: params.return_tokens,
            text_offset: 0,
            entry,
            tools: stream_tools,
            _place: place,
        }));
    }
    let c = collect(rx).await?;
    drop(place);
    entry.tokens(c.prompt, c.completion);
    let tok = r.model.tokenizer();
    let mut message = json!({"role": "assistant", "content": c.text});
    let mut finish = c.reason.as_str();
    if let Some(f) = call_format.filter(|_| c.reason == FinishReason::Stop) {
        let (content, calls) = tools::parse_output(f, &c.text);
        message["content"] = json!(content);
        if !calls.is_empty() {
            message["tool_calls"] = tools::calls_json(&calls, &id);
            finish = "tool_calls";
        }
    }
    let mut choice = json!({
        "index": 0,
        "message": message,
        "logprobs": logprobs.map(|_| json!({"content": c.logprobs.iter().map(|(id, lp)| api::chat_logprob_entry(tok, *id, lp)).collect::<Vec<_>>()})),
        "finish_reason": finish,
    });
    if params.return_tokens {
        choice["tokens"] = json!(c.ids);
    }
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": r.name,
        "choices": [choice],
        "usage": api::usage(c.prompt, c.cached, c.completion),
    }))
    .into_response())
}

/// The prompt of a completion: a string (tokenized with the model's BOS rule, as `tinyrt
/// generate` does), token ids, or a list holding one of these.
async fn completion_prompt(r: &Arc<Ready>, o: &Obj) -> Result<Vec<u32>, ApiError> {
    let vocab = r.model.config().vocab_size;
    let mut v = o
        .get("prompt")
        .ok_or_else(|| ApiError::bad_param("prompt", "prompt is required"))?;
    if let Value::Array(a) = v {
        if a.len() == 1 && !a[0].is_number() {
            v = &a[0];
        } else if a.iter().any(|x| !x.is_number()) {
            return Err(ApiError::bad_param(
                "prompt",
                "one prompt per request (a string or a list of token ids)",
            ));
        }
    }
    match v {
        Value::String(s) => {
            let ctx = r.scheduler.slot_ctx();
            let least = r.model.tokenizer().min_tokens(s.len());
            if least > ctx {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!("the prompt ({} bytes, at least {least} tokens) does not fit in the context of {ctx} of a slot", s.len()),
                ));
            }
            let s = s.clone();
            let r = Arc::clone(r);
            blocking(move || {
                r.model
                    .tokenizer()
                    .encode(s.as_bytes())
                    .map_err(|e| ApiError::bad_param("prompt", e.to_string()))
            })
            .await
        }
        Value::Array(_) => api::token_list(v, "prompt", vocab),
        _ => Err(ApiError::bad_param(
            "prompt",
            "prompt must be a string or a list of token ids",
        )),
    }
}

async fn completions(
    State(app): State<Arc<App>>,
    Extension(entry): Extension<Arc<ReqLog>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?;
    let o = read_object(&app, &headers, body).await?;
    api::check_model(&o, &[&r.name])?;
    if api::opt_bool(&o, "echo")? == Some(true) {
        return Err(ApiError::bad_param("echo", "echo is not supported"));
    }
    let logprobs = api::completion_logprobs(&o)?;
    let params = api::gen_params(&o, &["max_tokens"], &r.adapters)?;
    let prompt = completion_prompt(&r, &o).await?;
    let constraint = match api::output_constraint(&o)? {
        Some((param, spec)) => {
            let r = Arc::clone(&r);
            Some(blocking(move || r.compile(&spec, param)).await?)
        }
        None => None,
    };
    let (rx, place) = start_job(&app, &r, prompt, &params, logprobs, constraint, &entry)?;
    let id = answer_id("cmpl");
    if params.stream {
        return Ok(stream_response(Streaming {
            rx,
            out: VecDeque::new(),
            done: false,
            kind: Kind::Completion,
            id,
            created: unix_now(),
            ready: Arc::clone(&r),
            include_usage: params.include_usage,
            return_tokens: params.return_tokens,
            text_offset: 0,
            entry,
            tools: None,
            _place: place,
        }));
    }
    let c = collect(rx).await?;
    drop(place);
    entry.tokens(c.prompt, c.completion);
    let tok = r.model.tokenizer();
    let mut choice = json!({
        "index": 0,
        "text": c.text,
        "logprobs": logprobs.map(|_| api::completion_logprobs_obj(tok, &c.logprobs, 0)),
        "finish_reason": c.reason.as_str(),
    });
    if params.return_tokens {
        choice["tokens"] = json!(c.ids);
    }
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": unix_now(),
        "model": r.name,
        "choices": [choice],
        "usage": api::usage(c.prompt, c.cached, c.completion),
    }))
    .into_response())
}

async fn embeddings(
    State(app): State<Arc<App>>,
    Extension(entry): Extension<Arc<ReqLog>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?;
    let Some((name, _)) = &r.embedder else {
        return Err(ApiError::not_found(
            "this server has no embedding model (start it with --embedding-model M)",
        ));
    };
    let o = read_object(&app, &headers, body).await?;
    api::check_model(&o, &[name])?;
    let texts: Vec<String> = match o.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_EMBED_INPUTS => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::bad_param("input", "input must be a string or a list of strings")
            })?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_param(
                "input",
                format!("input must hold 1 to {MAX_EMBED_INPUTS} strings"),
            ))
        }
        _ => {
            return Err(ApiError::bad_param(
                "input",
                "input must be a string or a list of strings",
            ))
        }
    };
    let base64 = match api::opt_str(&o, "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::bad_param(
                "encoding_format",
                format!("encoding_format must be float or base64, not {f:?}"),
            ))
        }
    };
    if o.get("dimensions").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_param(
            "dimensions",
            "dimensions is not supported",
        ));
    }
    let done = {
        let r = Arc::clone(&r);
        blocking(move || {
            let (_, e) = r.embedder.as_ref().expect("checked above");
            let mut e = e
                .lock()
                .map_err(|_| ApiError::internal("the embedder lock is poisoned"))?;
            let refs: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            e.embed_batch(&refs)
                .map_err(|e| ApiError::bad_param("input", e.to_string()))
        })
        .await?
    };
    let n_tokens: usize = done.iter().map(|e| e.n_tokens).sum();
    entry.tokens(n_tokens, 0);
    let data: Vec<Value> = done
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}

async fn tokenize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let r = app.ready()?;
    let o = read_object(&app, &headers, body).await?;
    let content = api::opt_str(&o, "content")?
        .ok_or_else(|| ApiError::bad_param("content", "content is required"))?
        .to_string();
    let add_special = api::opt_bool(&o, "add_special")?.unwrap_or(false);
    let with_pieces = api::opt_bool(&o, "with_pieces")?.unwrap_or(false);
    let ids = {
        let r = Arc::clone(&r);
        blocking(move || {
            r.model
                .tokenizer()
                .tokenize(content.as_bytes(), add_special, true)
                .map_err(|e| ApiError::bad_param("content", e.to_string()))
        })
        .await?
    };
    if !with_pieces {
        return Ok(Json(json!({"tokens": ids})));
    }
    let tok = r.model.tokenizer();
    let tokens: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let bytes = tok.token_to_piece_special(id).unwrap_or_default();
            let piece = match String::from_utf8(bytes) {
                Ok(s) => json!(s),
                Err(e) => json!(e.into_bytes()),
            };
            json!({"id": id, "piece": piece})
        })
        .collect();
    Ok(Json(json!({"tokens": tokens})))
}

async fn detokenize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let r = app.ready()?;
    let o = read_object(&app, &headers, body).await?;
    let vocab = r.model.config().vocab_size;
    let ids = match o.get("tokens") {
        Some(v) => api::token_list(v, "tokens", vocab)?,
        None => return Err(ApiError::bad_param("tokens", "tokens is required")),
    };
    let text = r
        .model
        .tokenizer()
        .decode(&ids)
        .map_err(|e| ApiError::bad_param("tokens", e.to_string()))?;
    Ok(Json(json!({"content": text})))
}
