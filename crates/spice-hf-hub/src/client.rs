//! The HTTP client: timeouts, the retry loop, manual redirects that keep the token on the hub
//! origin only, and the Hub API calls (revision, tree, resolve).

use std::time::Duration;

use futures_util::StreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use spice_hf_cache::{ContentHash, Expected, PartFile, RangedPart};
use url::Url;

use crate::retry::parse_retry_after;
use crate::{Error, HfToken, Result, RetryPolicy};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings of a [`HubClient`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Hub endpoint (`HF_ENDPOINT`), default the public Hub.
    pub endpoint: String,
    /// Token sent to the hub origin only.
    pub token: Option<HfToken>,
    /// No network at all (`HF_HUB_OFFLINE`): serve from the cache or fail.
    pub offline: bool,
    /// Retry policy for every request and body read.
    pub retry: RetryPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to receiving response headers.
    pub header_timeout: Duration,
    /// Longest pause allowed between two reads of a body (not a total time).
    pub read_timeout: Duration,
    /// Files downloaded at once.
    pub max_parallel: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            offline: false,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_parallel: 8,
        }
    }
}

impl HubConfig {
    /// Defaults, then `HF_ENDPOINT`, `HF_HUB_OFFLINE` and the token chain of
    /// [`resolve_token`](crate::resolve_token) (with `explicit_token` first).
    pub fn from_env(explicit_token: Option<&str>) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok();
        let mut cfg = Self::default();
        if let Some(ep) = env("HF_ENDPOINT").filter(|e| !e.trim().is_empty()) {
            cfg.endpoint = ep.trim().to_string();
        }
        cfg.offline = crate::token::env_truthy(env("HF_HUB_OFFLINE").as_deref());
        cfg.token = crate::resolve_token(explicit_token, env)?.map(|(t, _)| t);
        Ok(cfg)
    }
}

/// A Hub client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    endpoint: Url,
    base: String,
    config: HubConfig,
}

/// One file of a commit, as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path in the repository (validated: safe to join below a directory).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Content hash: sha256 for LFS files, git blob sha1 otherwise.
    pub hash: ContentHash,
}

impl RemoteFile {
    /// What the downloaded bytes must be.
    pub fn expected(&self) -> Expected {
        Expected {
            size: self.size,
            hash: self.hash.clone(),
        }
    }
}

/// Why an attempt failed, and whether trying again can help.
pub(crate) struct AttemptError {
    pub(crate) error: Error,
    pub(crate) retry: bool,
    pub(crate) retry_after: Option<Duration>,
}

impl AttemptError {
    fn fatal(error: Error) -> Self {
        Self {
            error,
            retry: false,
            retry_after: None,
        }
    }
    fn transient(error: Error) -> Self {
        Self {
            error,
            retry: true,
            retry_after: None,
        }
    }
}

impl From<spice_hf_cache::Error> for AttemptError {
    fn from(e: spice_hf_cache::Error) -> Self {
        Self::fatal(e.into())
    }
}

/// Walks the retry schedule.
pub(crate) struct Retrier<'a> {
    policy: &'a RetryPolicy,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    pub(crate) attempts: usize,
}

