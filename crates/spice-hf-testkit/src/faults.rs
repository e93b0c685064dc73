//! The fault layer: an axum middleware over the mirror's routers that logs every request and
//! applies scripted faults per route, per attempt and per byte offset.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

/// Which listener a rule or a log entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The hub (API and `resolve`).
    Hub,
    /// The CDN (presigned blobs).
    Cdn,
}

/// One fault.
#[derive(Clone)]
pub enum Fault {
    /// Answer this status instead of the mirror (with `Retry-After` when given).
    Status {
        /// Status code.
        status: u16,
        /// `Retry-After` value.
        retry_after: Option<String>,
    },
    /// Abort the connection after this many body bytes (a reset mid-body).
    ResetAt(u64),
    /// End the body cleanly after this many bytes while `Content-Length` promises more.
    CloseAt(u64),
    /// Send this many body bytes, then nothing, forever.
    StallAt(u64),
    /// Send the body in pieces of `chunk` bytes, one every `every`.
    Trickle {
        /// Bytes per piece.
        chunk: usize,
        /// Pause between pieces.
        every: Duration,
    },
    /// Wait this long before answering (header timeout).
    DelayHeaders(Duration),
    /// Announce a `Content-Length` this many bytes larger than the body.
    ContentLengthPlus(u64),
    /// Flip one bit of the body at this offset (same size, wrong content).
    CorruptByte(u64),
    /// Remove the request's `Range` header (the server answers 200 with the whole body).
    IgnoreRange,
    /// Answer 416 although the range is inside the file.
    Spurious416,
    /// Answer 302 to the same URL, forever.
    RedirectLoop,
    /// Answer 307 with this `Location` (a renamed repository: relative, same origin).
    RedirectTo(String),
    /// Remove a response header.
    StripHeader(&'static str),
    /// Set a response header.
    SetHeader(&'static str, String),
    /// Replace the response body (and its length).
    ReplaceBody(Bytes),
    /// Answer with this status and a chunked body that never ends (`[` then `0,` for ever).
    EndlessBody(u16),
    /// Run an action (move a branch, ...) before passing the request through.
    Hook(Arc<dyn Fn() + Send + Sync>),
}

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { status, .. } => write!(f, "Status({status})"),
            Self::ResetAt(k) => write!(f, "ResetAt({k})"),
            Self::CloseAt(k) => write!(f, "CloseAt({k})"),
            Self::StallAt(k) => write!(f, "StallAt({k})"),
            Self::Trickle { chunk, every } => write!(f, "Trickle({chunk}/{every:?})"),
            Self::DelayHeaders(d) => write!(f, "DelayHeaders({d:?})"),
            Self::ContentLengthPlus(n) => write!(f, "ContentLengthPlus({n})"),
            Self::CorruptByte(o) => write!(f, "CorruptByte({o})"),
            Self::IgnoreRange => f.write_str("IgnoreRange"),
            Self::Spurious416 => f.write_str("Spurious416"),
            Self::RedirectLoop => f.write_str("RedirectLoop"),
            Self::RedirectTo(l) => write!(f, "RedirectTo({l})"),
            Self::StripHeader(h) => write!(f, "StripHeader({h})"),
            Self::SetHeader(h, _) => write!(f, "SetHeader({h})"),
            Self::ReplaceBody(_) => f.write_str("ReplaceBody"),
            Self::Hook(_) => f.write_str("Hook"),
            Self::EndlessBody(s) => write!(f, "EndlessBody({s})"),
        }
    }
}

/// A scripted fault: which requests it hits and what it does.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// The listener.
    pub role: Role,
    /// `GET`, `HEAD`, ... or any.
    pub method: Option<&'static str>,
    /// A substring of the raw request path.
    pub path_contains: String,
    /// Which matching requests (1-based) it applies to.
    pub attempts: RangeInclusive<usize>,
    /// What it does.
    pub fault: Fault,
    seen: Arc<AtomicUsize>,
    fired: Arc<AtomicUsize>,
}

