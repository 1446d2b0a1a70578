//! `tinyrt serve MODEL [options]`: an OpenAI-compatible HTTP server (`tinyrt-server`).
//!
//! Bad options and a model that does not load are bad input (exit 2, one line); once it
//! listens it prints `tinyrt serve: listening on http://HOST:PORT` on stderr, one line per
//! request after that, and exits 0 after SIGINT/SIGTERM (in-flight requests get 10 s).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tinyrt::embed::{EmbedOptions, Embedder};
use tinyrt::Model;
use tinyrt_server::engine::{BatchEngine, Engine, SessionEngine};
use tinyrt_server::{Loaded, ServeError, ServerOptions, Shutdown};

use crate::args::{file_label, warn_above_trained_context, LoadArgs, SessionArgs};
use crate::error::bad_input;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file (a decoder) that chat and completions run on.
    pub model: PathBuf,
    /// An encoder (or a decoder with a pooling) for POST /v1/embeddings.
    #[arg(long, value_name = "M")]
    pub embedding_model: Option<PathBuf>,
    /// A LoRA adapter requests can pick by name (`"lora": NAME`): NAME=FILE (repeatable).
    #[arg(long = "lora", value_name = "NAME=FILE")]
    pub lora: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed once listening).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences served at once (slots; `-np` as llama-server spells it): -c is shared, each slot gets CTX / N positions.
    #[arg(long = "parallel", default_value_t = 1, value_name = "N")]
    pub parallel: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    // `-c` is the total context here, shared by the slots.
    #[command(flatten)]
    pub session: SessionArgs,
    /// Require `Authorization: Bearer KEY` (every route but /health); read from TINYRT_API_KEY
    /// when not given (keeps the key out of the process list).
    #[arg(
        long,
        value_name = "KEY",
        env = "TINYRT_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Requests waiting for a slot at most (more are answered 429).
    #[arg(long, default_value_t = 64, value_name = "Q")]
    pub max_queue: usize,
    /// Serve GET /metrics (Prometheus text).
    #[arg(long)]
    pub metrics: bool,
    /// Seconds a client may take to send a request's headers (closed after), and its body (408).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub body_timeout: f64,
    /// Seconds in-flight requests may run after SIGINT/SIGTERM before they are cut.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub shutdown_timeout: f64,
}

/// `NAME=FILE` pairs, names unique.
fn lora_pairs(specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for s in specs {
        let Some((name, file)) = s
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        else {
            return Err(bad_input(format!("--lora {s:?}: expected NAME=FILE")));
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad_input(format!(
                "--lora: the name {name:?} is given twice"
            )));
        }
        out.push((name.to_string(), PathBuf::from(file)));
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    if args.model.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    if args.parallel == 0 {
        return Err(bad_input("-np must be at least 1"));
    }
    if args.host.is_empty() {
        return Err(bad_input("--host is empty"));
    }
    if args.api_key.as_deref() == Some("") {
        return Err(bad_input("--api-key is empty"));
    }
    for (name, v) in [
        ("--body-timeout", args.body_timeout),
        ("--shutdown-timeout", args.shutdown_timeout),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
            return Err(bad_input(format!(
                "{name} must be more than 0 and at most 3600 seconds"
            )));
        }
    }
    let load = args.load.options()?;
    let mut session = args.session.options()?;
    let kv_choice = args.session.kv.choice()?;
    let loras = lora_pairs(&args.lora)?;
    let opts = ServerOptions {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        max_queue: args.max_queue,
        metrics: args.metrics,
        body_timeout: Duration::from_secs_f64(args.body_timeout),
        shutdown_deadline: Duration::from_secs_f64(args.shutdown_timeout),
        ..ServerOptions::default()
    };
    let (model_path, embed_path, n_slots) = (args.model, args.embedding_model, args.parallel);
    let loader = move || -> std::result::Result<Loaded<Box<dyn Engine>>, String> {
        let at = |p: &PathBuf, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
        let model = Model::load(&model_path, load.clone()).map_err(|e| at(&model_path, &e))?;
        if model.is_encoder() {
            return Err(at(
                &model_path,
                &"an encoder has no next-token logits (give it with --embedding-model)",
            ));
        }
        session.kv_type = kv_choice.unwrap_or_else(|| model.default_kv_type());
        let total = session
            .n_ctx
            .unwrap_or(model.config().n_ctx_train.min(4096));
        let slot_ctx = total / n_slots;
        if slot_ctx == 0 {
            return Err(format!(
                "-c {total} gives no position to each of {n_slots} slots (raise -c or lower -np)"
            ));
        }
        warn_above_trained_context(&model, slot_ctx);
        let mut adapters = Vec::new();
        for (name, file) in &loras {
            let a = model.load_adapter(file).map_err(|e| at(file, &e))?;
            adapters.push((name.clone(), a));
        }
        let embedder = match &embed_path {
            None => None,
            Some(p) => {
                let m = Model::load(p, load).map_err(|e| at(p, &e))?;
                let e = Embedder::new(&m, &EmbedOptions::default()).map_err(|e| at(p, &e))?;
                Some((file_label(p), e))
            }
        };
        // The multi-sequence batch on the CPU; one session per slot on a GPU (no batch there
        // yet).
        let engine: Box<dyn Engine> = if model.uses_cuda() {
            Box::new(SessionEngine::new(&model, n_slots, slot_ctx, session)?)
        } else {
            Box::new(BatchEngine::new(&model, n_slots, slot_ctx, session)?)
        };
        Ok(Loaded {
            name: file_label(&model_path),
            model,
            engine,
            adapters,
            embedder,
        })
    };
    let shutdown = Shutdown::default();
    {
        let s = shutdown.clone();
        crate::signals::on_shutdown(move || s.trigger());
    }
    tinyrt_server::serve(opts, loader, shutdown).map_err(|e| match e {
        ServeError::Bind(_) | ServeError::Load(_) => bad_input(e),
        ServeError::Start(_) => anyhow::Error::new(e),
    })
}
