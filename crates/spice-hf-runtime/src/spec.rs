//! How to serve one model ([`ModelSpec`]) and where its files come from ([`Source`]).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use spice_hf_backend::BackendKind;
use spice_hf_models::generate::GenerateParams;
use spice_hf_models::llama::{Activations, KvDtype};

use crate::limiter::LimiterConfig;
use crate::{Error, Result};

/// The future a [`Source::Fetch`] returns: the local path of the model, or why it could not be
/// fetched (the caller's own error, which [`Error::cause`] hands back).
pub type SourceFuture = BoxFuture<'static, std::result::Result<PathBuf, Cause>>;

/// An error kept whole under a runtime error ([`Error::cause`]); shared, so the runtime error
/// stays `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Where a model's files come from.
#[derive(Clone)]
pub enum Source {
    /// A `.gguf` file or a model directory on disk.
    Path(PathBuf),
    /// A fetch the caller provides (the CLI pulls from the Hub here); called once per load.
    Fetch(Arc<dyn Fn() -> SourceFuture + Send + Sync>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Fetch(_) => f.write_str("Fetch(..)"),
        }
    }
}

/// How to serve one model: [`ModelSpec::new`] and the `with_` setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelSpec {
    /// The name clients use (`model` in requests, `id` in `/v1/models`).
    pub name: String,
    /// Where its files come from.
    pub source: Source,
    /// The backend to use (`None`: the best available).
    pub backend: Option<BackendKind>,
    /// Context length (prompt plus answer) the KV cache is sized for.
    pub context_length: usize,
    /// Load at start (`true`) or on the first request.
    pub initial_load: bool,
    /// Admission limits.
    pub limits: LimiterConfig,
    /// Generation defaults a request's fields override.
    pub defaults: GenerateParams,
    /// A chat template replacing the model's own.
    pub chat_template: Option<String>,
    /// Record prompts and outputs in spans and the task history.
    pub capture_content: bool,
    /// Memory headroom added to the footprint estimate, as a fraction.
    pub headroom: f64,
    /// The prompt of the health probe.
    pub health_prompt: String,
    /// Run the health probe once after the load before declaring the model ready (default
    /// `true`; a one-shot command line run can skip it).
    pub warm_up: bool,
    /// Threads the CPU kernels use (`None`: the physical cores). Ignored on GPU backends.
    pub threads: Option<usize>,
    /// How the CPU kernels store keys and values (f16 by default; f32 doubles the cache for
    /// the f32 reference's exact attention). Counted in the memory preflight.
    pub kv_cache: KvDtype,
    /// f32 activations (default) or the opt-in 8-bit path of the CPU kernels (faster, logits
    /// within a few percent). Ignored on GPU backends.
    pub activations: Activations,
}

impl ModelSpec {
    /// A spec with the defaults: best backend, 2048 positions, loaded at start, one request at a
    /// time with 16 waiting, greedy, content captured, 25 % headroom.
    pub fn new(name: &str, source: Source) -> Self {
        Self {
            name: name.to_string(),
            source,
            backend: None,
            context_length: 2048,
            initial_load: true,
            limits: LimiterConfig::default(),
            defaults: GenerateParams::default(),
            chat_template: None,
            capture_content: true,
            headroom: 0.25,
            health_prompt: "ping".to_string(),
            warm_up: true,
            threads: None,
            kv_cache: KvDtype::F16,
            activations: Activations::F32,
        }
    }

    /// On `backend` (`None`: the best available).
    pub fn with_backend(mut self, backend: Option<BackendKind>) -> Self {
        self.backend = backend;
        self
    }

    /// With a KV cache sized for `positions` (prompt plus answer).
    pub fn with_context_length(mut self, positions: usize) -> Self {
        self.context_length = positions;
        self
    }

    /// Loaded at start (`true`) or on the first request.
    pub fn with_initial_load(mut self, initial_load: bool) -> Self {
        self.initial_load = initial_load;
        self
    }

    /// Behind `limits`.
    pub fn with_limits(mut self, limits: LimiterConfig) -> Self {
        self.limits = limits;
        self
    }

    /// With the generation defaults a request's fields override.
    pub fn with_defaults(mut self, defaults: GenerateParams) -> Self {
        self.defaults = defaults;
        self
    }

    /// With a chat template replacing the model's own (`None`: the model's).
    pub fn with_chat_template(mut self, chat_template: Option<String>) -> Self {
        self.chat_template = chat_template;
        self
    }

    /// Recording prompts and outputs in spans and the task history, or not.
    pub fn with_capture_content(mut self, capture_content: bool) -> Self {
        self.capture_content = capture_content;
        self
    }

    /// With memory headroom added to the footprint estimate, as a fraction.
    pub fn with_headroom(mut self, headroom: f64) -> Self {
        self.headroom = headroom;
        self
    }

    /// With the prompt of the health probe.
    pub fn with_health_prompt(mut self, health_prompt: String) -> Self {
        self.health_prompt = health_prompt;
        self
    }

    /// Running the health probe once after the load before declaring the model ready, or not.
    pub fn with_warm_up(mut self, warm_up: bool) -> Self {
        self.warm_up = warm_up;
        self
    }

    /// With `threads` for the CPU kernels (`None`: the physical cores).
    pub fn with_threads(mut self, threads: Option<usize>) -> Self {
        self.threads = threads;
        self
    }

    /// With keys and values stored as `kv_cache` by the CPU kernels.
    pub fn with_kv_cache(mut self, kv_cache: KvDtype) -> Self {
        self.kv_cache = kv_cache;
        self
    }

    /// With `activations` for the CPU kernels.
    pub fn with_activations(mut self, activations: Activations) -> Self {
        self.activations = activations;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.name.is_empty()
            || self.name.len() > 256
            || self.name.chars().any(|c| c.is_control() || c == ' ')
        {
            return bad(format!(
                "model name {:?} must be 1-256 characters without spaces or control characters",
                self.name
            ));
        }
        if self.context_length < 8 {
            return bad(format!(
                "model `{}`: context_length {} is too small (at least 8)",
                self.name, self.context_length
            ));
        }
        if let Some(t) = self.threads
            && !(1..=1024).contains(&t)
        {
            return bad(format!(
                "model `{}`: threads {t} must be between 1 and 1024",
                self.name
            ));
        }
        if !(0.0..=4.0).contains(&self.headroom) {
            return bad(format!(
                "model `{}`: headroom {} must be between 0 and 4",
                self.name, self.headroom
            ));
        }
        Ok(())
    }
}
