//! The one SIGINT/SIGTERM/SIGHUP handler of the process (`ctrlc` allows one).
//!
//! While `chat` generates a reply, Ctrl-C interrupts the reply ([`interrupt_replies`]); at any
//! other time the signal removes the temporary files of writes in progress
//! ([`tinyrt::files::remove_temporaries`]: the target keeps its old contents, or stays absent) and
//! exits with status 130. Under `serve` the first signal starts a graceful shutdown
//! ([`on_shutdown`]) and a second one exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set by a signal while a reply is being generated.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether a chat reply is being generated (a signal interrupts it) or not (it exits).
pub static GENERATING: AtomicBool = AtomicBool::new(false);
/// Set by `serve`: the first signal calls it (a graceful shutdown), a second one exits.
static ON_SHUTDOWN: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Makes the first signal call `f` instead of exiting (the server's graceful shutdown).
pub fn on_shutdown(f: impl Fn() + Send + Sync + 'static) {
    let _ = ON_SHUTDOWN.set(Box::new(f));
}

pub fn install() {
    // Failing to install the handler only means a signal kills the process, as usual; the
    // temporary files are then left beside their targets, never in their place.
    let _ = ctrlc::set_handler(|| {
        if let Some(f) = ON_SHUTDOWN.get() {
            if !SHUTTING_DOWN.swap(true, Ordering::SeqCst) {
                f();
                return;
            }
        }
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
        } else {
            tinyrt::files::remove_temporaries();
            eprintln!();
            std::process::exit(130);
        }
    });
}
