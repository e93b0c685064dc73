//! One served model: its specification, its lazily or eagerly loaded engine (weights,
//! tokenizer, template on the chosen backend), its limiter, and its health.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde::Serialize;
use spice_hf_backend::BackendKind;
use spice_hf_models::chat::ChatTemplate;
use spice_hf_models::footprint::{Footprint, Usage, WeightStorage, available_memory, peak_rss};
use spice_hf_models::generate::{Flow, GenerateParams};
use spice_hf_models::llama::{Activations, Compute, CpuOptions, KvDtype};
use spice_hf_models::loaded::{LoadedModel, ModelFiles};
use spice_hf_telemetry::names;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, field};

use crate::limiter::{Limiter, LimiterConfig, Permit};
use crate::{Error, Result};

/// The future a [`Source::Fetch`] returns: the local path of the model, or why it could not be
/// fetched.
pub type SourceFuture = BoxFuture<'static, std::result::Result<PathBuf, String>>;

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

/// How to serve one model.
#[derive(Debug, Clone)]
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

/// A model's state, as readiness and `/health` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Health {
    /// Not loaded yet (lazy models before their first request).
    NotLoaded,
    /// Loading or warming up.
    Loading,
    /// Loaded, and the last probe generated.
    Ready,
    /// Loaded, but the last probe failed (a later success restores it).
    Unhealthy(String),
    /// The load failed (the next request retries it).
    Failed(String),
}

/// What `/health` and `/v1/models` say about a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Served name.
    pub name: String,
    /// State.
    pub health: Health,
    /// Backend in use, once loaded.
    pub backend: Option<String>,
    /// What the backend runs on, once loaded: `flex`, the wgpu adapter
    /// (`NVIDIA GeForce RTX 4090 (vulkan, discrete GPU)`), the CUDA devices and driver.
    pub device: Option<String>,
    /// Backends passed over, with the reason (the fallback users must be able to see).
    pub skipped_backends: Vec<(String, String)>,
    /// The footprint estimate in bytes, once computed.
    pub estimated_bytes: Option<u64>,
    /// Peak resident memory of the process after the load, in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Load time in milliseconds.
    pub load_ms: Option<f64>,
    /// The file or directory loaded.
    pub path: Option<PathBuf>,
    /// Whether it has a chat template (without one, only plain completion works).
    pub chat_template: bool,
    /// Context length.
    pub context_length: usize,
    /// Requests generating now.
    pub running: usize,
    /// Requests queued now.
    pub waiting: usize,
}

/// A loaded model and what the load found.
pub(crate) struct Engine {
    pub(crate) loaded: LoadedModel,
    pub(crate) template: Option<ChatTemplate>,
    backend: BackendKind,
    device: String,
    skipped: Vec<(String, String)>,
    footprint: Footprint,
    load_ms: f64,
    peak_rss: Option<u64>,
}