impl<'a> Retrier<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            delays: policy.delays(),
            attempts: 0,
        }
    }

    /// After a failed attempt: `Ok(())` once the delay has been slept, or the final error.
    /// An attempt that made progress (bytes written) resets the schedule.
    pub(crate) async fn after(
        &mut self,
        what: &str,
        e: AttemptError,
        progressed: bool,
    ) -> Result<()> {
        self.attempts += 1;
        if !e.retry {
            return Err(e.error);
        }
        if progressed {
            self.delays = self.policy.delays();
        }
        let Some(mut delay) = self.delays.next() else {
            return Err(match e.error {
                Error::Network { what, reason, .. } => Error::Network {
                    what,
                    reason,
                    attempts: self.attempts,
                },
                other => other,
            });
        };
        if let Some(ra) = e.retry_after {
            if ra > self.policy.max_retry_after {
                return Err(e.error);
            }
            delay = delay.max(ra);
        }
        tracing::warn!(what, attempt = self.attempts, delay_ms = delay.as_millis() as u64, error = %e.error, "retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Context of a request, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) repo: &'a str,
    pub(crate) revision: &'a str,
    pub(crate) path: Option<&'a str>,
}

struct Sent {
    resp: reqwest::Response,
    /// Headers of the hub's last response (e.g. the 302 to the CDN).
    first: HeaderMap,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    oid: String,
    size: u64,
}

impl HubClient {
    /// Builds a client.
    pub fn new(config: HubConfig) -> Result<Self> {
        let base = config.endpoint.trim_end_matches('/').to_string();
        let shown = redact_userinfo(&config.endpoint);
        let endpoint = Url::parse(&base).map_err(|e| Error::InvalidEndpoint {
            endpoint: shown.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(Error::InvalidEndpoint {
                endpoint: shown,
                reason: "it must be an http or https URL with a host".into(),
            });
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(Error::InvalidEndpoint {
                endpoint: shown,
                reason: "credentials in the endpoint URL would be sent in clear and show up in logs; give the token with HF_TOKEN or --token instead".into(),
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("spice-hf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: redact_userinfo(&config.endpoint),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            endpoint,
            base,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            endpoint: self.base.clone(),
            reason,
        }
    }

    /// Removes the token from text that came from a server.
    fn scrub(&self, text: &str) -> String {
        match &self.config.token {
            Some(t) => text.replace(t.expose_secret(), "hf_***"),
            None => text.to_string(),
        }
    }

    fn offline_guard(&self, what: &str) -> Result<(), AttemptError> {
        if self.config.offline {
            return Err(AttemptError::fatal(Error::Offline {
                model: "MODEL".to_string(),
                reason: format!("`{what}` needs the network"),
            }));
        }
        Ok(())
    }

    /// Sends one request, following redirects by hand: the token goes to the hub origin
    /// only, so it is kept on same-origin redirects and dropped on any change of host, port
    /// or scheme.
    async fn send(
        &self,
        method: Method,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        what: &str,
    ) -> Result<Sent, AttemptError> {
        self.offline_guard(what)?;
        let mut url = Url::parse(url)
            .map_err(|e| AttemptError::fatal(self.protocol(format!("bad URL {url}: {e}"))))?;
        let mut first: Option<HeaderMap> = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(header::ACCEPT_ENCODING, "identity");
            match range {
                Some((from, Some(to))) => {
                    req = req.header(header::RANGE, format!("bytes={from}-{to}"))
                }
                Some((from, None)) => req = req.header(header::RANGE, format!("bytes={from}-")),
                None => {}
            }
            if self.same_origin(&url)
                && let Some(token) = &self.config.token
            {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| {
                        AttemptError::fatal(Error::InvalidTokenValue {
                            source_name: "the configured token".into(),
                            reason: "it cannot be sent in an HTTP header".into(),
                        })
                    })?;
                v.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, v);
            }
            let resp = match tokio::time::timeout(self.config.header_timeout, req.send()).await {
                Err(_) => {
                    return Err(AttemptError::transient(Error::Network {
                        what: what.to_string(),
                        reason: format!(
                            "no response headers within {:?}",
                            self.config.header_timeout
                        ),
                        attempts: 1,
                    }));
                }
                Ok(Err(e)) => {
                    return Err(AttemptError::transient(Error::Network {
                        what: what.to_string(),
                        reason: describe_reqwest(&e),
                        attempts: 1,
                    }));
                }
                Ok(Ok(r)) => r,
            };
            if first.is_none() || self.same_origin(&url) {
                // The hub's last answer carries the metadata (a relative 307 has none; the
                // 302 to the CDN has all of it).
                first = Some(resp.headers().clone());
            }
            if resp.status().is_redirection()
                && let Some(loc) = resp.headers().get(header::LOCATION)
            {
                let loc = loc.to_str().map_err(|_| {
                    AttemptError::fatal(
                        self.protocol("a redirect Location is not valid text".into()),
                    )
                })?;
                let next = url.join(loc).map_err(|e| {
                    AttemptError::fatal(
                        self.protocol(format!("bad redirect Location {loc:?}: {e}")),
                    )
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(AttemptError::fatal(self.protocol(format!(
                        "redirect to unsupported scheme {}",
                        next.scheme()
                    ))));
                }
                if self.endpoint.scheme() == "https" && next.scheme() == "http" {
                    return Err(AttemptError::fatal(self.protocol(format!(
                        "refusing a redirect from https to plain http ({})",
                        next.host_str().unwrap_or("?")
                    ))));
                }
                tracing::debug!(from = %url.path(), to_host = next.host_str().unwrap_or(""), "following redirect");
                url = next;
                continue;
            }
            return Ok(Sent {
                resp,
                first: first.unwrap_or_default(),
            });
        }
        Err(AttemptError::fatal(self.protocol(format!(
            "{what}: more than {MAX_REDIRECTS} redirects (redirect loop)"
        ))))
    }

    /// Maps an error response to an error, telling retryable statuses apart.
    async fn status_error(
        &self,
        resp: reqwest::Response,
        what: &str,
        ctx: Ctx<'_>,
    ) -> AttemptError {
        let status = resp.status();
        let from_hub = self.same_origin(resp.url());
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| self.scrub(s))
        };
        let code = get("x-error-code").unwrap_or_default();
        let request_id = get("x-request-id");
        let retry_after = get("retry-after").and_then(|v| parse_retry_after(&v));
        let mut message = get("x-error-message").unwrap_or_default();
        if message.is_empty() {
            // An error body is read up to 4 KiB, never to its end (which may not come).
            let body = read_capped(resp, 4096).await.unwrap_or_else(|(b, _)| b);
            let body = &body[..];
            message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str().map(str::to_string)))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
            message = self.scrub(&message);
        }
        let authenticated = self.config.token.is_some();
        let repo = ctx.repo.to_string();
        let fatal = |e| AttemptError::fatal(e);
        match code.as_str() {
            "RepoNotFound" => {
                return fatal(Error::RepoNotFound {
                    repo,
                    authenticated,
                    request_id,
                });
            }
            "GatedRepo" => {
                return fatal(Error::Gated {
                    repo,
                    authenticated,
                    request_id,
                });
            }
            "RevisionNotFound" => {
                return fatal(Error::RevisionNotFound {
                    repo,
                    revision: ctx.revision.into(),
                    request_id,
                });
            }
            "EntryNotFound" => {
                return fatal(Error::EntryNotFound {
                    repo,
                    revision: ctx.revision.into(),
                    path: ctx.path.unwrap_or_default().into(),
                    request_id,
                });
            }
            _ => {}
        }
        if message.contains("Invalid credentials") || message.contains("invalid token") {
            return fatal(Error::InvalidToken { request_id });
        }
        let http = Error::Http {
            what: what.to_string(),
            status: status.as_u16(),
            message,
            request_id,
        };
        match status.as_u16() {
            401 if from_hub => fatal(Error::RepoNotFound {
                repo,
                authenticated,
                request_id: None,
            }),
            // A presigned CDN URL that expired: asking the hub again gives a fresh one.
            403 if !from_hub => AttemptError::transient(http),
            403 => match http {
                Error::Http {
                    what,
                    message,
                    request_id,
                    ..
                } => fatal(Error::Forbidden {
                    what,
                    message,
                    request_id,
                }),
                other => fatal(other),
            },
            408 | 429 | 500 | 502 | 503 | 504 => AttemptError {
                error: http,
                retry: true,
                retry_after,
            },
            _ => fatal(http),
        }
    }

    /// Resolves a revision (branch, tag, commit) to its 40-hex commit.
    pub async fn resolve_commit(&self, repo: &str, revision: &str) -> Result<String> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.base,
            utf8_percent_encode(revision, SEGMENT)
        );
        let what = format!("resolve {repo}@{revision}");
        let ctx = Ctx {
            repo,
            revision,
            path: None,
        };
        let body = self.get_json_bytes(&url, &what, ctx).await?;
        let info: RevisionInfo = serde_json::from_slice(&body.0).map_err(|e| {
            self.protocol(format!(
                "revision info for {repo} is not the expected JSON: {e}"
            ))
        })?;
        let sha = info
            .sha
            .ok_or_else(|| self.protocol(format!("revision info for {repo} has no `sha`")))?;
        if !crate::is_commit(&sha) {
            return Err(self.protocol(format!(
                "commit id {:?} is not 40 hex digits",
                sha.escape_debug().to_string()
            )));
        }
        Ok(sha.to_ascii_lowercase())
    }

    async fn get_json_bytes(
        &self,
        url: &str,
        what: &str,
        ctx: Ctx<'_>,
    ) -> Result<(Vec<u8>, HeaderMap, Url)> {
        let mut retrier = Retrier::new(&self.config.retry);
        loop {
            let attempt = async {
                let sent = self.send(Method::GET, url, None, what).await?;
                if !sent.resp.status().is_success() {
                    return Err(self.status_error(sent.resp, what, ctx).await);
                }
                let headers = sent.resp.headers().clone();
                let final_url = sent.resp.url().clone();
                let body = match read_capped(sent.resp, MAX_JSON_BYTES).await {
                    Ok(body) => body,
                    Err((_, None)) => {
                        return Err(AttemptError::fatal(self.protocol(format!(
                            "the answer to `{what}` passed {} MiB; a Hub listing or revision is far smaller, so the endpoint is not a Hub",
                            MAX_JSON_BYTES >> 20
                        ))));
                    }
                    Err((_, Some(reason))) => {
                        return Err(AttemptError::transient(Error::Network {
                            what: what.to_string(),
                            reason,
                            attempts: 1,
                        }));
                    }
                };
                Ok((body, headers, final_url))
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) => retrier.after(what, e, false).await?,
            }
        }
    }

    /// Lists every file of a commit (following `Link: rel="next"` pages). Each path is checked
    /// with the cache's path rules; a hostile one fails the listing.
    pub async fn list_files(&self, repo: &str, commit: &str) -> Result<Vec<RemoteFile>> {
        let mut url = format!(
            "{}/api/models/{repo}/tree/{}?recursive=true&expand=false",
            self.base,
            utf8_percent_encode(commit, SEGMENT)
        );
        let what = format!("list files of {repo}@{commit}");
        let ctx = Ctx {
            repo,
            revision: commit,
            path: None,
        };
        let mut out = Vec::new();
        for _page in 0..10_000 {
            let (body, headers, final_url) = self.get_json_bytes(&url, &what, ctx).await?;
            let entries: Vec<TreeEntry> = serde_json::from_slice(&body).map_err(|e| {
                self.protocol(format!(
                    "the file listing of {repo} is not the expected JSON: {e}"
                ))
            })?;
            for entry in entries {
                if entry.kind != "file" {
                    continue;
                }
                spice_hf_cache::validate_relative(&entry.path)?;
                let (hash, size) = match (&entry.lfs, &entry.oid) {
                    (Some(lfs), _) => (lfs.oid.as_str(), lfs.size),
                    (None, Some(oid)) => (oid.as_str(), entry.size),
                    (None, None) => {
                        return Err(
                            self.protocol(format!("listing entry {:?} has no oid", entry.path))
                        );
                    }
                };
                let hash = ContentHash::from_etag(hash)?;
                out.push(RemoteFile {
                    path: entry.path,
                    size,
                    hash,
                });
            }
            match next_link(&headers) {
                None => return Ok(out),
                Some(next) => {
                    let next = final_url
                        .join(&next)
                        .map_err(|e| self.protocol(format!("bad pagination link: {e}")))?;
                    if !self.same_origin(&next) {
                        return Err(self.protocol(format!(
                            "pagination link points to another host ({})",
                            next.host_str().unwrap_or("?")
                        )));
                    }
                    url = next.to_string();
                }
            }
        }
        Err(self.protocol("the file listing has more than 10000 pages".into()))
    }

    /// The `resolve` URL of a file at a commit.
    pub fn resolve_url(&self, repo: &str, commit: &str, path: &str) -> String {
        let path: Vec<String> = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.base,
            utf8_percent_encode(commit, SEGMENT),
            path.join("/")
        )
    }

    /// Downloads one file of `commit` into `part` (resuming from its offset), retrying and
    /// resuming with `Range` on failures, then verifies size and hash and renames it.
    pub(crate) async fn download(
        &self,
        repo: &str,
        commit: &str,
        file: &RemoteFile,
        mut part: PartFile,
        progress: &dyn crate::Progress,
    ) -> Result<Option<String>> {
        let url = self.resolve_url(repo, commit, &file.path);
        let what = format!("download {}", file.path);
        let ctx = Ctx {
            repo,
            revision: commit,
            path: Some(&file.path),
        };
        let mut retrier = Retrier::new(&self.config.retry);
        if part.offset() > 0 {
            tracing::info!(file = %file.path, offset = part.offset(), "resuming a partial download with a Range request");
        }
        progress.file_started(&file.path, file.size, part.offset());
        let etag = loop {
            let before = part.offset();
            let result = self
                .download_attempt(&url, &what, ctx, file, &mut part, progress)
                .await;
            let progressed = part.offset() > before;
            match result {
                Ok(etag) => break etag,
                Err(e) => {
                    if let Err(e) = retrier.after(&what, e, progressed).await {
                        progress.file_failed(&file.path);
                        return Err(e);
                    }
                }
            }
        };
        finish_reported(part.finish(), &file.path, progress)?;
        Ok(etag)
    }

    async fn download_attempt(
        &self,
        url: &str,
        what: &str,
        ctx: Ctx<'_>,
        file: &RemoteFile,
        part: &mut PartFile,
        progress: &dyn crate::Progress,
    ) -> Result<Option<String>, AttemptError> {
        if file.size == 0 || part.offset() == file.size {
            // Nothing to fetch; still ask the hub so a missing file is an error.
            if file.size == 0 {
                let sent = self.send(Method::GET, url, None, what).await?;
                if !sent.resp.status().is_success() {
                    return Err(self.status_error(sent.resp, what, ctx).await);
                }
            }
            return Ok(None);
        }
        let offset = part.offset();
        let sent = self
            .send(
                Method::GET,
                url,
                (offset > 0).then_some((offset, None)),
                what,
            )
            .await?;
        let status = sent.resp.status();
        if !(status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE) {
            return Err(self.status_error(sent.resp, what, ctx).await);
        }
        let etag = self.check_metadata(&sent.first, ctx, file)?;
        let resp = sent.resp;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total))
                        if start == offset && total.is_none_or(|t| t == file.size) => {}
                    other => {
                        tracing::warn!(file = %file.path, asked = offset, got = ?other, "server answered a different range; restarting the file");
                        part.restart()?;
                        return Err(AttemptError::transient(
                            self.protocol(format!("wrong Content-Range for {}", file.path)),
                        ));
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                tracing::warn!(file = %file.path, offset, "416 inside the file; restarting it from byte 0");
                part.restart()?;
                return Err(AttemptError::transient(Error::Http {
                    what: what.to_string(),
                    status: 416,
                    message: "range not satisfiable inside the file".into(),
                    request_id: None,
                }));
            }
            _ => {
                if offset > 0 {
                    tracing::warn!(file = %file.path, offset, "server ignored Range; restarting the file from byte 0");
                    part.restart()?;
                }
            }
        }
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                AttemptError::transient(Error::Network {
                    what: what.to_string(),
                    reason: format!(
                        "body cut short at byte {}: {}",
                        part.offset(),
                        describe_reqwest(&e)
                    ),
                    attempts: 1,
                })
            })?;
            part.write(&chunk)?;
            progress.bytes(&file.path, chunk.len() as u64);
        }
        if part.offset() < file.size {
            return Err(AttemptError::transient(Error::Network {
                what: what.to_string(),
                reason: format!("body ended at byte {} of {}", part.offset(), file.size),
                attempts: 1,
            }));
        }
        Ok(etag)
    }
}

