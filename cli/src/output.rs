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

/// A progress bar on stderr, drawn only when stderr is a terminal: `[####----]   k/n label`,
/// one line redrawn in place; [`Bar::clear`] removes it.
pub struct Bar {
    on: bool,
}

impl Bar {
    /// Width of the bar in cells.
    const CELLS: usize = 30;

    pub fn new() -> Bar {
        use std::io::IsTerminal;
        Bar {
            on: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `done` of `n`, with `label` (control characters escaped, at most 32 shown).
    pub fn show(&self, done: usize, n: usize, label: &str) {
        use std::io::Write;
        if !self.on {
            return;
        }
        let cells = done.min(n) * Self::CELLS / n.max(1);
        let label: String = escape_controls(label).chars().take(32).collect();
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[2K[{}{}] {done:>4}/{n} {label}",
            "#".repeat(cells),
            "-".repeat(Self::CELLS - cells)
        );
        let _ = e.flush();
    }

    /// Removes the bar's line.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

impl Default for Bar {
    fn default() -> Bar {
        Bar::new()
    }
}
