//! Pulling a model: resolve the revision, list, select, lock, download what is missing into
//! the verified cache, record the manifest.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt as _;
use spice_hf_cache::{
    Cache, FileState, Manifest, ManifestEntry, PartFile, RangedPart, RevisionDir,
};

use crate::download::Progress;
use crate::{Error, HubClient, ModelRef, RangeParallel, RemoteFile, Result, Selection};

/// Options of a pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Which files.
    pub selection: Selection,
    /// Longest wait for another process's lock on the revision (forever when `None`).
    pub lock_timeout: Option<Duration>,
    /// Fetch large files as parallel byte ranges (off when `None`).
    pub range_parallel: Option<RangeParallel>,
}

/// How a file ended up in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PulledState {
    /// Downloaded now.
    Downloaded,
    /// Already cached and matching its manifest entry.
    Cached,
    /// Present without a manifest entry (placed by hand) and verified.
    Adopted,
}

/// One file of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledFile {
    /// Path in the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// How it got there.
    pub state: PulledState,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The model pulled.
    pub model: ModelRef,
    /// The commit its revision resolved to.
    pub commit: String,
    /// The revision directory holding the files.
    pub dir: PathBuf,
    /// The selected files.
    pub files: Vec<PulledFile>,
    /// Bytes downloaded now.
    pub downloaded_bytes: u64,
    /// Whether the network was used at all.
    pub used_network: bool,
}

impl HubClient {
    /// Pulls what loading `model` needs and returns the path to load: with `quant`, the JSON
    /// files plus the one GGUF of that quantization (the GGUF file is returned); without, the
    /// JSON files plus the safetensors weights (the revision directory is returned).
    pub async fn pull_model(
        &self,
        cache: &spice_hf_cache::Cache,
        model: &crate::ModelRef,
        quant: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let selection = match quant {
            Some(q) => crate::Selection {
                include: vec!["*.gguf".into(), "*.json".into()],
                exclude: vec![],
                quant: Some(q.to_string()),
            },
            None => crate::Selection {
                include: vec!["*.json".into(), "*.safetensors".into()],
                exclude: vec![],
                quant: None,
            },
        };
        let opts = PullOptions {
            selection,
            ..PullOptions::default()
        };
        let report = self.pull(cache, model, &opts, progress).await?;
        match quant {
            Some(q) => report
                .files
                .iter()
                .find(|f| crate::gguf_quant_matches(&f.path, q))
                .map(|f| report.dir.join(&f.path))
                .ok_or_else(|| {
                    Error::Selection(format!(
                        "{model} has no GGUF file of quantization {q}; list its files on the Hub and pick one"
                    ))
                }),
            None => Ok(report.dir),
        }
    }

