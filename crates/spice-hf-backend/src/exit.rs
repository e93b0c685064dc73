//! Leaving a process whose probe thread is stuck inside a driver.
//!
//! A timed-out probe leaves its thread in the driver, often holding the driver's own lock. The
//! Vulkan loader's exit handler takes that lock, so a normal `exit` (returning from `main`)
//! waits for ever: seen with a Vulkan driver that never answers. The binary calls
//! [`exit_now_if_a_driver_is_stuck`] before returning; it ends the process with `_exit`, which
//! runs no exit handlers, only while such a thread exists.

// Reason: `_exit` is a C function; nothing in std leaves without running exit handlers.
#![allow(unsafe_code)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Probe threads given up on that have not returned.
static STUCK: AtomicUsize = AtomicUsize::new(0);

/// One probe thread's fate, shared by the thread and the caller waiting for it.
#[derive(Clone)]
pub(crate) struct Probe(Arc<AtomicBool>);

impl Probe {
    pub(crate) fn new() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    /// The caller stopped waiting: counted as stuck until the thread returns.
    pub(crate) fn abandoned(&self) {
        STUCK.fetch_add(1, Ordering::SeqCst);
        if self.0.swap(true, Ordering::SeqCst) {
            // The thread returned in the meantime.
            STUCK.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The thread returned (from the driver, or with a panic).
    pub(crate) fn finished(&self) {
        if self.0.swap(true, Ordering::SeqCst) {
            // The caller had given up and counted it.
            STUCK.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How many probe threads timed out and are still inside a driver.
pub fn stuck_probes() -> usize {
    STUCK.load(Ordering::SeqCst)
}

/// Ends the process at once with `code`, after flushing stdout and stderr, when a probe thread
/// is still stuck in a driver (see the module docs); returns otherwise. Call it last in `main`.
pub fn exit_now_if_a_driver_is_stuck(code: i32) {
    let stuck = stuck_probes();
    if stuck == 0 {
        return;
    }
    tracing::warn!(
        stuck,
        "a backend probe is still stuck in its driver; exiting without the drivers' exit handlers"
    );
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` takes an integer and never returns; nothing of ours needs its
    // destructors run (output was flushed above, files are closed by the kernel).
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}
