//! The CLI's error contract: one line on stderr, exit status 2 for bad usage or bad input,
//! 1 for other failures, and a quiet exit 0 when stdout is closed (`tinyrt ... | head`).

use std::fmt;
use std::io::Write;
use std::process;

use tinyrt::gguf::GgufError;

/// Exit status for bad usage or bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status for other failures.
pub const EXIT_FAILURE: i32 = 1;

/// An error caused by what the user gave us (an option value, a prompt, a model file):
/// `main` maps it to exit status 2. Build one with [`bad_input`].
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// An error that exits with status 2, e.g. `return Err(bad_input("prompt is longer than the context"))`.
pub fn bad_input(msg: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.to_string()))
}

/// Wraps any error (e.g. a tokenizer or model-loading error caused by a bad file) so that
/// it exits with status 2, keeping its message.
#[allow(dead_code)]
pub fn as_bad_input(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e: anyhow::Error = e.into();
    bad_input(one_line(&e))
}

/// Stdout was closed by the reader (EPIPE): not an error, the command ends quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit status for an error: 0 for a closed stdout, 2 for bad input, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    let mut code = EXIT_FAILURE;
    for cause in e.chain() {
        if cause.is::<StdoutClosed>() {
            return 0;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return 0;
            }
        }
        if cause.is::<InputError>() {
            code = EXIT_BAD_INPUT;
        }
        // Every GGUF error is about the model file the user named, except a failed write.
        if let Some(g) = cause.downcast_ref::<GgufError>() {
            if !matches!(g, GgufError::Write(_)) {
                code = EXIT_BAD_INPUT;
            }
        }
    }
    code
}

/// The error and its causes on one line, skipping causes already spelled out by their parent.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    crate::output::escape_controls(&msg.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Prints the error as one line and exits with its status.
pub fn exit_on_error(e: &anyhow::Error) -> ! {
    let code = exit_code(e);
    if code != 0 {
        let _ = writeln!(std::io::stderr(), "error: {}", one_line(e));
    }
    process::exit(code)
}

/// Help and version go to stdout (exit 0); a usage error is clap's first line (exit 2).
pub fn exit_on_usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            process::exit(0)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = writeln!(
                std::io::stderr(),
                "error: a subcommand is required (see 'tinyrt --help')"
            );
            process::exit(EXIT_BAD_INPUT)
        }
        _ => {
            // clap's message is its first paragraph (e.g. "the following required arguments
            // were not provided:" and the list below it); usage and tips follow a blank line.
            let rendered = e.render().to_string();
            let message = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.strip_prefix("error:").unwrap_or(&message).trim();
            let message = if message.is_empty() {
                "invalid usage"
            } else {
                message
            };
            let _ = writeln!(std::io::stderr(), "error: {message} (see 'tinyrt --help')");
            process::exit(EXIT_BAD_INPUT)
        }
    }
}

/// Last resort: a panic prints one line (no backtrace) and exits 1; a panic from printing to
/// a closed stdout exits 0 quietly.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        if msg.contains("Broken pipe") {
            process::exit(0);
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg =
            crate::output::escape_controls(&msg.split_whitespace().collect::<Vec<_>>().join(" "));
        let _ = writeln!(std::io::stderr(), "error: internal error: {msg}{at}");
        process::exit(EXIT_FAILURE);
    }));
}
