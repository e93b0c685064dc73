//! The Hub's JSON API: a revision resolved to its commit, the file listing of a commit
//! (paginated, every path checked), each answer read with a size cap.

use percent_encoding::utf8_percent_encode;
use reqwest::Method;
use reqwest::header::{self, HeaderMap};
use serde::Deserialize;
use spice_hf_cache::ContentHash;
use url::Url;

use crate::client::SEGMENT;
use crate::transport::{AttemptError, Ctx, Retrier, read_capped};
use crate::{Error, HubClient, RemoteFile, Result};

/// Largest JSON answer (a revision, one page of a listing) read from a hub. The Hub's pages
/// of 1,000 entries are a few hundred KiB.
const MAX_JSON_BYTES: usize = 64 << 20;

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