impl FaultRule {
    /// A rule for matching requests number `attempts` (1-based).
    pub fn new(
        role: Role,
        path_contains: &str,
        attempts: RangeInclusive<usize>,
        fault: Fault,
    ) -> Self {
        Self {
            role,
            method: None,
            path_contains: path_contains.to_string(),
            attempts,
            fault,
            seen: Arc::default(),
            fired: Arc::default(),
        }
    }

    /// How many requests this rule (or a clone of it: clones share the count) has faulted.
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// Restricts the rule to one method.
    pub fn method(mut self, method: &'static str) -> Self {
        self.method = Some(method);
        self
    }
}

/// One request as the fake Hub saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// The listener.
    pub role: Role,
    /// Method.
    pub method: String,
    /// Raw path (still percent-encoded).
    pub path: String,
    /// Whether an `Authorization` header came with it.
    pub authorization: bool,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The status answered (0 when the client left before the answer).
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<String>,
    /// When it arrived, since the fake Hub started.
    pub at: Duration,
}

/// Rules and the request log, shared by both listeners.
#[derive(Debug)]
pub struct FaultState {
    rules: Mutex<Vec<FaultRule>>,
    log: Mutex<Vec<LoggedRequest>>,
    start: Instant,
}

impl Default for FaultState {
    fn default() -> Self {
        Self {
            rules: Mutex::default(),
            log: Mutex::default(),
            start: Instant::now(),
        }
    }
}

impl FaultState {
    /// Adds a rule.
    pub fn inject(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The request log so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Empties the log.
    pub fn clear_log(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn pick(&self, role: Role, method: &str, path: &str) -> Vec<Fault> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for r in rules.iter() {
            if r.role != role
                || r.method.is_some_and(|m| m != method)
                || !path.contains(&r.path_contains)
            {
                continue;
            }
            let n = r.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if r.attempts.contains(&n) {
                r.fired.fetch_add(1, Ordering::SeqCst);
                out.push(r.fault.clone());
            }
        }
        out
    }
}

pub(crate) async fn hub_layer(
    State(st): State<Arc<FaultState>>,
    req: Request,
    next: Next,
) -> Response {
    apply(st, Role::Hub, req, next).await
}

pub(crate) async fn cdn_layer(
    State(st): State<Arc<FaultState>>,
    req: Request,
    next: Next,
) -> Response {
    apply(st, Role::Cdn, req, next).await
}

async fn apply(st: Arc<FaultState>, role: Role, mut req: Request, next: Next) -> Response {
    let at = st.start.elapsed();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let faults = st.pick(role, &method, &path);
    let names = (!faults.is_empty()).then(|| format!("{faults:?}"));
    // Logged on arrival (status 0 until answered) so a request the client gave up on shows.
    let index = {
        let mut log = st.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(LoggedRequest {
            role,
            method,
            path,
            authorization,
            range,
            status: 0,
            fault: names,
            at,
        });
        log.len() - 1
    };

    let mut early: Option<Response> = None;
    for f in &faults {
        match f {
            Fault::Status {
                status,
                retry_after,
            } => {
                let mut r =
                    Response::new(Body::from(format!("{{\"error\":\"injected {status}\"}}")));
                *r.status_mut() =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if let Some(ra) = retry_after {
                    r.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from_str(ra).unwrap_or(HeaderValue::from_static("1")),
                    );
                    r.headers_mut().insert(
                        "ratelimit",
                        HeaderValue::from_static("\"resolvers\";r=0;t=1"),
                    );
                }
                early = Some(r);
            }
            Fault::Spurious416 => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes */0"));
                early = Some(r);
            }
            Fault::RedirectLoop => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::FOUND;
                let loc = req.uri().to_string();
                r.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(&loc).unwrap_or(HeaderValue::from_static("/")),
                );
                early = Some(r);
            }
            Fault::RedirectTo(loc) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                r.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(loc).unwrap_or(HeaderValue::from_static("/")),
                );
                early = Some(r);
            }
            Fault::IgnoreRange => {
                req.headers_mut().remove(header::RANGE);
            }
            Fault::DelayHeaders(d) => tokio::time::sleep(*d).await,
            Fault::EndlessBody(status) => {
                let chunk = Bytes::from("0,".repeat(32 * 1024));
                let body = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"["))
                })
                .chain(futures_util::stream::repeat_with(move || Ok(chunk.clone())));
                let mut r = Response::new(Body::from_stream(body));
                *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                early = Some(r);
            }
            Fault::Hook(action) => action(),
            _ => {}
        }
    }
    let mut resp = match early {
        Some(r) => r,
        None => next.run(req).await,
    };
    for f in &faults {
        match f {
            Fault::StripHeader(h) => {
                resp.headers_mut().remove(*h);
            }
            Fault::SetHeader(h, v) => {
                if let Ok(v) = HeaderValue::from_str(v) {
                    resp.headers_mut().insert(HeaderName::from_static(h), v);
                }
            }
            Fault::ReplaceBody(b) => {
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                *resp.body_mut() = Body::from(b.clone());
            }
            Fault::ContentLengthPlus(n) => {
                let len = resp
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(len) = len {
                    resp.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(len + n));
                }
            }
            Fault::ResetAt(_)
            | Fault::CloseAt(_)
            | Fault::StallAt(_)
            | Fault::Trickle { .. }
            | Fault::CorruptByte(_) => {
                let body = std::mem::replace(resp.body_mut(), Body::empty());
                *resp.body_mut() = Body::from_stream(mangle(body.into_data_stream(), f.clone()));
            }
            _ => {}
        }
    }
    if let Some(entry) = st
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(index)
    {
        entry.status = resp.status().as_u16();
    }
    resp
}