/// A model served by the runtime.
pub struct ServedModel {
    spec: ModelSpec,
    limiter: Arc<Limiter>,
    engine: OnceCell<Arc<Engine>>,
    health: RwLock<Health>,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("name", &self.spec.name)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl ServedModel {
    pub(crate) fn new(spec: ModelSpec, shutdown: CancellationToken) -> Self {
        zero_counters(&spec.name);
        Self {
            limiter: Limiter::new(&spec.name, spec.limits.clone()),
            spec,
            engine: OnceCell::new(),
            health: RwLock::new(Health::NotLoaded),
            shutdown,
        }
    }

    /// The served name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec it was created from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Its state.
    pub fn health(&self) -> Health {
        self.health
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_health(&self, h: Health) {
        *self.health.write().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// What `/health` reports.
    pub fn info(&self) -> ModelInfo {
        let engine = self.engine.get();
        ModelInfo {
            name: self.spec.name.clone(),
            health: self.health(),
            backend: engine.map(|e| e.backend.name().to_string()),
            device: engine.map(|e| e.device.clone()),
            skipped_backends: engine.map(|e| e.skipped.clone()).unwrap_or_default(),
            estimated_bytes: engine.map(|e| e.footprint.total()),
            peak_rss_bytes: engine.and_then(|e| e.peak_rss),
            load_ms: engine.map(|e| e.load_ms),
            path: engine.map(|e| e.loaded.source.clone()),
            chat_template: engine.is_some_and(|e| e.template.is_some()),
            context_length: self.spec.context_length,
            running: self.limiter.running(),
            waiting: self.limiter.waiting(),
        }
    }

    /// Loads the model if it is not loaded (concurrent callers share one load), then runs the
    /// warm-up probe the first time. A failed load is recorded and retried by the next call.
    pub async fn ensure_loaded(self: Arc<Self>) -> Result<()> {
        self.engine().await.map(|_| ())
    }

    pub(crate) async fn engine(self: &Arc<Self>) -> Result<Arc<Engine>> {
        let engine = self.load_once().await?;
        if self.health() == Health::Loading {
            if self.spec.warm_up {
                // First use after the load: the warm-up probe decides readiness.
                self.probe(&self.spec.health_prompt).await;
            } else {
                self.set_health(Health::Ready);
            }
        }
        Ok(engine)
    }

    /// [`Self::engine`] for a request that already holds a slot: the warm-up probe runs on
    /// that slot (it could not get another while the request waits for it), and the slot is
    /// handed back.
    pub(crate) async fn engine_holding(
        self: &Arc<Self>,
        permit: Permit,
    ) -> Result<(Arc<Engine>, Permit)> {
        let engine = self.load_once().await?;
        let mut permit = permit;
        if self.health() == Health::Loading {
            if self.spec.warm_up {
                let prompt = self.spec.health_prompt.clone();
                permit = self
                    .probe_with(&engine, permit, &prompt)
                    .await
                    .1
                    .ok_or(Error::ShuttingDown)?;
            } else {
                self.set_health(Health::Ready);
            }
        }
        Ok((engine, permit))
    }

    async fn load_once(self: &Arc<Self>) -> Result<Arc<Engine>> {
        let this = self.clone();
        let engine = self
            .engine
            .get_or_try_init(|| async move {
                this.set_health(Health::Loading);
                let span = tracing::info_span!(
                    target: "spice_hf_runtime",
                    "model_load",
                    model = %this.spec.name,
                    backend = field::Empty,
                    estimated_bytes = field::Empty,
                    peak_rss_bytes = field::Empty,
                    error = field::Empty,
                );
                let result = this.clone().load().instrument(span.clone()).await;
                match result {
                    Ok(engine) => {
                        span.record("backend", engine.backend.name());
                        span.record("estimated_bytes", engine.footprint.total());
                        if let Some(rss) = engine.peak_rss {
                            span.record("peak_rss_bytes", rss);
                        }
                        Ok(Arc::new(engine))
                    }
                    Err(e) => {
                        span.record("error", e.to_string());
                        tracing::error!(model = %this.spec.name, error = %e, "model load failed");
                        this.set_health(Health::Failed(e.to_string()));
                        Err(e)
                    }
                }
            })
            .await?
            .clone();
        Ok(engine)
    }

    async fn load(self: Arc<Self>) -> Result<Engine> {
        let name = self.spec.name.clone();
        let load_err = |reason: String| Error::Load {
            model: name.clone(),
            reason,
        };
        let started = Instant::now();
        let path = match &self.spec.source {
            Source::Path(p) => p.clone(),
            Source::Fetch(fetch) => fetch().await.map_err(&load_err)?,
        };
        let spec = self.spec.clone();
        let engine = tokio::task::spawn_blocking(move || -> Result<Engine> {
            let load_err = |reason: String| Error::Load {
                model: spec.name.clone(),
                reason,
            };
            let files = ModelFiles::open(&path).map_err(|e| load_err(e.to_string()))?;
            let choice =
                spice_hf_backend::choose(spec.backend).map_err(|e| load_err(e.to_string()))?;
            // Every request that may run at once holds a KV cache of the whole context.
            let usage = Usage {
                context: spec.context_length,
                sequences: spec.limits.max_concurrency.get(),
                headroom: spec.headroom,
                storage: if choice.kind == BackendKind::Cpu {
                    WeightStorage::Packed
                } else {
                    WeightStorage::F32
                },
                kv: spec.kv_cache,
            };
            let footprint = files
                .footprint(&usage)
                .map_err(|e| load_err(e.to_string()))?;
            for s in &choice.skipped {
                let reason = if s.kind.compiled() {
                    "unavailable"
                } else {
                    "not_compiled"
                };
                metrics::counter!(names::BACKEND_FALLBACK, names::MODEL => spec.name.clone(), names::BACKEND => s.kind.name(), names::REASON => reason).increment(1);
            }
            if let Some(available) = available_memory()
                && footprint.total() > available
            {
                return Err(load_err(format!(
                    "it needs about {} MiB ({} MiB of weights, {} MiB of KV cache for {} x {} positions, {:.0} % headroom) \
                     but {} MiB are available on the {} device; use a smaller quantization, a shorter context_length, \
                     a lower max_concurrency, or the CPU backend",
                    footprint.total() >> 20,
                    footprint.weights_bytes >> 20,
                    footprint.kv_cache_bytes >> 20,
                    usage.sequences,
                    spec.context_length,
                    spec.headroom * 100.0,
                    available >> 20,
                    choice.kind
                )));
            }
            // The CPU backend runs our kernels over the packed weights; GPU devices run Burn.
            let compute = if choice.kind == BackendKind::Cpu {
                let mut cpu = CpuOptions::default()
                    .with_kv(spec.kv_cache)
                    .with_activations(spec.activations);
                if let Some(threads) = spec.threads {
                    cpu = cpu.with_threads(threads);
                }
                Compute::Cpu(cpu)
            } else {
                Compute::Burn(choice.device.clone())
            };
            let loaded = files
                .load(spec.context_length, &compute)
                .map_err(|e| load_err(e.to_string()))?;
            let template = match &spec.chat_template {
                Some(source) => {
                    let text = |id: Option<u32>| {
                        id.and_then(|i| loaded.tokenizer.id_to_token(i))
                            .unwrap_or_default()
                    };
                    Some(ChatTemplate::new(
                        source,
                        &text(loaded.tokenizer.bos),
                        &text(loaded.tokenizer.eos.first().copied()),
                    ))
                }
                None => loaded.template.clone(),
            };
            let device = loaded
                .model
                .compute_detail()
                .unwrap_or_else(|| choice.detail.clone());
            Ok(Engine {
                loaded,
                template,
                backend: choice.kind,
                device,
                skipped: choice
                    .skipped
                    .iter()
                    .map(|s| (s.kind.name().to_string(), s.reason.clone()))
                    .collect(),
                footprint,
                load_ms: 0.0,
                peak_rss: peak_rss(),
            })
        })
        .await
        .map_err(|e| load_err(format!("the load task failed: {e}")))??;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::histogram!(names::MODEL_LOAD_MS, names::MODEL => self.spec.name.clone(), names::BACKEND => engine.backend.name()).record(load_ms);
        tracing::info!(
            model = %self.spec.name,
            backend = %engine.backend,
            load_ms = load_ms as u64,
            estimated_mib = engine.footprint.total() >> 20,
            peak_rss_mib = engine.peak_rss.map(|b| b >> 20),
            "model loaded"
        );
        Ok(Engine { load_ms, ..engine })
    }

    /// The health check: a short real generation of the configured prompt.
    pub async fn health_check(self: &Arc<Self>) -> Health {
        let prompt = self.spec.health_prompt.clone();
        self.probe(&prompt).await
    }

    /// A health probe with a given prompt: a greedy generation of up to 4 tokens in a `health`
    /// span (not counted in the `llm_*` metrics). Success makes the model ready, failure
    /// unhealthy with the reason. A model that is busy generating is left as it is (it is
    /// evidently working) and so is one not loaded yet.
    pub async fn probe(self: &Arc<Self>, prompt: &str) -> Health {
        let Some(engine) = self.engine.get().cloned() else {
            return self.health();
        };
        let Some(permit) = self.limiter.try_acquire() else {
            return self.health();
        };
        self.probe_with(&engine, permit, prompt).await.0
    }

    /// The probe on a slot already held; returns the health and the slot.
    async fn probe_with(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        permit: Permit,
        prompt: &str,
    ) -> (Health, Option<Permit>) {
        let engine = engine.clone();
        let span = tracing::info_span!(
            target: "spice_hf_runtime",
            "health",
            model = %self.spec.name,
            input = prompt,
            captured_output = field::Empty,
            error = field::Empty,
        );
        let prompt = prompt.to_string();
        let cancel = self.shutdown.clone();
        let probe_span = span.clone();
        let (result, permit) = match tokio::task::spawn_blocking(move || {
            let _entered = probe_span.enter();
            let run = || -> Result<String> {
                let ids = crate::session::prompt_ids(
                    &engine,
                    &crate::session::Prompt::Text(prompt),
                    "health_prompt",
                )?;
                let params = GenerateParams {
                    max_tokens: 4,
                    ..GenerateParams::default()
                };
                let out = spice_hf_models::generate::generate(
                    &engine.loaded.model,
                    &engine.loaded.tokenizer,
                    &ids,
                    &params,
                    |_| {
                        if cancel.is_cancelled() {
                            Flow::Cancel
                        } else {
                            Flow::Continue
                        }
                    },
                )?;
                if out.token_ids.is_empty() {
                    return Err(Error::Internal("the probe generated no token".into()));
                }
                Ok(out.text)
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|p| {
                    Err(Error::Internal(format!(
                        "the probe panicked: {}",
                        crate::panic_message(&*p)
                    )))
                });
            (result, permit)
        })
        .await
        {
            Ok((result, permit)) => (result, Some(permit)),
            // Only when the runtime shuts down before the task starts.
            Err(e) => (
                Err(Error::Internal(format!("the probe task failed: {e}"))),
                None,
            ),
        };
        let health = match result {
            Ok(text) => {
                span.record("captured_output", text.as_str());
                Health::Ready
            }
            Err(e) => {
                span.record("error", e.to_string().as_str());
                tracing::warn!(model = %self.spec.name, error = %e, "health probe failed");
                Health::Unhealthy(e.to_string())
            }
        };
        self.set_health(health.clone());
        (health, permit)
    }
}

/// Creates every counter series of a model at 0, so dashboards and alerts (`rate(...)`) work
/// from the first scrape instead of seeing no series until the first failure.
fn zero_counters(model: &str) {
    use spice_hf_models::generate::FinishReason;
    for stream in ["true", "false"] {
        metrics::counter!(names::REQUESTS, names::MODEL => model.to_string(), names::STREAM => stream)
            .increment(0);
        for kind in names::ERROR_KINDS {
            metrics::counter!(names::FAILURES, names::MODEL => model.to_string(), names::STREAM => stream, names::ERROR_KIND => *kind)
                .increment(0);
        }
        for reason in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
        ] {
            metrics::counter!(names::FINISHED, names::MODEL => model.to_string(), names::STREAM => stream, names::FINISH_REASON => reason.as_str())
                .increment(0);
        }
    }
    metrics::counter!(names::PROMPT_TOKENS, names::MODEL => model.to_string()).increment(0);
    metrics::counter!(names::COMPLETION_TOKENS, names::MODEL => model.to_string()).increment(0);
}
