//! The per-revision lock file, so two processes pulling one model download each file once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// File name of the lock inside a revision directory.
pub const LOCK_FILE: &str = ".spice.lock";

/// How often a waiter logs that it is still waiting.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// An exclusive lock on a revision directory, released on drop.
#[derive(Debug)]
pub struct RevisionLock {
    _file: File,
    path: PathBuf,
}

impl RevisionLock {
    /// Takes the lock at `path`, waiting at most `bound` (forever when `None`), logging every
    /// few seconds while another process holds it. Blocking: call it off the async runtime.
    pub fn acquire(path: &Path, bound: Option<Duration>) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open lock", path, e))?;
        let start = Instant::now();
        let mut last_log: Option<Instant> = None;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Self {
                        _file: file,
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
            }
            let waited = start.elapsed();
            if bound.is_some_and(|b| waited >= b) {
                return Err(Error::LockTimeout {
                    path: path.to_path_buf(),
                    waited,
                });
            }
            // Said at once, then every few seconds, so a pull that waits says why.
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                tracing::info!(lock = %path.display(), waited_s = waited.as_secs(), "another process is pulling this revision; waiting for its lock");
                last_log = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
