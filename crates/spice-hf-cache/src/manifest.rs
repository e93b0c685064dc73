//! The per-revision manifest: resolved commit and, per file, size, content hash and etag.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ContentHash, Error, Result};

/// File name of the manifest inside a revision directory.
pub const MANIFEST_FILE: &str = ".spice-manifest.json";

/// What the cache knows about one revision directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Repository id (`org/name`).
    pub repo: String,
    /// The revision as requested (`main`, a tag, a commit).
    pub revision: String,
    /// The 40-hex commit the revision resolved to.
    pub commit: String,
    /// Files that are complete and verified, by path relative to the revision directory.
    pub files: BTreeMap<String, ManifestEntry>,
    /// Every file of the commit as the hub listed it (size and hash), so a pinned commit can
    /// be served from the cache without asking the network what it contains.
    #[serde(default)]
    pub tree: BTreeMap<String, ManifestEntry>,
}

/// One verified file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Size in bytes.
    pub size: u64,
    /// Content hash (sha256 for LFS files, git blob sha1 otherwise).
    pub hash: ContentHash,
    /// The etag the server gave, if any (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The file's identity when it was last verified; a hit must match it, or the file is
    /// hashed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// What the file system says of a file, recorded when its content was verified: size,
/// modification and change times, inode and device. Any write to the file changes its change
/// time (which `touch` cannot set back), so a file whose stamp still matches has not been
/// written since; one that does not match is hashed before it counts as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Change time, nanoseconds since the epoch (0 where the platform has none).
    #[serde(default)]
    pub ctime_ns: i128,
    /// Inode number (0 where the platform has none).
    #[serde(default)]
    pub ino: u64,
    /// Device number (0 where the platform has none).
    #[serde(default)]
    pub dev: u64,
}

impl Stamp {
    /// The stamp of the file at `path` now; `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        #[cfg(unix)]
        let (ctime_ns, ino, dev) = {
            use std::os::unix::fs::MetadataExt as _;
            (
                i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
                m.ino(),
                m.dev(),
            )
        };
        #[cfg(not(unix))]
        let (ctime_ns, ino, dev) = (0, 0, 0);
        Some(Self {
            len: m.len(),
            mtime_ns,
            ctime_ns,
            ino,
            dev,
        })
    }
}

impl Manifest {
    /// An empty manifest for a revision.
    pub fn new(repo: &str, revision: &str, commit: &str) -> Self {
        Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit: commit.to_string(),
            files: BTreeMap::new(),
            tree: BTreeMap::new(),
        }
    }

    /// Reads a manifest; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Manifest {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Writes the manifest atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &json)
    }
}

/// The sibling temporary file `write_atomic` uses: `NAME.tmp.PID` (the whole name kept, so
/// `cache verify` knows `.spice-manifest.json.tmp.*` as the cache's own).
pub(crate) fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    std::path::PathBuf::from(name)
}

/// Writes `data` to `path` through a sibling temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}
