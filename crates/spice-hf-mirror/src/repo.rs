//! The mirror's data model: repositories, commits, refs and files, loaded from a directory or
//! built in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha1::Digest as _;

use crate::{Error, Result};

/// Who may read a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone.
    #[default]
    Public,
    /// Only the listed tokens; others are told the repository does not exist.
    Private,
    /// Only the listed tokens (granted access); others get `GatedRepo`.
    Gated,
}

/// Where a file's bytes live.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk (streamed, never loaded whole).
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(Arc<[u8]>),
    /// Listed by the upstream of a pull-through mirror, not fetched yet.
    Upstream,
}

/// One file of a commit.
#[derive(Debug, Clone)]
pub struct MirrorFile {
    /// Its bytes.
    pub source: Source,
    /// Size in bytes.
    pub size: u64,
    /// git blob sha1 (hex).
    pub git_oid: String,
    /// sha256 (hex) when the file is served as LFS (302 to the CDN listener).
    pub lfs_sha256: Option<String>,
}

impl MirrorFile {
    /// A file from bytes; `lfs` chooses whether it is served through the CDN listener.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>, lfs: bool) -> Self {
        let bytes: Arc<[u8]> = bytes.into();
        let mut git = sha1::Sha1::new();
        git.update(format!("blob {}\0", bytes.len()).as_bytes());
        git.update(&bytes);
        let lfs_sha256 = lfs.then(|| hex::encode(sha2::Sha256::digest(&bytes)));
        Self {
            size: bytes.len() as u64,
            git_oid: hex::encode(git.finalize()),
            lfs_sha256,
            source: Source::Bytes(bytes),
        }
    }

    /// A file on disk, hashed once now.
    pub fn from_path(path: &Path, lfs: bool) -> Result<Self> {
        let io = |e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let mut git = sha1::Sha1::new();
        git.update(format!("blob {size}\0").as_bytes());
        let mut sha = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            git.update(&buf[..n]);
            if lfs {
                sha.update(&buf[..n]);
            }
        }
        Ok(Self {
            source: Source::Path(path.to_path_buf()),
            size,
            git_oid: hex::encode(git.finalize()),
            lfs_sha256: lfs.then(|| hex::encode(sha.finalize())),
        })
    }

    /// The etag clients see: sha256 for LFS files, git sha1 otherwise.
    pub fn etag(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.git_oid)
    }
}

/// Whether a file of this name and size is stored as LFS on the Hub: weights and other
/// binaries, and anything of 10 MiB or more.
pub fn is_lfs_name(path: &str, size: u64) -> bool {
    const EXT: [&str; 12] = [
        "safetensors",
        "gguf",
        "bin",
        "pt",
        "pth",
        "ckpt",
        "onnx",
        "h5",
        "msgpack",
        "npz",
        "model",
        "zip",
    ];
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    size >= 10 * 1024 * 1024 || EXT.contains(&ext.as_str())
}

/// One commit: its id and files by path.
#[derive(Debug, Clone)]
pub struct Commit {
    /// 40-hex id.
    pub id: String,
    /// Files by repository path.
    pub files: BTreeMap<String, MirrorFile>,
}

impl Commit {
    /// A commit whose id is derived from its content (paths and blob ids).
    pub fn new(files: BTreeMap<String, MirrorFile>) -> Self {
        let mut h = sha1::Sha1::new();
        h.update(b"spice-hf-mirror commit\n");
        for (path, f) in &files {
            h.update(path.as_bytes());
            h.update(b"\0");
            h.update(f.git_oid.as_bytes());
            h.update(b"\n");
        }
        Self {
            id: hex::encode(h.finalize()),
            files,
        }
    }
}

/// One repository.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    /// `org/name` (or `name`).
    pub id: String,
    /// Who may read it.
    pub visibility: Visibility,
    /// Tokens allowed to read a private repository or granted a gated one.
    pub tokens: HashSet<String>,
    /// Commits by id.
    pub commits: HashMap<String, Commit>,
    /// Refs (`main`, tags, `refs/pr/1`) to commit ids.
    pub refs: BTreeMap<String, String>,
}

impl Repo {
    /// A public repository with no commits.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            ..Self::default()
        }
    }

    /// Adds a commit and points `reference` at it; returns the commit id.
    pub fn commit(&mut self, reference: &str, files: BTreeMap<String, MirrorFile>) -> String {
        let c = Commit::new(files);
        let id = c.id.clone();
        self.commits.insert(id.clone(), c);
        self.refs.insert(reference.to_string(), id.clone());
        id
    }

    /// Resolves a ref name, a full commit id or a unique prefix of at least 7 hex digits.
    pub fn resolve(&self, rev: &str) -> Option<&Commit> {
        if let Some(id) = self.refs.get(rev) {
            return self.commits.get(id);
        }
        let lower = rev.to_ascii_lowercase();
        if let Some(c) = self.commits.get(&lower) {
            return Some(c);
        }
        if lower.len() >= 7 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = self.commits.values().filter(|c| c.id.starts_with(&lower));
            let first = hits.next();
            if hits.next().is_none() {
                return first;
            }
        }
        None
    }
}

