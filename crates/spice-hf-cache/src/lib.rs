//! spice-hf's verified on-disk model cache.
//!
//! The lowest layer of spice-hf: it knows the on-disk layout, writes files atomically and
//! verified, keeps a manifest per revision and serialises processes with a lock file. It does
//! **no network I/O** (the hub client streams bytes into it) and knows nothing of Burn.
//!
//! Layout: `<root>/<name>/<revision>/`, where `<root>` is `SPICE_MODELS_DIR` or
//! `~/.spice/models`, `<name>` is the repository id with `/` replaced by `--`, and `<revision>`
//! the requested revision (`main`, a tag, a commit, `refs/pr/1`). Each revision directory holds
//! the model files, a manifest ([`MANIFEST_FILE`]) and a lock file ([`LOCK_FILE`]).
//!
//! ```
//! # fn main() -> spice_hf_cache::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let cache = spice_hf_cache::Cache::new(dir.path());
//! let rev = cache.revision("HuggingFaceTB/SmolLM2-135M", "main")?;
//! assert!(rev.path().ends_with("HuggingFaceTB--SmolLM2-135M/main"));
//! // Server-supplied names are checked before anything is written.
//! assert!(rev.file_path("../../etc/passwd").is_err());
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod error;
mod hash;
mod lock;
mod manifest;
mod part;
mod path;
mod ranged;
mod reserve;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::Error;
pub use hash::{ContentHash, StreamHasher, hash_file};
pub use lock::{LOCK_FILE, RevisionLock};
pub use manifest::{MANIFEST_FILE, Manifest, ManifestEntry, Stamp};
pub use part::{Expected, PART_SUFFIX, PartFile, part_path};
pub use path::{MAX_COMPONENT_BYTES, checked_join, validate_relative, validate_repo_id};
pub use ranged::{RANGED_SUFFIX, RangedPart};
pub use reserve::{RESERVATIONS_DIR, Reservation};

/// The cache's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Environment variable that overrides the cache root.
pub const MODELS_DIR_ENV: &str = "SPICE_MODELS_DIR";

/// The model cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default cache: `SPICE_MODELS_DIR`, else `~/.spice/models`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::new(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(Error::NoCacheDir)?;
        Ok(Self::new(PathBuf::from(home).join(".spice").join("models")))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory name of a repository: its id with `/` replaced by `--`.
    pub fn repo_dir_name(repo: &str) -> String {
        repo.replace('/', "--")
    }

    /// The directory of one revision of a repository (not created).
    pub fn revision(&self, repo: &str, revision: &str) -> Result<RevisionDir> {
        validate_repo_id(repo)?;
        let name = Self::repo_dir_name(repo);
        let model_dir = checked_join(&self.root, &name)?;
        // `refs/pr/N` lives in `refs/pr/N/`: a revision named `refs` would own those folders
        // (its `cache verify` would list them as extra files, its `cache rm` delete them).
        if revision.eq_ignore_ascii_case("refs") {
            return Err(Error::UnsafePath {
                path: revision.to_string(),
                reason: "a revision named `refs` would share its cache folder with `refs/pr/N`; use its commit id instead".into(),
            });
        }
        let dir = checked_join(&model_dir, revision)?;
        Ok(RevisionDir {
            root: self.root.clone(),
            dir,
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// Every revision directory that has a manifest, sorted by repository and revision.
    pub fn list(&self) -> Result<Vec<CachedRevision>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", &self.root, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                find_manifests(&entry.path(), &mut out, 0)?;
            }
        }
        out.sort_by(|a, b| {
            (&a.manifest.repo, &a.manifest.revision).cmp(&(&b.manifest.repo, &b.manifest.revision))
        });
        Ok(out)
    }

    /// Removes a repository's revision (or all its revisions); returns the bytes freed.
    pub fn remove(&self, repo: &str, revision: Option<&str>) -> Result<u64> {
        validate_repo_id(repo)?;
        let target = match revision {
            Some(rev) => self.revision(repo, rev)?.dir,
            None => checked_join(&self.root, &Self::repo_dir_name(repo))?,
        };
        if !target.exists() {
            return Ok(0);
        }
        let freed = dir_size(&target);
        std::fs::remove_dir_all(&target).map_err(|e| Error::io("remove", &target, e))?;
        Ok(freed)
    }
}

