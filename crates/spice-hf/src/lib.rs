//! spice-hf: run Hugging Face models locally, in production.
//!
//! This crate only re-exports the layers, each as a module, so a type reached through the
//! facade is the very type of the layer crate and the two can be mixed:
//!
//! - [`hub`]: model references, tokens, the retrying, verifying Hub client ([`spice_hf_hub`]).
//! - [`cache`]: the verified on-disk cache ([`spice_hf_cache`]).
//! - [`backend`]: backend probing and selection ([`spice_hf_backend`]).
//! - [`models`]: GGUF/safetensors loading, the Llama family in Burn, tokenizers, chat templates,
//!   sampling ([`spice_hf_models`]).
//! - [`runtime`]: served models behind a limiter, sessions, health ([`spice_hf_runtime`]).
//! - [`telemetry`]: metric and span names, the task history ([`spice_hf_telemetry`]).
//!
//! Plus one builder that wires them, [`Model::builder`]:
//!
//! ```no_run
//! # async fn demo() -> spice_hf::Result<()> {
//! use spice_hf::models::chat::Message;
//! let model = spice_hf::Model::builder("HuggingFaceTB/SmolLM2-135M-Instruct")
//!     .backend(spice_hf::backend::BackendKind::Cpu)
//!     .load()
//!     .await?;
//! let answer = model.chat(&[Message::new("user", "Hi!")]).await?;
//! println!("{} ({} tokens)", answer.text, answer.completion_tokens);
//! # Ok(()) }
//! ```
//!
//! Or one layer alone:
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
//! This crate has no cargo features yet: the CPU backend is always compiled, and the GPU
//! features (`cuda`, `wgpu`, `metal`, `vulkan`) will be forwarded to the backend layer once.

pub use spice_hf_backend as backend;
pub use spice_hf_cache as cache;
pub use spice_hf_hub as hub;
pub use spice_hf_models as models;
pub use spice_hf_runtime as runtime;
pub use spice_hf_telemetry as telemetry;

mod model;
pub use model::{Error, Model, ModelBuilder, Result};

#[cfg(test)]
mod tests;
