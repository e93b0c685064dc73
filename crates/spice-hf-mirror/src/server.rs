//! The HTTP side: the hub listener (API + `resolve`) and the CDN listener (presigned blobs).
//!
//! Routing is by hand over the raw, still percent-encoded path, because a revision is one
//! encoded segment (`refs%2Fpr%2F1`) and repository ids have one or two segments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde_json::json;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::repo::{Commit, MirrorFile, Repo, Source, Visibility};
use crate::upstream::{Listing, PullThrough, UpstreamError};

/// Shared state of a running mirror.
#[derive(Debug)]
pub struct MirrorState {
    pub(crate) repos: RwLock<HashMap<String, Repo>>,
    pub(crate) valid_tokens: RwLock<HashSet<String>>,
    pub(crate) cdn_base: RwLock<String>,
    /// The hub's public base URL, written into `Link` headers (never the request's `Host`).
    pub(crate) public_url: RwLock<String>,
    /// The key that signs CDN links (HMAC-SHA256).
    pub(crate) cdn_key: RwLock<Vec<u8>>,
    pub(crate) limits: RwLock<spice_hf_listen::Limits>,
    pub(crate) page_size: AtomicUsize,
    pub(crate) cdn_ttl_secs: AtomicU64,
    pub(crate) token_leaks: AtomicUsize,
    /// Set in pull-through mode.
    pub(crate) pull_through: RwLock<Option<Arc<PullThrough>>>,
    requests: AtomicU64,
}

impl Default for MirrorState {
    fn default() -> Self {
        Self {
            repos: RwLock::default(),
            valid_tokens: RwLock::default(),
            cdn_base: RwLock::new(String::new()),
            public_url: RwLock::new(String::new()),
            // A fresh key per process: links die with it, which is what one replica wants.
            // Replicas behind one name share a key from the configuration instead.
            cdn_key: RwLock::new(rand::random::<[u8; 32]>().to_vec()),
            limits: RwLock::new(spice_hf_listen::Limits::default()),
            page_size: AtomicUsize::new(1000),
            cdn_ttl_secs: AtomicU64::new(3600),
            token_leaks: AtomicUsize::new(0),
            pull_through: RwLock::new(None),
            requests: AtomicU64::new(0),
        }
    }
}

type Shared = Arc<MirrorState>;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The MAC over one blob and expiry, keyed with the mirror's secret.
fn mac(key: &[u8], sha256: &str, exp: u64) -> HmacSha256 {
    use hmac::Mac as _;
    // HMAC takes a key of any length (a long one is hashed first), so this is infallible.
    let mut m = <HmacSha256 as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    m.update(b"spice-hf-mirror cdn v1\n");
    m.update(sha256.as_bytes());
    m.update(b"\n");
    m.update(exp.to_string().as_bytes());
    m
}

fn signature(key: &[u8], sha256: &str, exp: u64) -> String {
    use hmac::Mac as _;
    hex::encode(mac(key, sha256, exp).finalize().into_bytes())
}

/// Whether `sig` (hex) is the MAC of `sha256` and `exp`, compared in constant time.
fn signature_valid(key: &[u8], sha256: &str, exp: u64, sig: &str) -> bool {
    use hmac::Mac as _;
    hex::decode(sig).is_ok_and(|sig| mac(key, sha256, exp).verify_slice(&sig).is_ok())
}

struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Answer {
    fn new(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::empty(),
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn json(mut self, value: &serde_json::Value) -> Self {
        self.headers
            .push(("content-type", "application/json".into()));
        self.body = Body::from(value.to_string());
        self
    }
    fn finish(self, request_id: u64) -> Response {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&format!("mirror-{request_id}"))
                .unwrap_or(HeaderValue::from_static("mirror")),
        );
        resp
    }
}

fn hub_error(status: StatusCode, code: Option<&str>, message: &str) -> Answer {
    let mut a = Answer::new(status)
        .header("x-error-message", message)
        .json(&json!({ "error": message }));
    if let Some(code) = code {
        a = a.header("x-error-code", code);
    }
    a
}

fn not_found(what: &str) -> Answer {
    hub_error(StatusCode::NOT_FOUND, None, &format!("{what} not found"))
}

