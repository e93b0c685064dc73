//! spice-hf's runtime: the models a process serves, each behind its own rate limiter, with one
//! session API (generate, stream, cancel) that the server, the CLI and library users share, and
//! a health probe that runs a real generation.
//!
//! It composes the model and backend layers and knows nothing of HTTP: where a model's files
//! come from is a [`Source`] (a path, or a closure the caller provides, such as a Hub pull).
//! It emits `ai_completion` / `health` / `model_load` spans and the `llm_*` metrics named in
//! [`spice_hf_telemetry::names`]; it installs no subscriber or recorder.
//!
//! ```no_run
//! # async fn demo() -> spice_hf_runtime::Result<()> {
//! use spice_hf_runtime::{CompletionRequest, Message, ModelSpec, Prompt, Runtime, Source};
//!
//! let runtime = Runtime::new(vec![ModelSpec::new("smollm2", Source::Path("model.gguf".into()))])?;
//! runtime.load_initial().await;
//! let model = runtime.model("smollm2")?;
//! let answer = model
//!     .generate(CompletionRequest::new(Prompt::Chat(vec![Message::new("user", "Hi")])))
//!     .await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features; backends are chosen by `spice-hf-backend`'s.

mod embed;
mod engine;
mod limiter;
mod model;
mod session;
mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use embed::{EmbeddingInput, EmbeddingRequest, Embeddings, MAX_INPUTS};
pub use engine::Prompt;
pub use limiter::{Limiter, LimiterConfig, Permit};
pub use model::{Health, ModelInfo, ServedModel};
pub use session::{Completion, CompletionRequest, CompletionStream, Event};
pub use spec::{Cause, ModelSpec, Source, SourceFuture};
/// The backend a model runs on, and those passed over ([`ModelInfo`]).
pub use spice_hf_backend::{BackendKind, Skipped};
/// Output constraints ([`CompletionRequest::constraint`]) and tools
/// ([`CompletionRequest::tools`]): what a request may ask, and the calls an answer makes.
pub use spice_hf_grammar::Constraint;
pub use spice_hf_grammar::tools::{Tool, ToolCall, ToolChoice, Tools};
/// A chat message ([`Prompt::Chat`]).
pub use spice_hf_models::chat::Message;
/// Generation parameters ([`CompletionRequest::params`]) and why a generation ended
/// ([`Completion::finish_reason`]).
pub use spice_hf_models::generate::{FinishReason, GenerateParams};
/// How the CPU kernels run ([`ModelSpec::kv_cache`], [`ModelSpec::activations`]).
pub use spice_hf_models::llama::{Activations, KvDtype};
/// Sampling parameters ([`GenerateParams::sampling`]).
pub use spice_hf_models::sampling::SamplingParams;
use tokio_util::sync::CancellationToken;

/// Errors of the runtime. [`Error::kind`] maps each to the closed set of metric labels.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No model by that name is served.
    #[error("model `{0}` is not served here; list the served models with GET /v1/models")]
    NotFound(String),
    /// The queue is full.
    #[error(
        "model `{model}` is overloaded: {queued} requests are already waiting; retry after {} s",
        retry_after.as_secs()
    )]
    Overloaded {
        /// The model.
        model: String,
        /// Requests ahead in the queue.
        queued: usize,
        /// When to retry.
        retry_after: Duration,
    },
    /// The request waited longer than the queue timeout.
    #[error(
        "model `{model}` is busy: waited {} ms in the queue without a free slot; retry after {} s",
        waited.as_millis(), retry_after.as_secs()
    )]
    QueueTimeout {
        /// The model.
        model: String,
        /// How long it waited.
        waited: Duration,
        /// When to retry.
        retry_after: Duration,
    },
    /// The requests-per-minute limit was reached.
    #[error("model `{model}` allows no more requests this minute; retry after {} s", retry_after.as_secs())]
    RateLimited {
        /// The model.
        model: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// A request parameter is invalid.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The chat template failed or the model has none.
    #[error("{0}")]
    Template(String),
    /// The prompt does not fit the context.
    #[error(
        "the prompt has {prompt_tokens} tokens but the context holds {capacity}; shorten it or raise context_length"
    )]
    ContextLength {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Context positions.
        capacity: usize,
    },
    /// An embedding input is longer than the model takes.
    #[error(
        "input {index} has {tokens} tokens but the model takes at most {capacity}; shorten it, or send `truncate: true` to cut it"
    )]
    InputLength {
        /// Which input (from 0).
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// The model's most.
        capacity: usize,
    },
    /// The model is not loaded or not healthy.
    #[error("model `{model}` is not ready: {reason}")]
    NotReady {
        /// The model.
        model: String,
        /// Why (loading, or the load / probe error).
        reason: String,
    },
    /// A model could not be loaded.
    #[error("loading model `{model}` failed: {reason}")]
    Load {
        /// The model.
        model: String,
        /// Why.
        reason: String,
        /// The typed error it came from, when there is one ([`Error::cause`]).
        cause: Option<Cause>,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The runtime is shutting down.
    #[error("the server is shutting down; retry on another replica")]
    ShuttingDown,
    /// Generation failed.
    #[error("generation failed: {0}")]
    Internal(String),
    /// The model code failed (tokenizer, weights, forward pass); the error is kept whole.
    #[error("generation failed: {0}")]
    Model(Arc<spice_hf_models::Error>),
}