impl HubClient {
    /// Checks the hub's metadata for a file: `X-Repo-Commit` present and equal to the commit
    /// asked for, and an etag (if any) that is a hash equal to the listing's. Returns the etag.
    fn check_metadata(
        &self,
        first: &HeaderMap,
        ctx: Ctx<'_>,
        file: &RemoteFile,
    ) -> Result<Option<String>, AttemptError> {
        let commit = first.get("x-repo-commit").and_then(|v| v.to_str().ok());
        match commit {
            None => {
                return Err(AttemptError::fatal(self.protocol(format!(
                    "the response for {} has no X-Repo-Commit header (a proxy or captive portal?)",
                    file.path
                ))));
            }
            Some(c) if !c.eq_ignore_ascii_case(ctx.revision) => {
                return Err(AttemptError::fatal(self.protocol(format!(
                    "asked for commit {} but X-Repo-Commit says {:?}",
                    ctx.revision,
                    c.escape_debug().to_string()
                ))));
            }
            Some(_) => {}
        }
        let etag = first
            .get("x-linked-etag")
            .or_else(|| first.get(header::ETAG))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(etag) = &etag {
            let parsed = ContentHash::from_etag(etag).map_err(|e| {
                AttemptError::fatal(self.protocol(format!("bad ETag for {}: {e}", file.path)))
            })?;
            if parsed.hex() != file.hash.hex() {
                return Err(AttemptError::fatal(self.protocol(format!(
                    "the ETag of {} ({}) differs from the listing ({})",
                    file.path,
                    parsed.hex(),
                    file.hash.hex()
                ))));
            }
        }
        Ok(etag)
    }

