//! spice-hf's Hugging Face Hub client.
//!
//! Turns a model reference (`[hf:]org/name[@revision]`) into verified files in the
//! [`spice_hf_cache`] cache: token resolution (explicit > `HF_TOKEN` > `HF_TOKEN_PATH` >
//! `$HF_HOME/token` > `~/.cache/huggingface/token`), one retry policy (exponential or
//! Fibonacci, jitter, caps, `Retry-After`), timeouts on connect, headers and read inactivity,
//! resume with `Range`, a token that never leaves the hub origin, and errors told apart by
//! `X-Error-Code` that say what to do. It knows nothing of Burn or of serving.
//!
//! ```no_run
//! # async fn demo() -> spice_hf_hub::Result<()> {
//! use spice_hf_hub::{HubClient, HubConfig, ModelRef, NoProgress, PullOptions};
//! let client = HubClient::new(HubConfig::from_env(None)?)?;
//! let cache = spice_hf_cache::Cache::from_env()?;
//! let model = ModelRef::parse("HuggingFaceTB/SmolLM2-135M-Instruct@main")?;
//! let report = client.pull(&cache, &model, &PullOptions::default(), &NoProgress).await?;
//! println!("{} at {} in {}", report.model, report.commit, report.dir.display());
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod api;
mod client;
mod download;
mod error;
mod model_ref;
mod pull;
mod retry;
mod select;
#[cfg(test)]
mod tests;
mod token;
mod transport;

pub use client::{DEFAULT_ENDPOINT, HubClient, HubConfig, RemoteFile};
pub use download::{NoProgress, Progress, RangeParallel};
pub use error::Error;
pub use model_ref::{ModelRef, is_commit, validate_revision};
pub use pull::{PullOptions, PullReport, PulledFile, PulledState};
pub use retry::{RetryPolicy, Schedule};
pub use select::{Selection, gguf_quant_matches};
pub use token::{HfToken, TokenSource, env_truthy, resolve_token};

/// The hub client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