impl Error {
    /// The metric label for this error, one of [`spice_hf_telemetry::names::ERROR_KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::NotFound(_) | Self::Config(_) => "validation",
            Self::Overloaded { .. } => "overloaded",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Template(_) => "template",
            Self::ContextLength { .. } | Self::InputLength { .. } => "context_length",
            Self::NotReady { .. } | Self::Load { .. } | Self::ShuttingDown => "not_ready",
            Self::Internal(_) | Self::Model(_) => "internal",
        }
    }

    /// The typed error under a load or model failure, to downcast: a Hub pull's
    /// `spice_hf_hub::Error` (`Gated`, `RepoNotFound`, ...) from a [`Source::Fetch`], a
    /// `spice_hf_models::Error` or a `spice_hf_backend::Error` from the load. It is not
    /// [`std::error::Error::source`] because the message already includes it.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Load { cause, .. } => cause.as_deref(),
            Self::Model(e) => Some(&**e),
            _ => None,
        }
    }

    /// When the client may retry, for errors that have an answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after, .. }
            | Self::QueueTimeout { retry_after, .. }
            | Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::NotReady { .. } | Self::ShuttingDown => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

impl From<spice_hf_models::Error> for Error {
    fn from(e: spice_hf_models::Error) -> Self {
        match e {
            spice_hf_models::Error::Template(m) => Self::Template(m),
            spice_hf_models::Error::ContextFull { needed, capacity } => Self::ContextLength {
                prompt_tokens: needed,
                capacity,
            },
            other => Self::Model(Arc::new(other)),
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The models a process serves.
#[derive(Debug, Clone)]
pub struct Runtime {
    models: Arc<BTreeMap<String, Arc<ServedModel>>>,
    shutdown: CancellationToken,
}

impl Runtime {
    /// A runtime serving `specs` (nothing is loaded yet; see [`Runtime::load_initial`]).
    /// Duplicate or invalid names are an error.
    pub fn new(specs: Vec<ModelSpec>) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let mut models = BTreeMap::new();
        for spec in specs {
            spec.validate()?;
            let name = spec.name.clone();
            if models
                .insert(
                    name.clone(),
                    Arc::new(ServedModel::new(spec, shutdown.child_token())),
                )
                .is_some()
            {
                return Err(Error::Config(format!(
                    "model name `{name}` is used twice; give each model a distinct `name`"
                )));
            }
        }
        Ok(Self {
            models: Arc::new(models),
            shutdown,
        })
    }

    /// Loads (and warms up) every model marked `initial_load`, concurrently. Failures are
    /// recorded in each model's [`Health`]; they do not stop the others.
    pub async fn load_initial(&self) {
        let loads = self
            .models
            .values()
            .filter(|m| m.spec().initial_load)
            .map(|m| m.clone().ensure_loaded());
        futures_util::future::join_all(loads).await;
    }

    /// The model served as `name`.
    pub fn model(&self, name: &str) -> Result<Arc<ServedModel>> {
        self.models
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Every served model, by name.
    pub fn models(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.models.values()
    }

    /// Whether every `initial_load` model is loaded and passed its warm-up probe.
    pub fn ready(&self) -> bool {
        self.models
            .values()
            .filter(|m| m.spec().initial_load)
            .all(|m| m.health() == Health::Ready)
    }

    /// Requests queued or generating, over all models.
    pub fn in_flight(&self) -> usize {
        self.models
            .values()
            .map(|m| m.limiter().running() + m.limiter().waiting())
            .sum()
    }

    /// Stops admitting requests: every queued and future request is refused with
    /// [`Error::ShuttingDown`]. Running ones continue until [`Runtime::cancel_all`].
    pub fn stop_admitting(&self) {
        for m in self.models.values() {
            m.limiter().close();
        }
    }

    /// Cancels every running generation (each stops within one decode step).
    pub fn cancel_all(&self) {
        self.shutdown.cancel();
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
