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

/// Writes `data` to `path` through a sibling temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}