/// Access rules read from a JSON file: `{"repos": {"org/name": {"visibility": "gated",
/// "tokens": ["hf_..."]}}, "tokens": ["hf_other_valid_token"]}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Per-repository rules.
    #[serde(default)]
    pub repos: HashMap<String, RepoAccess>,
    /// Further tokens that are valid (known users) without access to anything restricted.
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// Access rule of one repository.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoAccess {
    /// Public, private or gated.
    #[serde(default)]
    pub visibility: Visibility,
    /// Tokens that may read it.
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl AccessConfig {
    /// Reads the JSON file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Loads every repository below `dir`: `dir/<org>/<name>/` (or `dir/<name>/` for ids without
/// an organisation) is the `main` branch; `dir/<org>/<name>@<branch>/` adds another branch.
/// Hidden files and directories (a leading `.`) are skipped.
///
/// The layout must be unambiguous, because access rules are per repository id: a folder that
/// holds files is a one-segment repository, so an access rule for `<folder>/<name>` below it is
/// an error (its files would be served inside the public `<folder>`), as is a rule for a
/// repository that is not there (a typo would leave the intended repository public). Symbolic
/// links are followed only while they stay inside `dir`; a link that leaves it, dangles or
/// loops is skipped with a warning, and files are served from their resolved paths.
pub fn load_dir(dir: &Path, access: &AccessConfig) -> Result<Vec<Repo>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| Error::Io { path, source: e }
    };
    let root = std::fs::canonicalize(dir).map_err(io(dir))?;
    let walk = Walk { root: &root };
    let mut repos: BTreeMap<String, Repo> = BTreeMap::new();
    let mut add = |id_and_ref: &str, path: &Path| -> Result<()> {
        let (id, reference) = id_and_ref.split_once('@').unwrap_or((id_and_ref, "main"));
        let repo = repos.entry(id.to_string()).or_insert_with(|| Repo::new(id));
        let mut files = BTreeMap::new();
        walk.collect(path, "", &mut files, &mut vec![path.to_path_buf()])?;
        repo.commit(reference, files);
        Ok(())
    };
    for (name, top) in walk.named_entries(&root)? {
        let Entry::Dir(top) = top else { continue };
        if name.starts_with('.') {
            continue;
        }
        let entries = walk.named_entries(&top)?;
        if let Some((stray, _)) = entries
            .iter()
            .find(|(n, e)| matches!(e, Entry::File(_)) && !n.starts_with('.'))
        {
            if let Some(rule) = access
                .repos
                .keys()
                .find(|id| id.split_once('/').is_some_and(|(org, _)| org == name))
            {
                return Err(Error::Layout {
                    path: top.clone(),
                    reason: format!(
                        "it holds the file {} so it is served as the repository `{name}`, \
                         yet the access file has a rule for `{rule}` below it, whose files \
                         would be served inside `{name}`; move the stray file out of the \
                         organisation folder",
                        stray
                    ),
                });
            }
            add(&name, &top)?;
            continue;
        }
        for (sub_name, sub) in entries {
            if let Entry::Dir(sub) = sub
                && !sub_name.starts_with('.')
            {
                add(&format!("{name}/{sub_name}"), &sub)?;
            }
        }
    }
    let mut out: Vec<Repo> = repos.into_values().collect();
    for repo in &mut out {
        if let Some(rule) = access.repos.get(&repo.id) {
            repo.visibility = rule.visibility;
            repo.tokens = rule.tokens.iter().cloned().collect();
        }
    }
    if let Some(missing) = access
        .repos
        .keys()
        .find(|id| !out.iter().any(|r| &r.id == *id))
    {
        return Err(Error::Layout {
            path: dir.to_path_buf(),
            reason: format!(
                "the access file has a rule for `{missing}`, which is not a repository here \
                 (expected the folder {}); fix the name or remove the rule",
                dir.join(missing).display()
            ),
        });
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A directory entry after symbolic links are resolved inside the served root.
enum Entry {
    /// A regular file, by its resolved path.
    File(PathBuf),
    /// A directory, by its resolved path.
    Dir(PathBuf),
}

/// Walks the served directory without leaving it.
struct Walk<'a> {
    root: &'a Path,
}

impl Walk<'_> {
    /// The entries of `dir` by name (a link keeps its own name), sorted, links resolved; links
    /// that leave the root, dangle or loop, and anything that is neither a file nor a
    /// directory, are skipped with a warning.
    fn named_entries(&self, dir: &Path) -> Result<Vec<(String, Entry)>> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for p in names {
            let name = file_name(&p);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let resolved = if meta.file_type().is_symlink() {
                match std::fs::canonicalize(&p) {
                    Ok(t) if t.starts_with(self.root) => t,
                    Ok(t) => {
                        tracing::warn!(link = %p.display(), target = %t.display(), "skipping a symbolic link that leaves the served directory");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(link = %p.display(), error = %e, "skipping a dangling or looping symbolic link");
                        continue;
                    }
                }
            } else {
                // The parent is already resolved, so this is the canonical path.
                p.clone()
            };
            match std::fs::metadata(&resolved) {
                Ok(m) if m.is_dir() => out.push((name, Entry::Dir(resolved))),
                Ok(m) if m.is_file() => out.push((name, Entry::File(resolved))),
                _ => {
                    tracing::warn!(path = %p.display(), "skipping what is neither a file nor a directory")
                }
            }
        }
        Ok(out)
    }

    /// Adds every file below `dir` to `out` under `prefix`; `stack` holds the resolved
    /// directories on the way down, so a link back up is a loop and is skipped.
    fn collect(
        &self,
        dir: &Path,
        prefix: &str,
        out: &mut BTreeMap<String, MirrorFile>,
        stack: &mut Vec<PathBuf>,
    ) -> Result<()> {
        for (name, entry) in self.named_entries(dir)? {
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match entry {
                Entry::Dir(d) if stack.contains(&d) => {
                    tracing::warn!(path = %rel, "skipping a symbolic link that loops back to a parent folder");
                }
                Entry::Dir(d) => {
                    stack.push(d.clone());
                    self.collect(&d, &rel, out, stack)?;
                    stack.pop();
                }
                Entry::File(f) => {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let lfs = is_lfs_name(&rel, size);
                    out.insert(rel, MirrorFile::from_path(&f, lfs)?);
                }
            }
        }
        Ok(())
    }
}