fn find_manifests(dir: &Path, out: &mut Vec<CachedRevision>, depth: usize) -> Result<()> {
    if depth > 4 {
        return Ok(());
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    if let Some(manifest) = Manifest::load(&manifest_path)? {
        let size = manifest.files.values().map(|e| e.size).sum();
        out.push(CachedRevision {
            dir: dir.to_path_buf(),
            manifest,
            size,
        });
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_manifests(&entry.path(), out, depth + 1)?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// One cached revision, as [`Cache::list`] reports it.
#[derive(Debug, Clone)]
pub struct CachedRevision {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Total size of the files its manifest lists.
    pub size: u64,
}

/// The state of one wanted file in a revision directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Present and matching its manifest entry.
    Cached,
    /// Present without a manifest entry (placed by hand) and its size and hash match: adopted.
    Adopted,
    /// Must be downloaded; `partial` is the length of a resumable `.part` file.
    Missing {
        /// Bytes already in a `.part` file.
        partial: u64,
    },
}

/// One revision directory of one repository.
#[derive(Debug, Clone)]
pub struct RevisionDir {
    root: PathBuf,
    dir: PathBuf,
    repo: String,
    revision: String,
}

impl RevisionDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Repository id.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The requested revision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Creates the directory.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))
    }

    /// The checked path of a repository file in this revision. Names the cache uses itself
    /// (the manifest, the lock, `.part` files) are refused too.
    pub fn file_path(&self, rel: &str) -> Result<PathBuf> {
        let reserved = rel == MANIFEST_FILE
            || rel == LOCK_FILE
            || rel.ends_with(PART_SUFFIX)
            || rel.ends_with(RANGED_SUFFIX);
        if reserved {
            return Err(Error::UnsafePath {
                path: rel.escape_debug().to_string(),
                reason: "the name is reserved for the cache's own files".to_string(),
            });
        }
        let path = checked_join(&self.dir, rel)?;
        // Nothing the cache writes may go through a symbolic link planted in it: the cache
        // never creates one, so any link on the way is refused.
        let mut on_the_way = self.dir.clone();
        for part in rel.split('/') {
            on_the_way.push(part);
            match std::fs::symlink_metadata(&on_the_way) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::UnsafePath {
                        path: rel.escape_debug().to_string(),
                        reason: format!(
                            "{} is a symbolic link, which could send the cache's writes elsewhere; remove it",
                            on_the_way.display()
                        ),
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(path)
    }

    /// Path of the manifest.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// Reads the manifest, if any.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        Manifest::load(&self.manifest_path())
    }

    /// Writes the manifest atomically.
    pub fn save_manifest(&self, manifest: &Manifest) -> Result<()> {
        self.create()?;
        manifest.save(&self.manifest_path())
    }

    /// Takes the revision lock (blocking; see [`RevisionLock::acquire`]).
    pub fn lock(&self, bound: Option<Duration>) -> Result<RevisionLock> {
        self.create()?;
        RevisionLock::acquire(&self.dir.join(LOCK_FILE), bound)
    }

    /// Whether `rel` is cached as `expected`. A file without a manifest entry whose size and
    /// hash match is adopted: the entry is added to `manifest` (the caller saves it).
    pub fn state(
        &self,
        rel: &str,
        expected: &Expected,
        manifest: &mut Manifest,
    ) -> Result<FileState> {
        let path = self.file_path(rel)?;
        let on_disk = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        if let Some(len) = on_disk {
            if let Some(entry) = manifest.files.get_mut(rel) {
                if entry.size == expected.size && entry.hash == expected.hash && len == entry.size {
                    // A hit proves its content: the file is unchanged since it was verified
                    // (same stamp), or it hashes to the expected value now.
                    let now = Stamp::of(&path);
                    if now.is_some() && entry.stamp == now {
                        return Ok(FileState::Cached);
                    }
                    if hash_file(&path, &expected.hash)? == expected.hash {
                        entry.stamp = now;
                        return Ok(FileState::Cached);
                    }
                    tracing::warn!(
                        file = rel,
                        "the cached file changed on disk and no longer matches its hash; downloading it again"
                    );
                    manifest.files.remove(rel);
                }
            } else if len == expected.size && hash_file(&path, &expected.hash)? == expected.hash {
                tracing::info!(
                    file = rel,
                    "adopting a file already present in the cache directory"
                );
                manifest.files.insert(
                    rel.to_string(),
                    ManifestEntry {
                        size: expected.size,
                        hash: expected.hash.clone(),
                        etag: None,
                        stamp: Stamp::of(&path),
                    },
                );
                return Ok(FileState::Adopted);
            }
        }
        let partial = std::fs::metadata(part_path(&path))
            .map(|m| m.len())
            .unwrap_or(0);
        let partial = if partial <= expected.size { partial } else { 0 };
        Ok(FileState::Missing { partial })
    }

    /// Reserves `needed` bytes of the cache's free space for a pull that will write `files`
    /// (paths relative to this revision, and sizes) until the reservation is dropped. Fails with
    /// [`Error::NoSpace`] when they do not fit beside what other pulls into the same cache, in
    /// this process or another, still have to write.
    pub fn reserve_space(&self, files: &[(&str, u64)], needed: u64) -> Result<Reservation> {
        self.create()?;
        let planned = files
            .iter()
            .map(|(rel, size)| Ok((self.file_path(rel)?, *size)))
            .collect::<Result<Vec<_>>>()?;
        reserve::reserve(&self.root, &planned, needed)
    }

    /// Rehashes every file in the manifest and lists missing, corrupt and extra files.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let Some(manifest) = self.manifest()? else {
            return Ok(report);
        };
        for (rel, entry) in &manifest.files {
            let path = self.file_path(rel)?;
            match std::fs::metadata(&path) {
                Err(_) => report.missing.push(rel.clone()),
                Ok(m) if m.len() != entry.size => report.corrupt.push(rel.clone()),
                Ok(_) => {
                    if hash_file(&path, &entry.hash)? == entry.hash {
                        report.ok.push(rel.clone());
                    } else {
                        report.corrupt.push(rel.clone());
                    }
                }
            }
        }
        let mut present = Vec::new();
        collect_files(&self.dir, "", &mut present);
        for rel in present {
            let internal = rel == MANIFEST_FILE
                || rel == LOCK_FILE
                || rel.starts_with(".spice-manifest.json.tmp");
            if !internal && !manifest.files.contains_key(&rel) {
                report.extra.push(rel);
            }
        }
        Ok(report)
    }
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&entry.path(), &rel, out),
            Ok(_) => out.push(rel),
            Err(_) => {}
        }
    }
}

/// What [`RevisionDir::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files whose size and hash match.
    pub ok: Vec<String>,
    /// Files in the manifest but not on disk.
    pub missing: Vec<String>,
    /// Files whose size or hash differ from the manifest.
    pub corrupt: Vec<String>,
    /// Files on disk not in the manifest (including `.part` files).
    pub extra: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is missing or corrupt.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}
