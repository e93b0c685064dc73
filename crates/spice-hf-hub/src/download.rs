//! Downloads: one file into its `.part` (resumed with `Range`, retried, the hub's metadata
//! checked against the listing), or a large file as byte ranges over several connections;
//! either way verified before it is renamed into place. [`Progress`] hooks report it.

use futures_util::StreamExt as _;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use spice_hf_cache::{ContentHash, PartFile, RangedPart};

use crate::transport::{AttemptError, Ctx, Retrier, stream_body};
use crate::{Error, HubClient, RemoteFile, Result};

/// Hooks for progress display (the CLI draws bars with them). All have empty defaults.
pub trait Progress: Send + Sync {
    /// A download starts (`already` bytes were resumed from a `.part` file).
    fn file_started(&self, _path: &str, _total: u64, _already: u64) {}
    /// Bytes arrived.
    fn bytes(&self, _path: &str, _n: u64) {}
    /// The file is verified and in place.
    fn file_done(&self, _path: &str) {}
    /// The file failed.
    fn file_failed(&self, _path: &str) {}
}

/// No progress display.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl HubClient {
    /// Downloads one file of `commit` into `part` (resuming from its offset), retrying and
    /// resuming with `Range` on failures, then verifies size and hash and renames it.
    pub(crate) async fn download(
        &self,
        repo: &str,
        commit: &str,
        file: &RemoteFile,
        mut part: PartFile,
        progress: &dyn Progress,
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
        progress: &dyn Progress,
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
        stream_body(resp, what, |chunk| {
            part.write(chunk)?;
            progress.bytes(&file.path, chunk.len() as u64);
            Ok(false)
        })
        .await?;
        if part.offset() < file.size {
            return Err(AttemptError::transient(Error::Network {
                what: what.to_string(),
                reason: format!("body ended at byte {} of {}", part.offset(), file.size),
                attempts: 1,
            }));
        }
        Ok(etag)
    }

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
        progress: &dyn Progress,
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
        progress: &dyn Progress,
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
                stream_body(sent.resp, &what, |chunk| {
                    let take = chunk.len().min((end + 1 - at) as usize);
                    part.write_at(at, &chunk[..take])?;
                    at += take as u64;
                    progress.bytes(&file.path, take as u64);
                    Ok(at > end)
                })
                .await?;
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
    progress: &dyn Progress,
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
