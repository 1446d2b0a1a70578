//! `tinyrt chat MODEL [-s SYSTEM] [-n N] [sampling options] [--chat-template NAME] [--stop S]
//! [--lora FILE]`:
//! talk with a model.
//!
//! On a terminal it is an interactive REPL; when stdin is not a terminal every input line is
//! one user turn and the replies go to stdout, one per turn, each ended by a newline (so it can
//! be scripted: `printf 'Hi\nWhat is 2+2?\n' | tinyrt chat MODEL --temp 0`). Commands: `/reset`,
//! `/save FILE`, `/load FILE` (JSON), `/help`, `/quit`. Ctrl-C interrupts a reply and keeps the
//! session; at the prompt it quits. Notices (template choice, dropped turns, timings with
//! `--timings`) go to stderr.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use tinyrt::chat::{Assistant, AssistantError, AssistantOptions, Message};
use tinyrt::files::MAX_INPUT_BYTES;

use crate::args::{LoadArgs, SamplingArgs, SessionArgs};
use crate::error::{as_bad_input, bad_input};
use crate::signals::{GENERATING, INTERRUPTED};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// System prompt.
    #[arg(short = 's', long = "system")]
    pub system: Option<String>,
    /// Most tokens per reply (-1 = until end of generation or a full context).
    #[arg(
        short = 'n',
        long = "max-tokens",
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub max_tokens: i64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Use a built-in chat format instead of the model's template (chatml, qwen, llama2,
    /// llama3, gemma, phi3, phi2), or a Jinja template given as text.
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// Stop a reply before this text (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub lora: crate::args::LoraArgs,
    /// Re-process the whole conversation every turn instead of reusing the KV cache.
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Print per-turn timings (time to first token, tokens reused) to stderr.
    #[arg(long)]
    pub timings: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.model.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    if args.max_tokens < -1 || args.max_tokens == 0 {
        return Err(bad_input("-n must be -1 or a positive count"));
    }
    if args.stop.iter().any(String::is_empty) {
        return Err(bad_input("--stop needs a non-empty string"));
    }
    let load = args.load.options()?;
    let session = args.session.options()?;
    let sampler = args.sampling.options()?;

    let t0 = Instant::now();
    let model = crate::args::load_model(&args.model, load)?;
    if model.is_encoder() {
        return Err(bad_input(tinyrt::SessionError::Encoder));
    }
    crate::args::requant::report(&model);
    // A bad schema or grammar is refused before the first turn (each reply compiles it anew).
    if let Some(spec) = &sampler.constraint {
        let g = model.grammars().map_err(bad_input)?;
        g.compile(spec).map_err(bad_input)?;
    }
    let session = args.session.for_model(&model, session)?;
    let adapters = args.lora.load(model.file())?;
    let opts = AssistantOptions {
        system_prompt: args.system.clone(),
        chat_template: args.chat_template.clone(),
        sampler,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        session,
        reuse_prefix: !args.no_prefix_reuse,
    };
    let mut assistant = Assistant::new(model, opts).map_err(as_bad_input)?;
    if !adapters.is_empty() {
        assistant.set_adapters(&adapters).map_err(as_bad_input)?;
    }
    eprintln!(
        "loaded {} in {:.2} s; chat template: {}; context {} tokens",
        args.model.display(),
        t0.elapsed().as_secs_f64(),
        assistant.template_description(),
        assistant.n_ctx()
    );
    if let Some(w) = assistant.take_template_warning() {
        eprintln!("warning: {w}");
    }

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("type a message; /help for commands, Ctrl-C stops a reply, Ctrl-D quits");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut raw = Vec::new();
    let mut line_no = 0usize;
    loop {
        if interactive {
            eprint!("> ");
        }
        raw.clear();
        // One line at most MAX_INPUT_BYTES long: a stream without newlines cannot grow memory
        // without bound.
        let n = (&mut lines)
            .take(MAX_INPUT_BYTES + 1)
            .read_until(b'\n', &mut raw)
            .context("reading stdin")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if raw.len() as u64 > MAX_INPUT_BYTES {
            return Err(bad_input(format!(
                "input line {line_no} is longer than {MAX_INPUT_BYTES} bytes"
            )));
        }
        let line = match std::str::from_utf8(&raw) {
            Ok(l) => l,
            Err(e) => {
                let e = bad_input(format!("input line {line_no} is not valid UTF-8 ({e})"));
                if interactive {
                    eprintln!("error: {}", crate::error::one_line(&e));
                    continue;
                }
                return Err(e);
            }
        };
        let input = line.trim_end_matches(['\n', '\r']);
        if input.trim().is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            match command(&mut assistant, cmd) {
                Ok(Command::Continue) => continue,
                Ok(Command::Quit) => break,
                Err(e) if interactive => {
                    eprintln!("error: {}", crate::error::one_line(&e));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        match reply(&mut assistant, input, args.timings) {
            Ok(()) => {}
            Err(e) if interactive => eprintln!("error: {}", crate::error::one_line(&e)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Command {
    Continue,
    Quit,
}

const HELP: &str =
    "commands: /reset (forget the conversation), /save FILE, /load FILE (JSON), /quit";

fn command(assistant: &mut Assistant, cmd: &str) -> Result<Command> {
    let (name, arg) = match cmd.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (cmd, ""),
    };
    match name {
        "reset" => {
            assistant.reset();
            eprintln!("(conversation reset)");
        }
        "save" => {
            if arg.is_empty() {
                return Err(bad_input("/save needs a file name"));
            }
            save(assistant.history(), Path::new(arg))?;
            eprintln!("(saved {} messages to {arg})", assistant.history().len());
        }
        "load" => {
            if arg.is_empty() {
                return Err(bad_input("/load needs a file name"));
            }
            let messages = load(Path::new(arg))?;
            let n = messages.len();
            assistant.set_history(messages).map_err(as_bad_input)?;
            eprintln!("(loaded {n} messages from {arg})");
        }
        "help" | "?" => eprintln!("{HELP}"),
        "quit" | "exit" | "q" => return Ok(Command::Quit),
        other => return Err(bad_input(format!("unknown command /{other} ({HELP})"))),
    }
    Ok(Command::Continue)
}

/// `{"messages": [{"role": ..., "content": ...}, ...]}`
fn save(messages: &[Message], path: &Path) -> Result<()> {
    let doc = serde_json::json!({ "messages": messages });
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    // A temporary file renamed into place: a failed or interrupted save keeps the old file.
    tinyrt::files::write_atomic(path, text.as_bytes()).map_err(|e| match e {
        e @ tinyrt::files::FileError::NotRegular { .. } => bad_input(e),
        e => anyhow::Error::new(e).context("cannot save the conversation"),
    })
}

/// Reads what [`save`] writes (or a bare array of messages).
fn load(path: &Path) -> Result<Vec<Message>> {
    let bytes = tinyrt::files::read_input(path)
        .map_err(|e| bad_input(format!("cannot read conversation: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| bad_input(format!("{}: not UTF-8: {e}", path.display())))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad_input(format!("{}: not JSON: {e}", path.display())))?;
    let list = doc.get("messages").cloned().unwrap_or(doc);
    serde_json::from_value(list).map_err(|e| {
        bad_input(format!(
            "{}: expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}]}}: {e}",
            path.display()
        ))
    })
}

fn reply(assistant: &mut Assistant, input: &str, timings: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    INTERRUPTED.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let result = assistant.respond_streaming(input, |piece| {
        if let Err(e) = stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
        {
            write_error = Some(e);
            return ControlFlow::Break(());
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    GENERATING.store(false, Ordering::SeqCst);
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let r = match result {
        Ok(r) => r,
        // A template that fails (a limit passed, an exception) is the model file's or the
        // user's input: exit status 2.
        Err(e @ (AssistantError::TooLong { .. } | AssistantError::Chat(_))) => {
            return Err(bad_input(e))
        }
        Err(e) => return Err(e.into()),
    };
    writeln!(stdout)?;
    stdout.flush()?;
    for n in &r.notices {
        eprintln!("note: {n}");
    }
    if r.interrupted {
        eprintln!("(interrupted)");
    }
    if r.constraint_satisfied == Some(false) && !r.interrupted {
        eprintln!(
            "note: the reply reached -n before the constrained value ended (it is incomplete)"
        );
    }
    if timings {
        let gen_s = (r.total_time - r.time_to_first_token).as_secs_f64();
        eprintln!(
            "[prompt {} tokens, {} reused, {} processed; time to first token {:.1} ms; {} tokens generated, {:.1} tok/s; stop: {}]",
            r.prompt_tokens,
            r.reused_tokens,
            r.prompt_tokens - r.reused_tokens,
            r.time_to_first_token.as_secs_f64() * 1e3,
            r.generated_tokens,
            if gen_s > 0.0 { r.generated_tokens.saturating_sub(1) as f64 / gen_s } else { 0.0 },
            r.stop_reason.as_str()
        );
    }
    Ok(())
}