/// The hub listener's handler.
pub(crate) async fn hub(State(st): State<Shared>, req: Request) -> Response {
    let id = st.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let pull_through = st
        .pull_through
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(pt) = pull_through {
        if let Err(refused) = pull(&st, &pt, &method, &path, &headers).await {
            return refused.finish(id);
        }
        // The upstream decided this client's access; the local repositories are its copy.
        headers.remove(header::AUTHORIZATION);
    }
    let answer = route(&st, &method, &path, &query, &headers, &body);
    answer.finish(id)
}

/// The repository, revision and file (for `resolve`) a request names, in pull-through mode.
fn target_of(path: &str) -> Option<(String, String, Option<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let join = |s: &[&str]| s.iter().map(|s| decode(s)).collect::<Vec<_>>().join("/");
    if segments.first() == Some(&"api") {
        if segments.get(1) != Some(&"models") {
            return None;
        }
        let rest = &segments[2..];
        let kinds = ["revision", "tree", "paths-info", "refs"];
        return match (1..=2).find(|&k| rest.get(k).is_some_and(|s| kinds.contains(s))) {
            Some(k) if rest[k] != "refs" => {
                Some((join(&rest[..k]), decode(rest.get(k + 1)?), None))
            }
            Some(_) => None,
            None if (1..=2).contains(&rest.len()) => Some((join(rest), "main".into(), None)),
            None => None,
        };
    }
    let pos = segments.iter().position(|s| *s == "resolve")?;
    if !(pos == 1 || pos == 2) || segments.len() < pos + 3 {
        return None;
    }
    Some((
        join(&segments[..pos]),
        decode(segments[pos + 1]),
        Some(join(&segments[pos + 2..])),
    ))
}

/// The answer for a client the upstream refused, or that cannot be checked.
fn upstream_answer(e: UpstreamError) -> Answer {
    match e {
        UpstreamError::Refused {
            status,
            code,
            message,
        } => hub_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            code.as_deref(),
            &message,
        ),
        UpstreamError::Unavailable(why) => hub_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            &format!(
                "the upstream Hub is unavailable and this is not cached for this client: {why}"
            ),
        )
        .header("retry-after", "10"),
    }
}

