//! The cache's error type.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything that can go wrong in the cache. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path from a server or a user would escape the cache, or is not portable.
    #[error("refusing unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The offending path, escaped.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A repository id is malformed.
    #[error("invalid repository id {repo:?}: {reason}")]
    InvalidRepoId {
        /// The offending id, escaped.
        repo: String,
        /// What is wrong.
        reason: String,
    },
    /// A hash or etag is not 40 or 64 hex digits.
    #[error(
        "invalid content hash or etag {value:?}: expected 40 (git sha1) or 64 (sha256) hex digits"
    )]
    BadHash {
        /// The offending value, escaped.
        value: String,
    },
    /// A filesystem operation failed.
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest could not be read or written.
    #[error("manifest {} is unreadable ({reason}); run `spice-hf cache verify` or delete the revision directory", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// Downloaded bytes do not hash to what the Hub announced; the partial file was deleted.
    #[error("{} failed verification: expected {expected}, got {actual}; the partial file was deleted, pull again (if it repeats, the server or a proxy corrupts the file)", path.display())]
    HashMismatch {
        /// The file that failed.
        path: PathBuf,
        /// The announced hash.
        expected: String,
        /// What the bytes hashed to.
        actual: String,
    },
    /// More or fewer bytes than announced.
    #[error("{} has {actual} bytes but the Hub announced {expected}", path.display())]
    SizeMismatch {
        /// The file that failed.
        path: PathBuf,
        /// Announced size.
        expected: u64,
        /// Size seen.
        actual: u64,
    },
    /// Another process held the revision lock for longer than the configured bound.
    #[error("timed out after {waited:?} waiting for lock {}: another spice-hf process is pulling this revision; wait for it or raise the lock timeout", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// Not enough free space for the files still to download.
    #[error("not enough free space in {}: need {needed} bytes, {available} available{}; free some space, pick a smaller quantization, or set SPICE_MODELS_DIR to a larger disk", dir.display(), held_by_others(*reserved, *pulls))]
    NoSpace {
        /// The directory checked.
        dir: PathBuf,
        /// Bytes still to download.
        needed: u64,
        /// Bytes available.
        available: u64,
        /// Of those, bytes that other pulls in progress still have to write.
        reserved: u64,
        /// How many other pulls are in progress.
        pulls: usize,
    },
    /// No home directory and no `SPICE_MODELS_DIR`.
    #[error("cannot locate the model cache: set SPICE_MODELS_DIR or HOME")]
    NoCacheDir,
}

fn held_by_others(reserved: u64, pulls: usize) -> String {
    match pulls {
        0 => String::new(),
        1 => format!(", of which {reserved} are reserved by another pull in progress"),
        n => format!(", of which {reserved} are reserved by {n} other pulls in progress"),
    }
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
