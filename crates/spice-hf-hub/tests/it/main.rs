//! Integration tests of the hub client against the real mirror on loopback, with faults.
#![allow(clippy::print_stdout)] // Reason: the fault suite prints how many faults it covered.

mod auth;
mod cache_behaviour;
mod fault_suite;

use std::collections::BTreeMap;
use std::time::Duration;

use spice_hf_cache::Cache;
use spice_hf_hub::{
    HfToken, HubClient, HubConfig, ModelRef, NoProgress, PullOptions, PullReport, RetryPolicy,
    Schedule,
};
use spice_hf_testkit::{FakeHub, fixtures, repo_with};

pub(crate) const REPO: &str = "org/tiny";
pub(crate) const TOKEN: &str = "hf_testtoken_0123456789";
pub(crate) const WEIGHTS: &str = "model.safetensors";

/// A fresh fake Hub serving `org/tiny` (the tiny Llama plus awkward names), a temp cache, and
/// the source bytes to compare with.
pub(crate) struct Env {
    pub(crate) hub: FakeHub,
    pub(crate) cache_dir: tempfile::TempDir,
    pub(crate) files: BTreeMap<String, Vec<u8>>,
}

pub(crate) fn source_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = fixtures::tiny_llama_files(7);
    files.insert(
        "nested/dir with space/#file [x] +ü.txt".into(),
        b"awkward name\n".to_vec(),
    );
    files.insert("empty.txt".into(), Vec::new());
    files
}

pub(crate) async fn env() -> Env {
    let files = source_files();
    let mirror = spice_hf_mirror::Mirror::new();
    mirror.add_repo(repo_with(REPO, &files));
    mirror.add_valid_tokens([TOKEN.to_string()]);
    let hub = FakeHub::start(mirror).await.expect("fake hub starts");
    Env {
        hub,
        cache_dir: tempfile::tempdir().unwrap(),
        files,
    }
}

pub(crate) fn fast_config(url: &str, token: Option<&str>) -> HubConfig {
    HubConfig {
        endpoint: url.to_string(),
        token: token.map(|t| HfToken::new(t).unwrap()),
        retry: RetryPolicy {
            schedule: Schedule::Exponential,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retries: 4,
            jitter: true,
            max_retry_after: Duration::from_secs(5),
        },
        connect_timeout: Duration::from_secs(2),
        header_timeout: Duration::from_millis(700),
        read_timeout: Duration::from_millis(700),
        max_parallel: 4,
        offline: false,
    }
}

impl Env {
    pub(crate) fn cache(&self) -> Cache {
        Cache::new(self.cache_dir.path())
    }

    pub(crate) fn client(&self) -> HubClient {
        HubClient::new(fast_config(self.hub.url(), Some(TOKEN))).unwrap()
    }

    pub(crate) async fn pull(
        &self,
        client: &HubClient,
        reference: &str,
    ) -> spice_hf_hub::Result<PullReport> {
        client
            .pull(
                &self.cache(),
                &ModelRef::parse(reference).unwrap(),
                &PullOptions::default(),
                &NoProgress,
            )
            .await
    }

    /// The cache holds nothing corrupt or unverified: every file the manifest lists matches the
    /// source bytes, and nothing but `.part` files is outside the manifest.
    pub(crate) fn assert_clean(&self, revision: &str) {
        let rev = self.cache().revision(REPO, revision).unwrap();
        let report = rev.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(
            report.extra.iter().all(|e| e.ends_with(".part")),
            "unverified files: {:?}",
            report.extra
        );
        if let Some(m) = rev.manifest().unwrap() {
            for path in m.files.keys() {
                let on_disk = std::fs::read(rev.file_path(path).unwrap()).unwrap();
                assert_eq!(&on_disk, &self.files[path], "{path}");
            }
        }
    }

    pub(crate) fn assert_complete(&self, report: &PullReport) {
        assert_eq!(report.files.len(), self.files.len());
        for (path, bytes) in &self.files {
            assert_eq!(
                &std::fs::read(report.dir.join(path)).unwrap(),
                bytes,
                "{path}"
            );
        }
        self.assert_clean("main");
    }
}
