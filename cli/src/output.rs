//! Writing to stdout without panicking when the reader goes away (`tinyrt ... | head`):
//! a broken pipe becomes [`StdoutClosed`], which `main` turns into a quiet exit 0.

use std::io::{self, Write};

use crate::error::StdoutClosed;

fn map_err(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Writes `text` to stdout and flushes (so streamed tokens appear at once).
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(map_err)?;
    out.flush().map_err(map_err)
}

/// Writes `text` and a newline to stdout and flushes.
pub fn println(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(map_err)?;
    out.write_all(b"\n").map_err(map_err)?;
    out.flush().map_err(map_err)
}

/// Writes raw bytes to stdout and flushes.
#[allow(dead_code)]
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes).map_err(map_err)?;
    out.flush().map_err(map_err)
}

/// `text` with its control characters (ESC, BEL, CR, ... from a model's metadata or tensor
/// names) written as escapes, so that a file cannot drive the terminal it is described on.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}
