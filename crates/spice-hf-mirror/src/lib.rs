//! A Hugging Face Hub-compatible HTTP server over a local directory.
//!
//! `spice-hf mirror serve DIR` serves `DIR/<org>/<name>/...` (and `DIR/<org>/<name>@<branch>/`
//! for other branches) with the Hub protocol clients use: the revision, tree, paths-info and
//! refs APIs, `resolve` with `ETag` / `X-Repo-Commit`, large files answered with a 302 to a
//! second listener (the CDN role) carrying `X-Linked-Etag` and `X-Linked-Size`, `Range` and
//! 416, `X-Error-Code` errors, and private or gated repositories guarded by tokens from a JSON
//! access file. The real `huggingface_hub` (`hf download`) and `hf-hub` download from it.
//!
//! With an [`Upstream`] ([`Mirror::pull_through`], `spice-hf mirror serve --upstream URL`) it
//! is a pull-through cache for a fleet: files are fetched from the upstream Hub on first request
//! and served from disk afterwards; each client's access is decided by the upstream with the
//! client's own token.
//!
//! It is also the fake Hub of spice-hf's tests (see `spice-hf-testkit`, which adds faults).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spice_hf_mirror::{AccessConfig, Mirror};
//! let mirror = Mirror::from_dir("/srv/models".as_ref(), &AccessConfig::default())?;
//! let running = mirror.spawn("127.0.0.1:8080".parse()?, None).await?;
//! println!("HF_ENDPOINT={}", running.hub_url());
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod repo;
mod server;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use repo::{
    AccessConfig, Commit, MirrorFile, Repo, RepoAccess, Source, Visibility, is_lfs_name, load_dir,
};
pub use server::MirrorState;
pub use spice_hf_listen::Limits;
pub use upstream::{Cached, Listing, Upstream, UpstreamError, UpstreamFile};

/// Errors of the mirror.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the served directory failed.
    #[error("could not read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The access file is malformed.
    #[error("access file {} is invalid: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// The served directory does not fit the layout unambiguously.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The folder (or the served directory).
        path: PathBuf,
        /// What does not fit, and what to do.
        reason: String,
    },
    /// The CDN signing key is too short to be a secret.
    #[error(
        "the CDN signing key has {len} bytes; use at least 32 random bytes (e.g. `head -c 32 /dev/urandom > key`)"
    )]
    WeakKey {
        /// Its length.
        len: usize,
    },
    /// A listener could not bind.
    #[error("could not listen on {addr}: {source}; pick another --addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The mirror's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mirror: repositories in memory (file bytes stay on disk) behind two routers.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    state: Arc<MirrorState>,
}

impl Mirror {
    /// An empty mirror.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves every repository below `dir`, with the access rules given.
    pub fn from_dir(dir: &Path, access: &AccessConfig) -> Result<Self> {
        let mirror = Self::new();
        for repo in load_dir(dir, access)? {
            tracing::info!(repo = %repo.id, refs = repo.refs.len(), "serving repository");
            mirror.add_repo(repo);
        }
        mirror.add_valid_tokens(access.tokens.iter().cloned());
        Ok(mirror)
    }