    /// Downloads one large file as byte ranges over several connections at once, each range
    /// retried and resumed on its own, then verifies the whole file and renames it.
    pub(crate) async fn download_ranged(
        &self,
        repo: &str,
        commit: &str,
        file: &RemoteFile,
        part: RangedPart,
        plan: &RangeParallel,
        progress: &dyn crate::Progress,
    ) -> Result<Option<String>> {
        let url = self.resolve_url(repo, commit, &file.path);
        let ctx = Ctx {
            repo,
            revision: commit,
            path: Some(&file.path),
        };
        let chunk = plan.chunk_size.max(1);
        let ranges: Vec<(u64, u64)> = (0..file.size.div_ceil(chunk))
            .map(|i| (i * chunk, ((i + 1) * chunk).min(file.size) - 1))
            .collect();
        tracing::info!(file = %file.path, ranges = ranges.len(), connections = plan.connections, "range-parallel download");
        progress.file_started(&file.path, file.size, 0);
        let results: Vec<Result<Option<String>>> = futures_util::stream::iter(ranges)
            .map(|(a, b)| self.fetch_range(&url, ctx, file, &part, a, b, progress))
            .buffer_unordered(plan.connections.max(1))
            .collect()
            .await;
        let mut etag = None;
        for r in results {
            match r {
                Ok(e) => etag = etag.or(e),
                Err(e) => {
                    part.discard();
                    progress.file_failed(&file.path);
                    return Err(e);
                }
            }
        }
        finish_reported(part.finish(), &file.path, progress)?;
        Ok(etag)
    }

