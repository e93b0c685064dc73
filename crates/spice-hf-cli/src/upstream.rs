//! `spice-hf mirror serve --upstream URL`: the mirror's [`Upstream`] over our Hub client and a
//! verified cache below the mirror's directory (`DIR/.pull-through`). Listing and access go to
//! the upstream with the client's own token (never the mirror's environment, never stored);
//! files come through the client's verified download path (resume, size and hash, the
//! revision lock); what is cached is read from the cache's manifests when the upstream is down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use spice_hf_cache::{Cache, ContentHash};
use spice_hf_hub::{HfToken, HubClient, HubConfig, ModelRef, NoProgress, PullOptions, Selection};
use spice_hf_mirror::{Cached, Listing, Upstream, UpstreamError, UpstreamFile};

/// The upstream Hub at `endpoint`, with its files cached below `root`.
#[derive(Debug)]
pub(crate) struct HubUpstream {
    endpoint: String,
    cache: Cache,
    /// Repositories the upstream served without a token (`public.json` in the cache root).
    public: Mutex<BTreeSet<String>>,
    /// The commit each branch or tag last resolved to, by repository (`refs.json`): files are
    /// cached by commit, and a client asking for `main` while the upstream is down gets the
    /// commit it was last shown.
    refs: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

/// Reads a JSON file of the cache root, empty when missing or unreadable.
fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes `value` to `path` through a temporary file and a rename.
fn write_json(path: &Path, value: &impl serde::Serialize) {
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "could not record the pull-through state");
    }
}

impl HubUpstream {
    pub(crate) fn new(endpoint: &str, root: &Path) -> anyhow::Result<Self> {
        // Checked now: a bad URL is a start-up error, not one per request.
        HubClient::new(HubConfig {
            endpoint: endpoint.to_string(),
            ..HubConfig::default()
        })?;
        std::fs::create_dir_all(root)?;
        Ok(Self {
            endpoint: endpoint.to_string(),
            cache: Cache::new(root),
            public: Mutex::new(read_json(&root.join("public.json"))),
            refs: Mutex::new(read_json(&root.join("refs.json"))),
        })
    }

    /// A client for one request, with exactly the client's token. A listing (a client waits
    /// on it, and a cached copy may stand in) retries twice; a download keeps the full policy.
    fn client(&self, token: Option<&str>, listing: bool) -> Result<HubClient, UpstreamError> {
        let token = token
            .map(HfToken::new)
            .transpose()
            .map_err(|_| refused(401, None, "Invalid credentials in Authorization header"))?;
        let mut retry = spice_hf_hub::RetryPolicy::default();
        if listing {
            retry.max_retries = 2;
        }
        HubClient::new(HubConfig {
            endpoint: self.endpoint.clone(),
            token,
            retry,
            ..HubConfig::default()
        })
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))
    }

    fn mark_public(&self, repo: &str) {
        let mut public = self.public.lock().unwrap_or_else(|p| p.into_inner());
        if public.insert(repo.to_string()) {
            write_json(&self.cache.root().join("public.json"), &*public);
        }
    }

    fn record_ref(&self, repo: &str, revision: &str, commit: &str) {
        if revision == commit {
            return;
        }
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let known = refs.entry(repo.to_string()).or_default();
        if known.get(revision).map(String::as_str) != Some(commit) {
            known.insert(revision.to_string(), commit.to_string());
            write_json(&self.cache.root().join("refs.json"), &*refs);
        }
    }

    /// The commit `revision` stands for: itself when a commit, else what it last resolved to.
    fn commit_of(&self, repo: &str, revision: &str) -> String {
        if spice_hf_hub::is_commit(revision) {
            return revision.to_string();
        }
        let refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        refs.get(repo)
            .and_then(|r| r.get(revision))
            .cloned()
            .unwrap_or_else(|| revision.to_string())
    }

    async fn listing(
        &self,
        repo: &str,
        revision: &str,
        token: Option<&str>,
    ) -> Result<Listing, UpstreamError> {
        let client = self.client(token, true)?;
        let commit = client
            .resolve_commit(repo, revision)
            .await
            .map_err(upstream_error)?;
        let files = client
            .list_files(repo, &commit)
            .await
            .map_err(upstream_error)?;
        if token.is_none() {
            self.mark_public(repo);
        }
        self.record_ref(repo, revision, &commit);
        Ok(Listing {
            commit,
            files: files
                .into_iter()
                .map(|f| file(f.path, f.size, f.hash))
                .collect(),
        })
    }

    async fn pulled(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<PathBuf, UpstreamError> {
        let client = self.client(token, false)?;
        // Cached by commit, whatever name the client used.
        let commit = self.commit_of(repo, revision);
        let model = ModelRef::parse(&format!("{repo}@{commit}"))
            .map_err(|e| refused(400, None, &e.to_string()))?;
        let opts = PullOptions {
            selection: Selection {
                include: vec![globset::escape(path)],
                exclude: vec![],
                quant: None,
            },
            ..PullOptions::default()
        };
        match client.pull(&self.cache, &model, &opts, &NoProgress).await {
            Ok(report) => Ok(report.dir.join(path)),
            Err(e) => {
                let e = upstream_error(e);
                // Down, but verified earlier: serve the copy.
                match (&e, self.cached_file(repo, &commit, path)) {
                    (UpstreamError::Unavailable(_), Some(p)) => Ok(p),
                    _ => Err(e),
                }
            }
        }
    }

    fn cached_file(&self, repo: &str, commit: &str, path: &str) -> Option<PathBuf> {
        let dir = self.cache.revision(repo, commit).ok()?;
        let manifest = dir.manifest().ok()??;
        manifest.files.contains_key(path).then_some(())?;
        dir.file_path(path).ok()
    }
}