/// Pull-through: admits the client through the upstream, installs the revision's listing and,
/// for a file, puts it on disk first.
async fn pull(
    st: &MirrorState,
    pt: &PullThrough,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Answer> {
    let Some((repo, revision, file)) = target_of(path) else {
        return Ok(());
    };
    let token = bearer(headers);
    let listing = pt
        .admit(&repo, &revision, token.as_deref())
        .await
        .map_err(upstream_answer)?;
    install(st, &repo, &revision, &listing);
    let Some(file) = file else {
        return Ok(());
    };
    if !matches!(*method, Method::GET | Method::HEAD)
        || !listing.files.iter().any(|f| f.path == file)
    {
        return Ok(());
    }
    let commit = listing.commit.as_str();
    let present = || local_path(st, &repo, commit, &file);
    let on_disk = pt
        .file(&repo, &revision, &file, token.as_deref(), present)
        .await
        .map_err(upstream_answer)?;
    let mut repos = st.repos.write().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = repos
        .get_mut(&repo)
        .and_then(|r| r.commits.get_mut(commit))
        .and_then(|c| c.files.get_mut(&file))
    {
        f.source = Source::Path(on_disk);
    }
    Ok(())
}

/// Where a fetched file of a pull-through revision is, if it was fetched.
fn local_path(
    st: &MirrorState,
    repo: &str,
    commit: &str,
    file: &str,
) -> Option<std::path::PathBuf> {
    let repos = st.repos.read().unwrap_or_else(|p| p.into_inner());
    match &repos
        .get(repo)?
        .commits
        .get(commit)?
        .files
        .get(file)?
        .source
    {
        Source::Path(p) => Some(p.clone()),
        _ => None,
    }
}

/// Adds the upstream's listing of `repo` at `revision` to the served repositories (files not
/// fetched yet), keeping what an earlier listing of the same commit already fetched.
fn install(st: &MirrorState, repo: &str, revision: &str, listing: &Listing) {
    let mut repos = st.repos.write().unwrap_or_else(|p| p.into_inner());
    let r = repos
        .entry(repo.to_string())
        .or_insert_with(|| Repo::new(repo));
    r.commits
        .entry(listing.commit.clone())
        .or_insert_with(|| Commit {
            id: listing.commit.clone(),
            files: listing
                .files
                .iter()
                .map(|f| {
                    let file = MirrorFile {
                        source: Source::Upstream,
                        size: f.size,
                        git_oid: f
                            .git_oid
                            .clone()
                            .or_else(|| f.lfs_sha256.clone())
                            .unwrap_or_default(),
                        lfs_sha256: f.lfs_sha256.clone(),
                    };
                    (f.path.clone(), file)
                })
                .collect(),
        });
    if !listing.commit.starts_with(&revision.to_ascii_lowercase()) {
        r.refs.insert(revision.to_string(), listing.commit.clone());
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
}

/// Splits `segments` into a repository id known to the mirror and the rest.
fn split_repo<'a>(st: &MirrorState, segments: &'a [&'a str]) -> Option<(String, &'a [&'a str])> {
    let repos = st.repos.read().unwrap_or_else(|p| p.into_inner());
    if segments.len() >= 2 {
        let two = format!("{}/{}", decode(segments[0]), decode(segments[1]));
        if repos.contains_key(&two) {
            return Some((two, &segments[2..]));
        }
    }
    let one = decode(segments.first()?);
    if repos.contains_key(&one) {
        return Some((one, &segments[1..]));
    }
    // Unknown: guess the shape so the error names the id the client asked for.
    match segments.len() {
        0 => None,
        1 => Some((one, &segments[1..])),
        _ => Some((
            format!("{}/{}", decode(segments[0]), decode(segments[1])),
            &segments[2..],
        )),
    }
}

fn route(
    st: &MirrorState,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if path == "/api/whoami-v2" {
        return match bearer(headers) {
            Some(t) if st.valid_tokens.read().unwrap_or_else(|p| p.into_inner()).contains(&t) => {
                Answer::new(StatusCode::OK).json(&json!({"type": "user", "name": "mirror-user", "auth": {"accessToken": {"role": "read"}}}))
            }
            _ => hub_error(StatusCode::UNAUTHORIZED, None, "Invalid credentials in Authorization header"),
        };
    }
    if segments.first() == Some(&"api") {
        if segments.get(1) != Some(&"models") {
            return not_found("route");
        }
        let Some((repo_id, rest)) = split_repo(st, &segments[2..]) else {
            return not_found("route");
        };
        return api(st, method, &repo_id, rest, query, headers, body);
    }
    let Some(pos) = segments.iter().position(|s| *s == "resolve") else {
        return not_found("route");
    };
    if !(pos == 1 || pos == 2) || segments.len() < pos + 3 {
        return not_found("route");
    }
    let repo_id = segments[..pos]
        .iter()
        .map(|s| decode(s))
        .collect::<Vec<_>>()
        .join("/");
    let rev = decode(segments[pos + 1]);
    let file_path = segments[pos + 2..]
        .iter()
        .map(|s| decode(s))
        .collect::<Vec<_>>()
        .join("/");
    if !matches!(*method, Method::GET | Method::HEAD) {
        return hub_error(StatusCode::METHOD_NOT_ALLOWED, None, "only GET and HEAD");
    }
    resolve(st, method, &repo_id, &rev, &file_path, headers)
}

/// Looks the repository up and checks the token; `Err` is the answer to give.
fn with_repo<T>(
    st: &MirrorState,
    repo_id: &str,
    headers: &HeaderMap,
    f: impl FnOnce(&Repo) -> T,
) -> Result<T, Answer> {
    let token = bearer(headers);
    if let Some(t) = &token {
        let valid = st
            .valid_tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(t);
        if !valid {
            return Err(hub_error(
                StatusCode::UNAUTHORIZED,
                None,
                "Invalid credentials in Authorization header",
            ));
        }
    }
    let repos = st.repos.read().unwrap_or_else(|p| p.into_inner());
    let missing = || {
        let status = if token.is_none() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::NOT_FOUND
        };
        hub_error(status, Some("RepoNotFound"), "Repository not found")
    };
    let Some(repo) = repos.get(repo_id) else {
        return Err(missing());
    };
    let allowed = token.as_ref().is_some_and(|t| repo.tokens.contains(t));
    match repo.visibility {
        Visibility::Public => {}
        Visibility::Private if !allowed => return Err(missing()),
        Visibility::Gated if token.is_none() => {
            return Err(hub_error(
                StatusCode::UNAUTHORIZED,
                Some("GatedRepo"),
                &format!(
                    "Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in."
                ),
            ));
        }
        Visibility::Gated if !allowed => {
            return Err(hub_error(
                StatusCode::FORBIDDEN,
                Some("GatedRepo"),
                &format!(
                    "Access to model {repo_id} is restricted and you are not in the authorized list."
                ),
            ));
        }
        _ => {}
    }
    Ok(f(repo))
}

fn revision_not_found(rev: &str) -> Answer {
    hub_error(
        StatusCode::NOT_FOUND,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {rev}"),
    )
}

fn api(
    st: &MirrorState,
    method: &Method,
    repo_id: &str,
    rest: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let result = with_repo(st, repo_id, headers, |repo| {
        let kind = rest.first().copied().unwrap_or("");
        match (kind, rest.len()) {
            ("" | "revision", _) => {
                let rev = if kind.is_empty() {
                    "main".to_string()
                } else {
                    decode(rest.get(1).copied().unwrap_or("main"))
                };
                match repo.resolve(&rev) {
                    Some(c) => Answer::new(StatusCode::OK).json(&repo_info(repo, c)),
                    None => revision_not_found(&rev),
                }
            }
            ("tree", n) if n >= 2 => {
                let rev = decode(rest[1]);
                let prefix = rest[2..]
                    .iter()
                    .map(|s| decode(s))
                    .collect::<Vec<_>>()
                    .join("/");
                match repo.resolve(&rev) {
                    Some(c) => tree(st, repo_id, rest, c, &prefix, query),
                    None => revision_not_found(&rev),
                }
            }
            ("paths-info", 2) if *method == Method::POST => {
                let rev = decode(rest[1]);
                match repo.resolve(&rev) {
                    Some(c) => {
                        let paths = paths_from_body(body);
                        let entries: Vec<_> = paths
                            .iter()
                            .filter_map(|p| c.files.get(p).map(|f| file_entry(p, f)))
                            .collect();
                        Answer::new(StatusCode::OK).json(&serde_json::Value::Array(entries))
                    }
                    None => revision_not_found(&rev),
                }
            }
            ("refs", 1) => Answer::new(StatusCode::OK).json(&refs(repo)),
            _ => not_found("route"),
        }
    });
    result.unwrap_or_else(|a| a)
}

fn repo_info(repo: &Repo, c: &Commit) -> serde_json::Value {
    let siblings: Vec<_> = c.files.keys().map(|p| json!({ "rfilename": p })).collect();
    json!({
        "_id": repo.id,
        "id": repo.id,
        "modelId": repo.id,
        "sha": c.id,
        "private": repo.visibility == Visibility::Private,
        "gated": if repo.visibility == Visibility::Gated { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "siblings": siblings,
    })
}

fn file_entry(path: &str, f: &MirrorFile) -> serde_json::Value {
    let mut e = json!({ "type": "file", "oid": f.git_oid, "size": f.size, "path": path });
    if let Some(sha) = &f.lfs_sha256 {
        e["lfs"] = json!({ "oid": sha, "size": f.size, "pointerSize": 134 });
    }
    e
}

fn tree(
    st: &MirrorState,
    repo_id: &str,
    rest: &[&str],
    c: &Commit,
    prefix: &str,
    query: &HashMap<String, String>,
) -> Answer {
    let recursive = query
        .get("recursive")
        .is_some_and(|v| matches!(v.as_str(), "true" | "True" | "1"));
    let mut entries = Vec::new();
    let mut dirs = BTreeMap::new();
    for (path, f) in &c.files {
        let Some(below) = (if prefix.is_empty() {
            Some(path.as_str())
        } else {
            path.strip_prefix(&format!("{prefix}/"))
        }) else {
            continue;
        };
        // Directories on the way down.
        let parts: Vec<&str> = below.split('/').collect();
        for depth in 1..parts.len() {
            if !recursive && depth > 1 {
                break;
            }
            let dir = parts[..depth].join("/");
            let full = if prefix.is_empty() {
                dir
            } else {
                format!("{prefix}/{dir}")
            };
            dirs.entry(full).or_insert(());
        }
        if recursive || parts.len() == 1 {
            entries.push(file_entry(path, f));
        }
    }
    for dir in dirs.keys() {
        let mut h = sha1::Sha1::new();
        h.update(dir.as_bytes());
        entries.push(json!({ "type": "directory", "oid": hex::encode(h.finalize()), "size": 0, "path": dir }));
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    if !prefix.is_empty() && entries.is_empty() {
        return hub_error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            &format!("{prefix} does not exist on \"{}\"", c.id),
        )
        .header("x-repo-commit", c.id.clone());
    }
    let page = st.page_size.load(Ordering::Relaxed).max(1);
    let start = match query.get("cursor").map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return hub_error(
                StatusCode::BAD_REQUEST,
                None,
                "invalid cursor: use the Link header of the previous page",
            );
        }
    };
    let end = start.saturating_add(page).min(entries.len());
    let slice = entries.get(start..end).unwrap_or(&[]).to_vec();
    let mut a = Answer::new(StatusCode::OK).json(&serde_json::Value::Array(slice));
    if end < entries.len() {
        let base = st
            .public_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut next = format!(
            "{base}/api/models/{repo_id}/{}?cursor={end}",
            rest.join("/")
        );
        if recursive {
            next.push_str("&recursive=true");
        }
        a = a.header("link", format!("<{next}>; rel=\"next\""));
    }
    a
}

fn paths_from_body(body: &[u8]) -> Vec<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return v["paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "paths")
        .map(|(_, v)| decode(&v.replace('+', " ")))
        .collect()
}

fn refs(repo: &Repo) -> serde_json::Value {
    let mut branches = Vec::new();
    let mut prs = Vec::new();
    for (name, target) in &repo.refs {
        if name.starts_with("refs/pr/") {
            prs.push(json!({ "name": name, "ref": name, "targetCommit": target }));
        } else {
            branches.push(json!({ "name": name, "ref": format!("refs/heads/{name}"), "targetCommit": target }));
        }
    }
    json!({ "branches": branches, "tags": [], "converts": [], "pullRequests": prs })
}

fn resolve(
    st: &MirrorState,
    method: &Method,
    repo_id: &str,
    rev: &str,
    file_path: &str,
    headers: &HeaderMap,
) -> Answer {
    let found = with_repo(st, repo_id, headers, |repo| {
        let Some(c) = repo.resolve(rev) else {
            return Err(revision_not_found(rev));
        };
        match c.files.get(file_path) {
            Some(f) => Ok((c.id.clone(), f.clone())),
            None => Err(hub_error(
                StatusCode::NOT_FOUND,
                Some("EntryNotFound"),
                &format!("{file_path} does not exist on \"{rev}\""),
            )
            .header("x-repo-commit", c.id.clone())),
        }
    });
    let (commit, file) = match found {
        Ok(Ok(v)) => v,
        Ok(Err(a)) | Err(a) => return a,
    };
    let etag = format!("\"{}\"", file.etag());
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if inm.is_some_and(|v| v.trim_start_matches("W/") == etag) {
        return Answer::new(StatusCode::NOT_MODIFIED)
            .header("etag", etag)
            .header("x-repo-commit", commit);
    }
    if let Some(sha) = &file.lfs_sha256 {
        let exp = now_secs() + st.cdn_ttl_secs.load(Ordering::Relaxed);
        let base = st
            .cdn_base
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let key = st.cdn_key.read().unwrap_or_else(|p| p.into_inner()).clone();
        let location = format!(
            "{base}/blobs/{sha}?sig={}&exp={exp}",
            signature(&key, sha, exp)
        );
        let mut a = Answer::new(StatusCode::FOUND)
            .header("location", location)
            .header("x-repo-commit", commit)
            .header("x-linked-etag", etag.clone())
            .header("x-linked-size", file.size.to_string())
            .header("etag", etag)
            .header("accept-ranges", "bytes")
            .header("content-type", "text/plain; charset=utf-8");
        if *method == Method::GET {
            a.body = Body::from("Found. Redirecting to the CDN");
        }
        return a;
    }
    serve_file(&file, method, headers)
        .header("etag", etag)
        .header("x-repo-commit", commit)
}

/// Parses a single `Range: bytes=...` against `size`: `Ok(None)` for no range,
/// `Err(())` for an unsatisfiable one.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn serve_file(file: &MirrorFile, method: &Method, headers: &HeaderMap) -> Answer {
    let size = file.size;
    let (status, start, len) = match parse_range(headers, size) {
        Err(()) => {
            return Answer::new(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{size}"));
        }
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
    };
    let mut a = Answer::new(status)
        .header("content-length", len.to_string())
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        a = a.header(
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if *method == Method::GET {
        a.body = body_of(file, start, len);
    }
    a
}

fn body_of(file: &MirrorFile, start: u64, len: u64) -> Body {
    match &file.source {
        Source::Bytes(b) => {
            let s = start as usize;
            Body::from(bytes::Bytes::copy_from_slice(&b[s..s + len as usize]))
        }
        Source::Upstream => Body::from_stream(futures_util::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::other("the file was not fetched"))
        })),
        Source::Path(p) => {
            let p = p.clone();
            let stream = futures_util::stream::once(async move {
                let mut f = tokio::fs::File::open(&p).await?;
                f.seek(std::io::SeekFrom::Start(start)).await?;
                Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
                    f.take(len),
                    256 * 1024,
                ))
            });
            use futures_util::StreamExt as _;
            Body::from_stream(
                stream
                    .map(|r| match r {
                        Ok(s) => s.left_stream(),
                        Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
                    })
                    .flatten(),
            )
        }
    }
}