    #[allow(clippy::too_many_arguments)] // Reason: one range of one file; all are needed.
    async fn fetch_range(
        &self,
        url: &str,
        ctx: Ctx<'_>,
        file: &RemoteFile,
        part: &RangedPart,
        start: u64,
        end: u64,
        progress: &dyn crate::Progress,
    ) -> Result<Option<String>> {
        let what = format!("download {} bytes {start}-{end}", file.path);
        let mut retrier = Retrier::new(&self.config.retry);
        let mut at = start;
        loop {
            let before = at;
            let attempt = async {
                let sent = self
                    .send(Method::GET, url, Some((at, Some(end))), &what)
                    .await?;
                let status = sent.resp.status();
                if !status.is_success() {
                    return Err(self.status_error(sent.resp, &what, ctx).await);
                }
                let etag = self.check_metadata(&sent.first, ctx, file)?;
                let range = sent
                    .resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                if status != StatusCode::PARTIAL_CONTENT || range.is_none_or(|(s, _)| s != at) {
                    return Err(AttemptError::fatal(self.protocol(format!(
                        "the server does not honour Range requests for {} (status {status}); pull without range-parallel downloads",
                        file.path
                    ))));
                }
                let mut stream = sent.resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        AttemptError::transient(Error::Network {
                            what: what.clone(),
                            reason: describe_reqwest(&e),
                            attempts: 1,
                        })
                    })?;
                    let take = chunk.len().min((end + 1 - at) as usize);
                    part.write_at(at, &chunk[..take])?;
                    at += take as u64;
                    progress.bytes(&file.path, take as u64);
                    if at > end {
                        break;
                    }
                }
                if at <= end {
                    return Err(AttemptError::transient(Error::Network {
                        what: what.clone(),
                        reason: format!("range ended at byte {at} of {start}-{end}"),
                        attempts: 1,
                    }));
                }
                Ok(etag)
            };
            match attempt.await {
                Ok(etag) => return Ok(etag),
                Err(e) => retrier.after(&what, e, at > before).await?,
            }
        }
    }
}

