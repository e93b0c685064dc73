//! Pull-through mode: the mirror in front of an upstream Hub. The upstream is a trait this
//! crate defines and the binary implements (over the verified download path of its own client),
//! so the mirror keeps not depending on a Hub client.
//!
//! Every request that names a repository revision is first checked with the upstream, with the
//! client's own token: the upstream's answer (a listing, or a refusal with its status and error
//! code) decides, and is kept for a short while per repository, revision and token digest (the
//! token itself is never stored). A file is fetched from the upstream the first time a client
//! asks for it (one fetch however many clients ask at once) and served from disk afterwards.
//! When the upstream cannot be reached, what is cached is served to clients the upstream let
//! in recently and, for repositories it served without a token, to anyone; others get 503.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sha2::Digest as _;

/// One file of a revision as the upstream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFile {
    /// Path in the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 (hex) of an LFS file, served through the CDN listener.
    pub lfs_sha256: Option<String>,
    /// git blob sha1 (hex) of a file stored in git.
    pub git_oid: Option<String>,
}

/// A revision as the upstream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The 40-hex commit the revision resolved to.
    pub commit: String,
    /// Its files.
    pub files: Vec<UpstreamFile>,
}

/// What is cached of a revision, read with no network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The revision's last listing.
    pub listing: Listing,
    /// Whether the upstream served it without a token (so anyone may read it).
    pub public: bool,
}

/// Why the upstream did not answer with a listing or a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The upstream refused this client (its HTTP status and Hub error code, passed on).
    #[error("the upstream refused: {message}")]
    Refused {
        /// 401, 403 or 404.
        status: u16,
        /// `GatedRepo`, `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, …
        code: Option<String>,
        /// The message for the client.
        message: String,
    },
    /// The upstream could not be reached or failed (network, 5xx, a download that did not
    /// verify).
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
}

/// The Hub behind a pull-through mirror.
pub trait Upstream: Send + Sync + std::fmt::Debug + 'static {
    /// Asks the upstream for `repo` at `revision` with the client's `token`: the access check
    /// and the listing in one.
    fn resolve<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Listing, UpstreamError>>;

    /// What is cached of `repo` at `revision`, without the network.
    fn cached(&self, repo: &str, revision: &str) -> Option<Cached>;

    /// The file `path` of `repo` at `revision` on disk, fetched (verified against the
    /// listing) when it is not cached yet, with the client's `token`.
    fn fetch<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        path: &'a str,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PathBuf, UpstreamError>>;
}

/// How long an access decision of the upstream is reused.
pub(crate) const DECISION_TTL: Duration = Duration::from_secs(60);
/// How long a client the upstream let in may still read what is cached while the upstream is
/// down.
pub(crate) const OFFLINE_GRACE: Duration = Duration::from_secs(600);

/// Most access decisions kept at once.
const MAX_DECISIONS: usize = 100_000;

/// The pull-through side of a mirror's state.
#[derive(Debug)]
pub(crate) struct PullThrough {
    pub(crate) upstream: Arc<dyn Upstream>,
    /// Access decisions by (repo, revision, token digest).
    decisions: Mutex<HashMap<DecisionKey, Decision>>,
    /// One lock per file (repo, revision, path) being fetched, so concurrent clients cause one
    /// upstream fetch.
    fetching: Mutex<HashMap<(String, String, String), FetchLock>>,
}

/// Repository, revision, token digest.
type DecisionKey = (String, String, [u8; 32]);

/// When the upstream decided, and its refusal if it refused.
type Decision = (Instant, Option<UpstreamError>);

/// Held while one file is fetched.
type FetchLock = Arc<tokio::sync::Mutex<()>>;

/// A token's digest (the empty string's for no token): what decisions are keyed by.
fn digest(token: Option<&str>) -> [u8; 32] {
    sha2::Sha256::digest(token.unwrap_or("").as_bytes()).into()
}

impl PullThrough {
    pub(crate) fn new(upstream: Arc<dyn Upstream>) -> Self {
        Self {
            upstream,
            decisions: Mutex::default(),
            fetching: Mutex::default(),
        }
    }

    /// The decision for this client, if one is younger than `within`.
    fn decision(
        &self,
        repo: &str,
        revision: &str,
        token: Option<&str>,
        within: Duration,
    ) -> Option<Option<UpstreamError>> {
        let key = (repo.to_string(), revision.to_string(), digest(token));
        let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        decisions
            .get(&key)
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(_, d)| d.clone())
    }

    fn decide(&self, repo: &str, revision: &str, token: Option<&str>, d: Option<UpstreamError>) {
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        // Old decisions go first, so the map stays as small as the traffic of the last minutes;
        // a flood of distinct tokens cannot grow it past MAX_DECISIONS (it only costs the
        // flood its own cache hits).
        decisions.retain(|_, (at, _)| at.elapsed() < OFFLINE_GRACE);
        if decisions.len() >= MAX_DECISIONS {
            decisions.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
        }
        if decisions.len() >= MAX_DECISIONS {
            return;
        }
        decisions.insert(
            (repo.to_string(), revision.to_string(), digest(token)),
            (Instant::now(), d),
        );
    }

    /// Checks this client's access to `repo` at `revision` and returns the listing to serve:
    /// the upstream's now, or a recent decision with the cached listing.
    pub(crate) async fn admit(
        &self,
        repo: &str,
        revision: &str,
        token: Option<&str>,
    ) -> Result<Listing, UpstreamError> {
        if let Some(decision) = self.decision(repo, revision, token, DECISION_TTL) {
            if let Some(refused) = decision {
                return Err(refused);
            }
            if let Some(c) = self.upstream.cached(repo, revision) {
                return Ok(c.listing);
            }
        }
        match self.upstream.resolve(repo, revision, token).await {
            Ok(listing) => {
                self.decide(repo, revision, token, None);
                Ok(listing)
            }
            Err(refused @ UpstreamError::Refused { .. }) => {
                self.decide(repo, revision, token, Some(refused.clone()));
                Err(refused)
            }
            Err(UpstreamError::Unavailable(why)) => {
                let cached = self.upstream.cached(repo, revision);
                let let_in = matches!(
                    self.decision(repo, revision, token, OFFLINE_GRACE),
                    Some(None)
                );
                match cached {
                    Some(c) if c.public || let_in => {
                        tracing::warn!(repo, revision, reason = %why, "upstream unavailable; serving the cached listing");
                        Ok(c.listing)
                    }
                    _ => Err(UpstreamError::Unavailable(why)),
                }
            }
        }
    }

    /// The file on disk: fetched once however many clients ask at once (`present` tells
    /// whether another fetch put it in place meanwhile).
    pub(crate) async fn file(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        token: Option<&str>,
        present: impl Fn() -> Option<PathBuf>,
    ) -> Result<PathBuf, UpstreamError> {
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
            fetching
                .entry((repo.to_string(), revision.to_string(), path.to_string()))
                .or_default()
                .clone()
        };
        let turn = lock.lock().await;
        if let Some(p) = present() {
            return Ok(p);
        }
        let fetched = self.upstream.fetch(repo, revision, path, token).await;
        // Whoever waits holds the lock's Arc and will find the file present; later requests
        // need no lock for a file in place.
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(repo.to_string(), revision.to_string(), path.to_string()));
        drop(turn);
        fetched
    }
}
