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
        let selected: Vec<&str> = opts
            .selection
            .apply(listing.iter().map(|f| f.path.as_str()))?;
        let wanted: Vec<RemoteFile> = listing
            .iter()
            .filter(|f| selected.contains(&f.path.as_str()))
            .cloned()
            .collect();
        for f in &wanted {
            rev_dir.file_path(&f.path)?;
        }

        let lock = {
            let rev_dir = rev_dir.clone();
            let bound = opts.lock_timeout;
            tokio::task::spawn_blocking(move || rev_dir.lock(bound))
                .await
                .map_err(|e| Error::Task {
                    task: "cache lock",
                    reason: e.to_string(),
                })??
        };

        let mut manifest = match rev_dir.manifest()? {
            Some(m) if m.commit == commit => m,
            Some(mut old) => {
                tracing::warn!(model = %model, from = %old.commit, to = %commit, "the revision moved to a new commit; changed files will be fetched again");
                let tree: std::collections::BTreeMap<_, _> = listing
                    .iter()
                    .map(|f| (f.path.clone(), f.hash.clone()))
                    .collect();
                old.files.retain(|p, e| tree.get(p) == Some(&e.hash));
                old.commit = commit.clone();
                old
            }
            None => Manifest::new(model.repo(), model.revision(), &commit),
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

        let mut files = Vec::new();
        let mut missing = Vec::new();
        let mut needed = 0u64;
        for f in &wanted {
            let state = rev_dir.state(&f.path, &f.expected(), &mut manifest)?;
            match state {
                FileState::Cached => files.push(PulledFile {
                    path: f.path.clone(),
                    size: f.size,
                    state: PulledState::Cached,
                }),
                FileState::Adopted => files.push(PulledFile {
                    path: f.path.clone(),
                    size: f.size,
                    state: PulledState::Adopted,
                }),
                FileState::Missing { partial } => {
                    needed += f.size - partial;
                    missing.push(f.clone());
                }
            }
        }
        rev_dir.save_manifest(&manifest)?;
        // Held until every download ends, so a pull started meanwhile counts these bytes. It
        // waits for the cache-wide reservation lock, so off the async threads.
        let _reservation = if missing.is_empty() {
            None
        } else {
            let rev_dir = rev_dir.clone();
            let planned: Vec<(String, u64)> =
                missing.iter().map(|f| (f.path.clone(), f.size)).collect();
            let reserved = tokio::task::spawn_blocking(move || {
                let planned: Vec<(&str, u64)> =
                    planned.iter().map(|(p, s)| (p.as_str(), *s)).collect();
                rev_dir.reserve_space(&planned, needed)
            })
            .await
            .map_err(|e| Error::Task {
                task: "space reservation",
                reason: e.to_string(),
            })??;
            Some(reserved)
        };

        let manifest = Mutex::new(manifest);
        // Owned items: a closure over `&RemoteFile` makes the future's Send-ness higher-ranked,
        // which callers that box the pull as `Send` (the server's model fetch) cannot prove.
        let (rev_dir_ref, commit_ref, manifest_ref) = (&rev_dir, &commit, &manifest);
        let range = opts.range_parallel.as_ref();
        let results: Vec<Result<PulledFile>> = futures_util::stream::iter(missing.iter().cloned())
            .map(|f| async move {
                self.fetch_one(rev_dir_ref, commit_ref, &f, manifest_ref, range, progress)
                    .await
            })
            .buffer_unordered(self.config().max_parallel.max(1))
            .collect()
            .await;
        drop(lock);
        let mut downloaded_bytes = 0;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(f) => {
                    downloaded_bytes += f.size;
                    files.push(f);
                }
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => {}
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
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