/// The CDN listener's handler: `GET|HEAD /blobs/<sha256>?sig=..&exp=..`.
pub(crate) async fn cdn(State(st): State<Shared>, req: Request) -> Response {
    let id = st.requests.fetch_add(1, Ordering::Relaxed);
    let answer = cdn_answer(&st, &req);
    answer.finish(id)
}

fn cdn_answer(st: &MirrorState, req: &Request) -> Answer {
    if req.headers().contains_key(header::AUTHORIZATION) {
        st.token_leaks.fetch_add(1, Ordering::Relaxed);
        tracing::error!("the CDN listener received an Authorization header (token leak)");
        return Answer::new(StatusCode::BAD_REQUEST)
            .json(&json!({"error": "Only one auth mechanism allowed"}));
    }
    let Some(sha) = req.uri().path().strip_prefix("/blobs/") else {
        return Answer::new(StatusCode::NOT_FOUND);
    };
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let exp: u64 = query.get("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
    let key = st.cdn_key.read().unwrap_or_else(|p| p.into_inner()).clone();
    let sig = query.get("sig").map(String::as_str).unwrap_or("");
    if !signature_valid(&key, sha, exp, sig) || exp < now_secs() {
        return Answer::new(StatusCode::FORBIDDEN)
            .header("content-type", "application/xml")
            .body_text(
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            );
    }
    let file = {
        let repos = st.repos.read().unwrap_or_else(|p| p.into_inner());
        repos
            .values()
            .flat_map(|r| r.commits.values())
            .flat_map(|c| c.files.values())
            .find(|f| f.lfs_sha256.as_deref() == Some(sha) && !matches!(f.source, Source::Upstream))
            .cloned()
    };
    match file {
        Some(f) => serve_file(&f, req.method(), req.headers()).header("etag", format!("\"{sha}\"")),
        None => Answer::new(StatusCode::NOT_FOUND),
    }
}

impl Answer {
    fn body_text(mut self, text: &'static str) -> Self {
        self.body = Body::from(text);
        self
    }
}

/// The hub router (every path goes to one handler that routes by hand).
pub(crate) fn hub_router(st: Shared) -> axum::Router {
    axum::Router::new().fallback(hub).with_state(st)
}

/// The CDN router.
pub(crate) fn cdn_router(st: Shared) -> axum::Router {
    axum::Router::new().fallback(cdn).with_state(st)
}
