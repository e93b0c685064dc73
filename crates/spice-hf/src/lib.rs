//! spice-hf: run Hugging Face models locally, in production.
//!
//! This crate only re-exports the layers, each as a module, so a type reached through the
//! facade is the very type of the layer crate and the two can be mixed:
//!
//! - [`hub`]: model references, tokens, the retrying, verifying Hub client ([`spice_hf_hub`]).
//! - [`cache`]: the verified on-disk cache ([`spice_hf_cache`]).
//!
//! Backends, models, the runtime and telemetry join as their crates land.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spice_hf::hub::{HubClient, HubConfig, ModelRef, NoProgress, PullOptions};
//! let client = HubClient::new(HubConfig::from_env(None)?)?;
//! let cache = spice_hf::cache::Cache::from_env()?;
//! let model = ModelRef::parse("HuggingFaceTB/SmolLM2-135M-Instruct")?;
//! client.pull(&cache, &model, &PullOptions::default(), &NoProgress).await?;
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features yet; the backend features (`cuda`, `wgpu`, `metal`,
//! `vulkan`) arrive with the backend layer.

pub use spice_hf_cache as cache;
pub use spice_hf_hub as hub;

#[cfg(test)]
mod tests;
