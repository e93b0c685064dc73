//! Content hashes: the Hub's sha256 for LFS files and the git blob sha1 for the rest.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::{Error, Result};

/// The content hash of one file, as the Hub names it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "algo", content = "hex", rename_all = "lowercase")]
pub enum ContentHash {
    /// sha256 of the content (LFS and xet files; the LFS oid).
    Sha256(String),
    /// git blob sha1: sha1 of `"blob {len}\0"` followed by the content.
    GitSha1(String),
}

impl ContentHash {
    /// Builds a hash from a Hub etag: 64 hex digits are a sha256, 40 a git sha1.
    ///
    /// Quotes and a weak `W/` prefix are stripped. Anything else is refused (an etag is later
    /// compared and logged, so a hostile one must not get through).
    pub fn from_etag(etag: &str) -> Result<Self> {
        let e = etag.trim().trim_start_matches("W/").trim_matches('"');
        let is_hex = !e.is_empty() && e.bytes().all(|b| b.is_ascii_hexdigit());
        match (is_hex, e.len()) {
            (true, 64) => Ok(Self::Sha256(e.to_ascii_lowercase())),
            (true, 40) => Ok(Self::GitSha1(e.to_ascii_lowercase())),
            _ => Err(Error::BadHash {
                value: etag.escape_debug().to_string(),
            }),
        }
    }

    /// The lowercase hex digest.
    pub fn hex(&self) -> &str {
        match self {
            Self::Sha256(h) | Self::GitSha1(h) => h,
        }
    }

    /// A streaming hasher for content of `size` bytes.
    pub fn hasher(&self, size: u64) -> StreamHasher {
        match self {
            Self::Sha256(_) => StreamHasher(HasherState::Sha256(sha2::Sha256::new())),
            Self::GitSha1(_) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                StreamHasher(HasherState::GitSha1(h))
            }
        }
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(h) => write!(f, "sha256:{h}"),
            Self::GitSha1(h) => write!(f, "git-sha1:{h}"),
        }
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A hasher fed while bytes stream to disk, so verifying costs no second read. (Its state is
/// private: the hash crates stay out of our public API.)
#[derive(Clone)]
pub struct StreamHasher(HasherState);

#[derive(Clone)]
enum HasherState {
    /// sha256 state.
    Sha256(sha2::Sha256),
    /// git blob sha1 state (header already fed).
    GitSha1(sha1::Sha1),
}

impl StreamHasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HasherState::Sha256(h) => h.update(data),
            HasherState::GitSha1(h) => h.update(data),
        }
    }

    /// Finishes and returns the hash, of the same kind as the one it was made from.
    pub fn finish(self) -> ContentHash {
        match self.0 {
            HasherState::Sha256(h) => ContentHash::Sha256(hex::encode(h.finalize())),
            HasherState::GitSha1(h) => ContentHash::GitSha1(hex::encode(h.finalize())),
        }
    }
}

/// Hashes a file on disk with the same algorithm as `like`.
pub fn hash_file(path: &Path, like: &ContentHash) -> Result<ContentHash> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut hasher = like.hasher(size);
    feed(&mut file, &mut hasher).map_err(|e| Error::io("read", path, e))?;
    Ok(hasher.finish())
}

/// Feeds everything `reader` yields into `hasher`, returning the byte count.
pub(crate) fn feed(reader: &mut impl Read, hasher: &mut StreamHasher) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}
