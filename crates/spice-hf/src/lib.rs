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
//! Plus one builder that wires them, [`Model::builder`], and the function it resolves a model
//! reference with, [`source`] (a path, or a Hub reference pulled when the runtime loads it):
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
//! # Features
//!
//! The facade is where a build chooses its backends. Each feature is additive and forwarded
//! once, to [`spice_hf_backend`], which forwards it to Burn; selection among the compiled ones
//! happens at run time (CUDA, then wgpu, then the CPU, or the one forced with
//! [`ModelBuilder::backend`] or `SPICE_HF_BACKEND`).
//!
//! | feature | backend | needs at run time |
//! |---|---|---|
//! | `cpu` (default, always on) | Burn's `flex` | nothing |
//! | `wgpu` | wgpu: Vulkan (Linux, Windows), Metal (macOS), DX12 | a GPU driver |
//! | `vulkan` | `wgpu` with Burn's SPIR-V compiler | a Vulkan driver |
//! | `metal` | `wgpu` with Burn's native MSL compiler | Apple silicon / macOS |
//! | `cuda` | NVIDIA CUDA | the NVIDIA driver (`libcuda.so.1`); no toolkit |
//!
//! `cuda` builds need network access: Burn's CUDA stack downloads an LLVM bundle in its build
//! script. A backend that is not compiled in still has its
//! [`BackendKind`](backend::BackendKind) variant; forcing it is an error naming the feature.
//! Items that exist only with a feature (`backend::wgpu_adapters` with `wgpu`) carry the
//! feature's mark in these docs.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use spice_hf_backend as backend;
pub use spice_hf_cache as cache;
pub use spice_hf_hub as hub;
pub use spice_hf_models as models;
pub use spice_hf_runtime as runtime;
pub use spice_hf_telemetry as telemetry;

mod model;
pub use model::{Error, Model, ModelBuilder, Result, source};

#[cfg(test)]
mod tests;