    /// Pulls `model` into `cache`: a complete pinned commit (or offline mode) is served from
    /// the cache without any request; otherwise the revision is resolved to a commit and every
    /// missing file is downloaded from `resolve/<commit>/...`, verified and renamed in place.
    pub async fn pull(
        &self,
        cache: &Cache,
        model: &ModelRef,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullReport> {
        let rev_dir = cache.revision(model.repo(), model.revision())?;
        if let Some(report) = self.cached_pull(&rev_dir, model, opts)? {
            return Ok(report);
        }
        let commit = self.resolve_commit(model.repo(), model.revision()).await?;
        let listing = self.list_files(model.repo(), &commit).await?;
        let wanted = wanted(&rev_dir, &listing, &opts.selection)?;

        let lock = {
            let (rev_dir, bound) = (rev_dir.clone(), opts.lock_timeout);
            blocking("cache lock", move || rev_dir.lock(bound)).await?
        };
        let mut manifest = manifest_for(&rev_dir, model, &commit, &listing)?;
        let (mut files, missing) = sort_out(&rev_dir, &wanted, &mut manifest)?;
        rev_dir.save_manifest(&manifest)?;
        // Held until every download ends, so a pull started meanwhile counts these bytes. It
        // waits for the cache-wide reservation lock, so off the async threads.
        let _reservation = if missing.is_empty() {
            None
        } else {
            let rev_dir = rev_dir.clone();
            let needed = missing.iter().map(|(_, left)| left).sum();
            let planned: Vec<(String, u64)> = missing
                .iter()
                .map(|(f, _)| (f.path.clone(), f.size))
                .collect();
            Some(
                blocking("space reservation", move || {
                    let planned: Vec<(&str, u64)> =
                        planned.iter().map(|(p, s)| (p.as_str(), *s)).collect();
                    rev_dir.reserve_space(&planned, needed)
                })
                .await?,
            )
        };
        let missing: Vec<RemoteFile> = missing.into_iter().map(|(f, _)| f).collect();
        let downloaded = self
            .fetch_all(&rev_dir, &commit, missing, manifest, opts, progress)
            .await;
        drop(lock);
        let downloaded = downloaded?;
        let downloaded_bytes = downloaded.iter().map(|f| f.size).sum();
        files.extend(downloaded);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(PullReport {
            model: model.clone(),
            commit,
            dir: rev_dir.path().to_path_buf(),
            files,
            downloaded_bytes,
            used_network: true,
        })
    }

    /// Downloads `missing` at most `max_parallel` at a time, each recorded in the manifest as
    /// it lands; every download runs to its end, and the first failure is the result.
    async fn fetch_all(
        &self,
        rev_dir: &RevisionDir,
        commit: &str,
        missing: Vec<RemoteFile>,
        manifest: Manifest,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<PulledFile>> {
        let manifest = Mutex::new(manifest);
        // Owned items: a closure over `&RemoteFile` makes the future's Send-ness higher-ranked,
        // which callers that box the pull as `Send` (the server's model fetch) cannot prove.
        let manifest = &manifest;
        let range = opts.range_parallel.as_ref();
        let results: Vec<Result<PulledFile>> = futures_util::stream::iter(missing)
            .map(|f| async move {
                self.fetch_one(rev_dir, commit, &f, manifest, range, progress)
                    .await
            })
            .buffer_unordered(self.config().max_parallel.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn fetch_one(
        &self,
        rev_dir: &RevisionDir,
        commit: &str,
        f: &RemoteFile,
        manifest: &Mutex<Manifest>,
        ranged: Option<&RangeParallel>,
        progress: &dyn Progress,
    ) -> Result<PulledFile> {
        let target = rev_dir.file_path(&f.path)?;
        let has_part =
            std::fs::metadata(spice_hf_cache::part_path(&target)).is_ok_and(|m| m.len() > 0);
        let etag = match ranged {
            // A sequential .part left by a crash is cheaper to resume than to refetch in ranges.
            Some(plan) if f.size >= plan.min_size && f.size > 0 && !has_part => {
                let part = RangedPart::create(&target, f.expected())?;
                self.download_ranged(rev_dir.repo(), commit, f, part, plan, progress)
                    .await?
            }
            _ => {
                let part = PartFile::open(&target, f.expected())?;
                self.download(rev_dir.repo(), commit, f, part, progress)
                    .await?
            }
        };
        let mut m = manifest.lock().unwrap_or_else(|p| p.into_inner());
        m.files.insert(
            f.path.clone(),
            ManifestEntry {
                size: f.size,
                hash: f.hash.clone(),
                etag,
                // Verified while it streamed, renamed into place just now.
                stamp: spice_hf_cache::Stamp::of(&target),
            },
        );
        rev_dir.save_manifest(&m)?;
        Ok(PulledFile {
            path: f.path.clone(),
            size: f.size,
            state: PulledState::Downloaded,
        })
    }

    /// Serves a pull from the cache alone when it may: offline mode, or a pinned commit whose
    /// selected files are all present. `Ok(None)` means the network is needed.
    fn cached_pull(
        &self,
        rev_dir: &RevisionDir,
        model: &ModelRef,
        opts: &PullOptions,
    ) -> Result<Option<PullReport>> {
        let offline = self.config().offline;
        if !offline && !model.is_pinned() {
            return Ok(None);
        }
        let offline_err = |reason: String| Error::Offline {
            model: model.to_string(),
            reason,
        };
        let mut manifest = match rev_dir.manifest()? {
            Some(m) if !m.tree.is_empty() => m,
            _ if offline => {
                return Err(offline_err(format!(
                    "{model} is not in the cache ({})",
                    rev_dir.path().display()
                )));
            }
            _ => return Ok(None),
        };
        if !offline && !manifest.commit.eq_ignore_ascii_case(model.revision()) {
            return Ok(None);
        }
        let before = manifest.clone();
        let tree = manifest.tree.clone();
        let selected = opts.selection.apply(tree.keys().map(String::as_str))?;
        let mut files = Vec::new();
        for path in selected {
            let entry = &tree[path];
            // The same proof as a networked pull: unchanged since verified, or hashed again.
            let expected = spice_hf_cache::Expected {
                size: entry.size,
                hash: entry.hash.clone(),
            };
            let present = manifest.files.contains_key(path)
                && rev_dir.state(path, &expected, &mut manifest)? == FileState::Cached;
            if !present {
                if manifest != before {
                    rev_dir.save_manifest(&manifest)?;
                }
                if offline {
                    return Err(offline_err(format!(
                        "file {path:?} of {model} is not in the cache"
                    )));
                }
                return Ok(None);
            }
            files.push(PulledFile {
                path: path.to_string(),
                size: entry.size,
                state: PulledState::Cached,
            });
        }
        if manifest != before {
            // Stamps recorded after a file was hashed again.
            rev_dir.save_manifest(&manifest)?;
        }
        tracing::info!(model = %model, commit = %manifest.commit, "served from the cache without network access");
        Ok(Some(PullReport {
            model: model.clone(),
            commit: manifest.commit.clone(),
            dir: rev_dir.path().to_path_buf(),
            files,
            downloaded_bytes: 0,
            used_network: false,
        }))
    }
}

/// Runs blocking cache work (a lock wait, the space reservation) off the async threads.
async fn blocking<T: Send + 'static>(
    task: &'static str,
    work: impl FnOnce() -> spice_hf_cache::Result<T> + Send + 'static,
) -> Result<T> {
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Task {
            task,
            reason: e.to_string(),
        })?;
    Ok(done?)
}

/// The files of `listing` that `selection` picks, each path checked to stay inside the
/// revision directory before anything is written.
fn wanted(
    rev_dir: &RevisionDir,
    listing: &[RemoteFile],
    selection: &Selection,
) -> Result<Vec<RemoteFile>> {
    let selected = selection.apply(listing.iter().map(|f| f.path.as_str()))?;
    let wanted: Vec<RemoteFile> = listing
        .iter()
        .filter(|f| selected.contains(&f.path.as_str()))
        .cloned()
        .collect();
    for f in &wanted {
        rev_dir.file_path(&f.path)?;
    }
    Ok(wanted)
}

/// The revision's manifest for `commit`: the one on disk when it is of that commit; when the
/// revision moved, the old one keeping only the files whose hash did not change; else a new
/// one. Its tree is `listing` either way.
fn manifest_for(
    rev_dir: &RevisionDir,
    model: &ModelRef,
    commit: &str,
    listing: &[RemoteFile],
) -> Result<Manifest> {
    let mut manifest = match rev_dir.manifest()? {
        Some(m) if m.commit == commit => m,
        Some(mut old) => {
            tracing::warn!(model = %model, from = %old.commit, to = %commit, "the revision moved to a new commit; changed files will be fetched again");
            let tree: std::collections::BTreeMap<_, _> = listing
                .iter()
                .map(|f| (f.path.clone(), f.hash.clone()))
                .collect();
            old.files.retain(|p, e| tree.get(p) == Some(&e.hash));
            old.commit = commit.to_string();
            old
        }
        None => Manifest::new(model.repo(), model.revision(), commit),
    };
    manifest.tree = listing
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                ManifestEntry {
                    size: f.size,
                    hash: f.hash.clone(),
                    etag: None,
                    stamp: None,
                },
            )
        })
        .collect();
    Ok(manifest)
}

/// A file to download, with the bytes it still needs (its size less a resumable `.part`).
type ToFetch = (RemoteFile, u64);

/// Splits `wanted` into the files already in place (cached, or adopted after verification)
/// and the ones to download, each with the bytes it still needs.
fn sort_out(
    rev_dir: &RevisionDir,
    wanted: &[RemoteFile],
    manifest: &mut Manifest,
) -> Result<(Vec<PulledFile>, Vec<ToFetch>)> {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for f in wanted {
        let state = match rev_dir.state(&f.path, &f.expected(), manifest)? {
            FileState::Cached => PulledState::Cached,
            FileState::Adopted => PulledState::Adopted,
            FileState::Missing { partial } => {
                missing.push((f.clone(), f.size - partial));
                continue;
            }
        };
        present.push(PulledFile {
            path: f.path.clone(),
            size: f.size,
            state,
        });
    }
    Ok((present, missing))
}
