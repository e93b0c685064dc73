//! The reference client: the real `hf-hub` crate, used by interop tests and the pull benchmark.

use std::path::{Path, PathBuf};

/// Downloads every file of `org/name` at `main` from `endpoint` with `hf-hub` into its own
/// cache layout under `cache`; returns the snapshot directory.
pub async fn snapshot(
    endpoint: &str,
    org: &str,
    name: &str,
    cache: &Path,
) -> Result<PathBuf, String> {
    let client = hf_hub::HFClient::builder()
        .endpoint(endpoint)
        .cache_dir(cache)
        .build()
        .map_err(|e| e.to_string())?;
    client
        .model(org, name)
        .snapshot_download()
        .send()
        .await
        .map_err(|e| e.to_string())
}
