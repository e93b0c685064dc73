//! spice-hf's test kit (not published).
//!
//! - [`FakeHub`]: the real [`spice_hf_mirror`] server on loopback, wrapped in a fault layer
//!   scriptable per route, per attempt and per byte offset, with a request log. The CDN
//!   listener's log records any `Authorization` header it receives as a token leak.
//! - [`gguf`]: a GGUF writer; the tiny Llama in every weight format the kernels read.
//! - [`fixtures`]: the tiny random Llama the kit writes itself, and the real SmolLM2 GGUF that
//!   `cargo xtask fixtures` fetches.
//! - [`serving`]: SSE, Prometheus and signal helpers, and the API-key check every server
//!   test shares.
//! - `reference` (feature `reference`): the model layer's own answer, to compare served
//!   answers with.

pub mod faults;
pub mod fixtures;
pub mod gguf;
pub mod hfhub;
#[cfg(feature = "reference")]
pub mod reference;
pub mod serving;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use faults::{Fault, FaultRule, FaultState, LoggedRequest, Role};
use spice_hf_mirror::{Mirror, MirrorFile, Repo, RunningMirror, is_lfs_name};

/// The mirror on loopback with the fault layer in front of both listeners.
#[derive(Debug)]
pub struct FakeHub {
    running: RunningMirror,
    faults: Arc<FaultState>,
}

impl FakeHub {
    /// Starts `mirror` on ephemeral loopback ports (hub on 127.0.0.1, CDN as `localhost`).
    pub async fn start(mirror: Mirror) -> std::io::Result<Self> {
        let faults = Arc::new(FaultState::default());
        let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let cdn = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hub_router = mirror
            .hub_router()
            .layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                faults::hub_layer,
            ));
        let cdn_router = mirror
            .cdn_router()
            .layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                faults::cdn_layer,
            ));
        let running = mirror
            .spawn_on(hub, cdn, hub_router, cdn_router)
            .map_err(std::io::Error::other)?;
        Ok(Self { running, faults })
    }

    /// The hub URL (`HF_ENDPOINT`).
    pub fn url(&self) -> &str {
        self.running.hub_url()
    }

    /// The CDN URL.
    pub fn cdn_url(&self) -> &str {
        self.running.cdn_url()
    }

    /// The mirror behind it.
    pub fn mirror(&self) -> &Mirror {
        self.running.mirror()
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.faults.inject(rule);
    }

    /// Slows the CDN downloads numbered `downloads` (1-based, in arrival order) to `chunk`
    /// bytes every `every`: a pull that takes long enough for a test to act during it (kill
    /// it, start a second one, ask a loading server for readiness).
    pub fn slow_downloads(
        &self,
        downloads: std::ops::RangeInclusive<usize>,
        chunk: usize,
        every: std::time::Duration,
    ) {
        self.inject(FaultRule::new(
            Role::Cdn,
            "/blobs/",
            downloads,
            Fault::Trickle { chunk, every },
        ));
    }

    /// Rules and log.
    pub fn faults(&self) -> &FaultState {
        &self.faults
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.faults.requests()
    }

    /// Requests that reached the CDN listener with an `Authorization` header.
    pub fn token_leaks(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.role == Role::Cdn && r.authorization)
            .count()
    }

    /// Stops the listeners.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A public repository whose `main` holds `files` (weights are served as LFS).
pub fn repo_with(id: &str, files: &BTreeMap<String, Vec<u8>>) -> Repo {
    let mut repo = Repo::new(id);
    repo.commit("main", mirror_files(files));
    repo
}

/// Turns bytes into mirror files, LFS by the Hub's rules.
pub fn mirror_files(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, MirrorFile> {
    files
        .iter()
        .map(|(p, b)| {
            (
                p.clone(),
                MirrorFile::from_bytes(b.clone(), is_lfs_name(p, b.len() as u64)),
            )
        })
        .collect()
}