type Chunk = Result<Bytes, std::io::Error>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    Reset,
    Close,
    Stall,
}

struct Mangler {
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, axum::Error>> + Send>>,
    fault: Fault,
    offset: u64,
    pending: std::collections::VecDeque<Bytes>,
    stop: Stop,
}

/// Applies a byte-level fault to a body stream.
fn mangle(
    inner: impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
    fault: Fault,
) -> impl Stream<Item = Chunk> + Send + 'static {
    let state = Mangler {
        inner: Box::pin(inner),
        fault,
        offset: 0,
        pending: Default::default(),
        stop: Stop::No,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            match s.stop {
                Stop::No => {}
                Stop::Close => return None,
                Stop::Reset => {
                    s.stop = Stop::Close;
                    let e =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset");
                    return Some((Err(e), s));
                }
                Stop::Stall => std::future::pending::<()>().await,
            }
            if let Some(piece) = s.pending.pop_front() {
                let start = s.offset;
                let end = start + piece.len() as u64;
                s.offset = end;
                let cut = |k: u64| piece.slice(..k.saturating_sub(start) as usize);
                let out = match s.fault {
                    Fault::ResetAt(k) if end > k => {
                        s.stop = Stop::Reset;
                        cut(k)
                    }
                    Fault::CloseAt(k) if end > k => {
                        s.stop = Stop::Close;
                        cut(k)
                    }
                    Fault::StallAt(k) if end > k => {
                        s.stop = Stop::Stall;
                        cut(k)
                    }
                    Fault::Trickle { every, .. } => {
                        tokio::time::sleep(every).await;
                        piece
                    }
                    Fault::CorruptByte(o) if o >= start && o < end => {
                        let mut v = piece.to_vec();
                        v[(o - start) as usize] ^= 0x01;
                        Bytes::from(v)
                    }
                    _ => piece,
                };
                if out.is_empty() {
                    continue;
                }
                return Some((Ok(out), s));
            }
            match s.inner.next().await {
                None => return None,
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), s)),
                Some(Ok(b)) => {
                    let size = match s.fault {
                        Fault::Trickle { chunk, .. } => chunk.max(1),
                        _ => 4096,
                    };
                    for i in (0..b.len()).step_by(size) {
                        s.pending.push_back(b.slice(i..(i + size).min(b.len())));
                    }
                }
            }
        }
    })
}
