//! One request to a hub and what its answer means: redirects followed by hand so the token
//! stays on the hub origin, a timeout on the response headers, statuses and `X-Error-Code`
//! mapped to errors that say whether a retry can help, the retry schedule walked, and bodies
//! read with a cap or streamed into a sink.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderValue};
use url::Url;

use crate::retry::parse_retry_after;
use crate::{Error, HubClient, Result, RetryPolicy};

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Why an attempt failed, and whether trying again can help.
pub(crate) struct AttemptError {
    pub(crate) error: Error,
    pub(crate) retry: bool,
    pub(crate) retry_after: Option<Duration>,
}

impl AttemptError {
    pub(crate) fn fatal(error: Error) -> Self {
        Self {
            error,
            retry: false,
            retry_after: None,
        }
    }
    pub(crate) fn transient(error: Error) -> Self {
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

/// A response, and the headers of the hub's last answer on the way to it.
pub(crate) struct Sent {
    pub(crate) resp: reqwest::Response,
    /// Headers of the hub's last response (e.g. the 302 to the CDN).
    pub(crate) first: HeaderMap,
}

impl HubClient {
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
    pub(crate) async fn send(
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
    pub(crate) async fn status_error(
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
}

/// Reads at most `max` bytes of a body. `Ok` with the whole body when it fits; `Err` with what
/// was read when it passed `max` (then `max + 1` bytes), or when it failed midway (fewer, and
/// why).
pub(crate) async fn read_capped(
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

/// Streams a body into `sink` chunk by chunk until the body ends or `sink` answers `true`
/// (it has all it wants). A failed read is a transient network error of `what` that says how
/// many bytes this response had delivered.
pub(crate) async fn stream_body(
    resp: reqwest::Response,
    what: &str,
    mut sink: impl FnMut(&[u8]) -> Result<bool, AttemptError>,
) -> Result<(), AttemptError> {
    let mut stream = resp.bytes_stream();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AttemptError::transient(Error::Network {
                what: what.to_string(),
                reason: format!(
                    "body cut short after {read} bytes of this response: {}",
                    describe_reqwest(&e)
                ),
                attempts: 1,
            })
        })?;
        read += chunk.len() as u64;
        if sink(&chunk)? {
            break;
        }
    }
    Ok(())
}

/// A short description of a transport error (never contains headers, so never a token).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
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