/// Settings of range-parallel downloads (off unless given in [`PullOptions`](crate::PullOptions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeParallel {
    /// Files at least this large are fetched in ranges.
    pub min_size: u64,
    /// Bytes per range.
    pub chunk_size: u64,
    /// Ranges in flight at once.
    pub connections: usize,
}

impl Default for RangeParallel {
    fn default() -> Self {
        Self {
            min_size: 64 << 20,
            chunk_size: 16 << 20,
            connections: 4,
        }
    }
}

/// Reports the outcome of a part's final verification to the progress display.
fn finish_reported<T>(
    done: spice_hf_cache::Result<T>,
    path: &str,
    progress: &dyn crate::Progress,
) -> Result<T> {
    match done {
        Ok(v) => {
            progress.file_done(path);
            Ok(v)
        }
        Err(e) => {
            progress.file_failed(path);
            Err(e.into())
        }
    }
}

/// Parses `bytes a-b/total` into (a, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::LINK) {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let (target, params) = part.split_once(';')?;
            if params.contains("rel=\"next\"") || params.contains("rel=next") {
                return Some(
                    target
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string(),
                );
            }
        }
    }
    None
}

/// Largest JSON answer (a revision, one page of a listing) read from a hub. The Hub's pages
/// of 1,000 entries are a few hundred KiB.
const MAX_JSON_BYTES: usize = 64 << 20;

/// Reads at most `max` bytes of a body. `Ok` with the whole body when it fits; `Err` with what
/// was read when it passed `max` (then `max + 1` bytes), or when it failed midway (fewer, and
/// why).
async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> std::result::Result<Vec<u8>, (Vec<u8>, Option<String>)> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = (max + 1).saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() > max {
                    return Err((out, None));
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err((out, Some(describe_reqwest(&e)))),
        }
    }
}

/// An endpoint as it may be shown: any `user:password@` replaced by `***@`.
pub(crate) fn redact_userinfo(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => endpoint.to_string(),
            }
        }
        None => endpoint.to_string(),
    }
}

/// A short description of a transport error (never contains headers, so never a token).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
