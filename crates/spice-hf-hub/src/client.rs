//! The Hub client and its settings: the endpoint checked once, the HTTP client built with its
//! timeouts, and what the other parts share (the origin check, the token scrubber, file URLs).
//! A request and its answer are in `transport`, the JSON API in `api`, downloads in
//! `download`.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use spice_hf_cache::{ContentHash, Expected};
use url::Url;

use crate::{Error, HfToken, Result, RetryPolicy};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    pub(crate) http: reqwest::Client,
    pub(crate) endpoint: Url,
    pub(crate) base: String,
    pub(crate) config: HubConfig,
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

    /// Whether `url` is on the hub's origin (scheme, host and port).
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.endpoint.scheme()
            && url.host_str() == self.endpoint.host_str()
            && url.port_or_known_default() == self.endpoint.port_or_known_default()
    }

    /// The hub did not speak the protocol.
    pub(crate) fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            endpoint: self.base.clone(),
            reason,
        }
    }

    /// Removes the token from text that came from a server.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.config.token {
            Some(t) => text.replace(t.expose_secret(), "hf_***"),
            None => text.to_string(),
        }
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