    /// Pull-through mode: every repository comes from `upstream`, which decides each client's
    /// access with the client's own token; files are fetched on first request and served from
    /// disk after that (see [`Upstream`]).
    pub fn pull_through(&self, upstream: std::sync::Arc<dyn Upstream>) {
        *self
            .state
            .pull_through
            .write()
            .unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(upstream::PullThrough::new(upstream)));
    }

    /// Adds (or replaces) a repository; its tokens become valid tokens.
    pub fn add_repo(&self, repo: Repo) {
        self.add_valid_tokens(repo.tokens.iter().cloned());
        self.state
            .repos
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.id.clone(), repo);
    }

    /// Marks tokens as valid (known users), without access to restricted repositories.
    pub fn add_valid_tokens(&self, tokens: impl IntoIterator<Item = String>) {
        self.state
            .valid_tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tokens);
    }

    /// Changes a repository in place (move a branch, add a commit) while serving.
    pub fn update_repo<T>(&self, id: &str, f: impl FnOnce(&mut Repo) -> T) -> Option<T> {
        self.state
            .repos
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
            .map(f)
    }

    /// Entries per tree page (default 1000).
    pub fn set_page_size(&self, n: usize) {
        self.state.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// Lifetime of presigned CDN URLs in seconds (default 3600; 0 makes every URL expired).
    pub fn set_cdn_ttl_secs(&self, secs: u64) {
        self.state.cdn_ttl_secs.store(secs, Ordering::Relaxed);
    }

    /// The base URL written into 302 `Location`s (the CDN listener's public address). Set it
    /// before [`Mirror::spawn`] when clients reach the CDN listener by another name (a mirror
    /// on `0.0.0.0` behind a DNS name or a proxy); otherwise `spawn` uses the bound address.
    pub fn set_cdn_base(&self, url: &str) {
        *self
            .state
            .cdn_base
            .write()
            .unwrap_or_else(|p| p.into_inner()) = url.trim_end_matches('/').to_string();
    }

    /// The hub's public base URL, written into the `Link` headers of paged listings. Set it
    /// before [`Mirror::spawn`] when clients reach the mirror by another name; otherwise `spawn`
    /// uses the bound address. The request's `Host` header is never used: it is the client's
    /// to choose.
    pub fn set_public_url(&self, url: &str) {
        *self
            .state
            .public_url
            .write()
            .unwrap_or_else(|p| p.into_inner()) = url.trim_end_matches('/').to_string();
    }

    /// The secret that signs CDN links (HMAC-SHA256). By default a random key per process;
    /// replicas that hand out each other's links share one (at least 32 bytes).
    pub fn set_cdn_key(&self, key: &[u8]) -> Result<()> {
        if key.len() < 32 {
            return Err(Error::WeakKey { len: key.len() });
        }
        *self
            .state
            .cdn_key
            .write()
            .unwrap_or_else(|p| p.into_inner()) = key.to_vec();
        Ok(())
    }

    /// What one client may hold on each listener (set before [`Mirror::spawn`]).
    pub fn set_limits(&self, limits: Limits) {
        *self.state.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// How many requests reached the CDN listener with an `Authorization` header.
    pub fn token_leaks(&self) -> usize {
        self.state.token_leaks.load(Ordering::Relaxed)
    }

    /// The hub router (API and `resolve`).
    pub fn hub_router(&self) -> axum::Router {
        server::hub_router(self.state.clone())
    }

    /// The CDN router (presigned blobs).
    pub fn cdn_router(&self) -> axum::Router {
        server::cdn_router(self.state.clone())
    }

    /// Binds the hub listener on `hub_addr` and the CDN listener on `cdn_addr` (an ephemeral
    /// port of the same IP when `None`), and serves both in the background. When the hub is
    /// on 127.0.0.1, the CDN is addressed as `localhost`, so clients see a different host as
    /// well as a different port.
    pub async fn spawn(
        self,
        hub_addr: SocketAddr,
        cdn_addr: Option<SocketAddr>,
    ) -> Result<RunningMirror> {
        let hub_l = tokio::net::TcpListener::bind(hub_addr)
            .await
            .map_err(|e| Error::Bind {
                addr: hub_addr,
                source: e,
            })?;
        let cdn_addr = cdn_addr.unwrap_or(SocketAddr::new(hub_addr.ip(), 0));
        let cdn_l = tokio::net::TcpListener::bind(cdn_addr)
            .await
            .map_err(|e| Error::Bind {
                addr: cdn_addr,
                source: e,
            })?;
        let (hub_router, cdn_router) = (self.hub_router(), self.cdn_router());
        self.spawn_on(hub_l, cdn_l, hub_router, cdn_router)
    }

    /// Serves the given routers (the test kit wraps them in a fault layer) on bound listeners.
    pub fn spawn_on(
        self,
        hub: tokio::net::TcpListener,
        cdn: tokio::net::TcpListener,
        hub_router: axum::Router,
        cdn_router: axum::Router,
    ) -> Result<RunningMirror> {
        let local = |l: &tokio::net::TcpListener| {
            l.local_addr().map_err(|e| Error::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source: e,
            })
        };
        let (hub_addr, cdn_addr) = (local(&hub)?, local(&cdn)?);
        let cdn_host = if hub_addr.ip().is_loopback() && hub_addr.is_ipv4() {
            "localhost".to_string()
        } else {
            cdn_addr.ip().to_string()
        };
        let bound = |url: &std::sync::RwLock<String>, default: String| {
            let mut url = url.write().unwrap_or_else(|p| p.into_inner());
            if url.is_empty() {
                *url = default;
            }
            url.clone()
        };
        let cdn_url = bound(
            &self.state.cdn_base,
            format!("http://{cdn_host}:{}", cdn_addr.port()),
        );
        bound(&self.state.public_url, format!("http://{hub_addr}"));
        let limits = *self.state.limits.read().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let serve = |l: tokio::net::TcpListener,
                     r: axum::Router,
                     mut rx: tokio::sync::watch::Receiver<bool>| {
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|v| *v).await;
                };
                if let Err(e) = spice_hf_listen::serve(l, r, limits, shutdown).await {
                    tracing::error!(error = %e, "mirror listener failed");
                }
            })
        };
        let tasks = vec![
            serve(hub, hub_router, rx.clone()),
            serve(cdn, cdn_router, rx),
        ];
        Ok(RunningMirror {
            mirror: self,
            hub_url: format!("http://{hub_addr}"),
            cdn_url,
            shutdown: tx,
            tasks,
        })
    }
}

/// A mirror serving in the background; stops when dropped or on [`RunningMirror::stop`].
#[derive(Debug)]
pub struct RunningMirror {
    mirror: Mirror,
    hub_url: String,
    cdn_url: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningMirror {
    /// The hub URL (`HF_ENDPOINT`).
    pub fn hub_url(&self) -> &str {
        &self.hub_url
    }

    /// The CDN URL that 302s point to.
    pub fn cdn_url(&self) -> &str {
        &self.cdn_url
    }

    /// The mirror (to change repositories while serving).
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Stops both listeners and waits for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Serves until `signal` resolves, then stops.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}

impl Drop for RunningMirror {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