fn file(path: String, size: u64, hash: ContentHash) -> UpstreamFile {
    let (lfs_sha256, git_oid) = match hash {
        ContentHash::Sha256(h) => (Some(h), None),
        ContentHash::GitSha1(h) => (None, Some(h)),
    };
    UpstreamFile {
        path,
        size,
        lfs_sha256,
        git_oid,
    }
}

fn refused(status: u16, code: Option<&str>, message: &str) -> UpstreamError {
    UpstreamError::Refused {
        status,
        code: code.map(str::to_string),
        message: message.to_string(),
    }
}

/// The upstream's refusals pass on with their status and Hub error code; everything else
/// (network, 5xx, a download that does not verify, the cache) means it cannot serve now.
fn upstream_error(e: spice_hf_hub::Error) -> UpstreamError {
    use spice_hf_hub::Error as E;
    let message = e.to_string();
    match e {
        E::RepoNotFound { authenticated, .. } => refused(
            if authenticated { 404 } else { 401 },
            Some("RepoNotFound"),
            &message,
        ),
        E::Gated { authenticated, .. } => refused(
            if authenticated { 403 } else { 401 },
            Some("GatedRepo"),
            &message,
        ),
        E::InvalidToken { .. } => refused(401, None, &message),
        E::Forbidden { .. } => refused(403, None, &message),
        E::RevisionNotFound { .. } => refused(404, Some("RevisionNotFound"), &message),
        E::EntryNotFound { .. } => refused(404, Some("EntryNotFound"), &message),
        E::InvalidRef { .. } | E::InvalidRevision { .. } | E::Selection(_) => {
            refused(400, None, &message)
        }
        E::Http { status, .. } if (400..500).contains(&status) => refused(status, None, &message),
        _ => UpstreamError::Unavailable(message),
    }
}

impl Upstream for HubUpstream {
    fn resolve<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, UpstreamError>> {
        self.listing(repo, revision, token).boxed()
    }

    fn cached(&self, repo: &str, revision: &str) -> Option<Cached> {
        let commit = self.commit_of(repo, revision);
        let manifest = self.cache.revision(repo, &commit).ok()?.manifest().ok()??;
        let public = self
            .public
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(repo);
        Some(Cached {
            listing: Listing {
                commit: manifest.commit,
                files: manifest
                    .tree
                    .into_iter()
                    .map(|(path, e)| file(path, e.size, e.hash))
                    .collect(),
            },
            public,
        })
    }

    fn fetch<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        path: &'a str,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PathBuf, UpstreamError>> {
        self.pulled(repo, revision, path, token).boxed()
    }
}
