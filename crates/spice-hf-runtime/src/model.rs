//! One served model: its engine loaded once (eagerly or on the first request, concurrent
//! callers sharing the load), its limiter, its health and the health probe.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use spice_hf_backend::{BackendKind, Skipped};
use spice_hf_models::generate::{Flow, GenerateParams};
use spice_hf_telemetry::names;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, field};

use crate::engine::{EmbeddingInput, Engine, Prompt, failed};
use crate::limiter::{Limiter, Permit};
use crate::spec::{ModelSpec, Source};
use crate::{Error, Result};

/// A model's state, as readiness and `/health` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Health {
    /// `not_loaded`, `loading`, `ready`, `unhealthy` or `failed`.
    pub fn state(&self) -> &'static str {
        match self {
            Self::NotLoaded => "not_loaded",
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Unhealthy(_) => "unhealthy",
            Self::Failed(_) => "failed",
        }
    }

    /// Why it is unhealthy or failed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Unhealthy(r) | Self::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// What the runtime knows about a model (the server's `/health` reports it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelInfo {
    /// Served name.
    pub name: String,
    /// State.
    pub health: Health,
    /// Backend in use, once loaded.
    pub backend: Option<BackendKind>,
    /// What the backend runs on, once loaded: `flex`, the wgpu adapter
    /// (`NVIDIA GeForce RTX 4090 (vulkan, discrete GPU)`), the CUDA devices and driver.
    pub device: Option<String>,
    /// Backends passed over, with the reason (the fallback users must be able to see).
    pub skipped_backends: Vec<Skipped>,
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
    /// Requests the limiter refused since the start.
    pub refused: u64,
    /// Tokens generated for requests since the start (health probes excluded).
    pub generated_tokens: u64,
}

/// A model served by the runtime.
pub struct ServedModel {
    spec: ModelSpec,
    limiter: Arc<Limiter>,
    engine: OnceCell<Arc<Engine>>,
    health: RwLock<Health>,
    pub(crate) shutdown: CancellationToken,
    /// Tokens generated for requests, counted as each one is generated.
    pub(crate) generated: Arc<AtomicU64>,
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
            generated: Arc::default(),
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
            backend: engine.map(|e| e.backend()),
            device: engine.map(|e| e.device().to_string()),
            skipped_backends: engine.map(|e| e.skipped().to_vec()).unwrap_or_default(),
            estimated_bytes: engine.map(|e| e.footprint().total()),
            peak_rss_bytes: engine.and_then(|e| e.peak_rss()),
            load_ms: engine.map(|e| e.load_ms()),
            path: engine.map(|e| e.source().clone()),
            chat_template: engine.is_some_and(|e| e.has_template()),
            context_length: self.spec.context_length,
            running: self.limiter.running(),
            waiting: self.limiter.waiting(),
            refused: self.limiter.refused(),
            generated_tokens: self.generated.load(Ordering::Relaxed),
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

    /// Admits a request: waits for a slot of the limiter (the wait recorded in
    /// `llm_queue_wait_ms` and the span's `queue_ms`, and returned in ms), then for the engine
    /// on that slot.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        span: &tracing::Span,
    ) -> Result<(Arc<Engine>, Permit, f64)> {
        let (permit, waited) = self.limiter().acquire().await?;
        let queue_ms = waited.as_secs_f64() * 1000.0;
        metrics::histogram!(names::QUEUE_WAIT_MS, names::MODEL => self.name().to_string())
            .record(queue_ms);
        span.record("queue_ms", queue_ms);
        let (engine, permit) = self.engine_holding(permit).await?;
        Ok((engine, permit, queue_ms))
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
                        span.record("backend", engine.backend().name());
                        span.record("estimated_bytes", engine.footprint().total());
                        if let Some(rss) = engine.peak_rss() {
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
        let started = Instant::now();
        let path = match &self.spec.source {
            Source::Path(p) => p.clone(),
            Source::Fetch(fetch) => fetch().await.map_err(|e| failed(&name, e))?,
        };
        let spec = self.spec.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::load(&spec, &path))
            .await
            .map_err(|e| Error::Load {
                model: name.clone(),
                reason: format!("the load task failed: {e}"),
                cause: None,
            })??;
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::histogram!(names::MODEL_LOAD_MS, names::MODEL => self.spec.name.clone(), names::BACKEND => engine.backend().name()).record(load_ms);
        tracing::info!(
            model = %self.spec.name,
            backend = %engine.backend(),
            load_ms = load_ms as u64,
            estimated_mib = engine.footprint().total() >> 20,
            peak_rss_mib = engine.peak_rss().map(|b| b >> 20),
            "model loaded"
        );
        Ok(engine.with_load_ms(load_ms))
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
        let Ok(permit) = self.limiter.try_acquire() else {
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
                if engine.is_encoder() {
                    // An encoder's probe: the prompt's vector, finite.
                    let out = engine.embed(&[EmbeddingInput::Text(prompt)], true)?;
                    let v = out
                        .vectors
                        .first()
                        .ok_or_else(|| Error::Internal("the probe embedded nothing".into()))?;
                    if v.is_empty() || !v.iter().all(|x| x.is_finite()) {
                        return Err(Error::Internal(
                            "the probe's vector is empty or not finite".into(),
                        ));
                    }
                    return Ok(format!("{} dimensions", v.len()));
                }
                let ids = engine.prompt_ids(&Prompt::Text(prompt), "health_prompt")?;
                let params = GenerateParams {
                    max_tokens: 4,
                    ..GenerateParams::default()
                };
                let flow = |_: &str| {
                    if cancel.is_cancelled() {
                        Flow::Cancel
                    } else {
                        Flow::Continue
                    }
                };
                let out = engine.generate(&ids, &params, None, flow, "the probe")?;
                if out.token_ids.is_empty() {
                    return Err(Error::Internal("the probe generated no token".into()));
                }
                Ok(out.text)
            };
            let result = run();
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
