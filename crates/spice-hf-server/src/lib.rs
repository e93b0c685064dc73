//! spice-hf's OpenAI-compatible HTTP API over the runtime, with axum:
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/chat/completions` | chat, JSON or SSE (`stream`, `stream_options.include_usage`) |
//! | `POST /v1/completions` | plain text completion, JSON or SSE |
//! | `GET /v1/models` | the served models |
//! | `GET /` | the status page (HTML, CSS and JavaScript embedded; its data comes from the routes below) |
//! | `GET /v1/status/samples` | the last ten minutes of tokens/s and queue per model, one sample a second |
//! | `GET /health` | liveness (always 200 while the process serves), with each model's state and backend |
//! | `GET /v1/ready` | 200 once every initially loaded model passed its warm-up, else 503 |
//! | `GET /metrics` | Prometheus text (when the binary installed a recorder) |
//! | `GET /v1/task_history` | recent task-history rows (`task`, `since`, `until`, `trace_id`, `limit`) |
//!
//! Errors use OpenAI's envelope (`error.message`, `type`, `param`, `code`). A full queue answers
//! 503 with `Retry-After`; an unknown model 404; a malformed body 400 naming the field. A client
//! that disconnects cancels its request, queued or running. With an API key set, every route
//! but the probes (`/health`, `/v1/ready`) needs `Authorization: Bearer <key>`, compared in
//! constant time.
//!
//! This is the only library crate that knows HTTP serving; it exposes axum's `Router` so a
//! caller can nest it. It installs no subscriber or recorder.
//!
//! ```no_run
//! # async fn demo(runtime: spice_hf_runtime::Runtime) -> std::io::Result<()> {
//! let app = spice_hf_server::App::new(runtime);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! spice_hf_server::serve(listener, app, std::future::pending(), std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod openai;
mod routes;
mod samples;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use openai::IGNORED_FIELDS;
use openai::{ErrorBody, ErrorDetail};
pub use spice_hf_listen::Limits;
use spice_hf_runtime::Runtime;
use spice_hf_telemetry::{TaskHistory, TaskHistoryLayer};

/// Renders the Prometheus text exposition.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the server serves, and how.
#[derive(Clone)]
pub struct App {
    runtime: Runtime,
    metrics: Option<MetricsRenderer>,
    history: Option<TaskHistory>,
    /// The writer whose pending rows a read waits for.
    history_writer: Option<TaskHistoryLayer>,
    api_key_digest: Option<[u8; 32]>,
    /// `/metrics` answers without the API key.
    public_metrics: bool,
    /// The status page's samples.
    samples: Arc<samples::Samples>,
    limits: spice_hf_listen::Limits,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("runtime", &self.runtime)
            .field("metrics", &self.metrics.is_some())
            .field("history", &self.history)
            .field("api_key", &self.api_key_digest.map(|_| "***"))
            .field("public_metrics", &self.public_metrics)
            .field("limits", &self.limits)
            .finish()
    }
}

impl App {
    /// Serves `runtime` with no metrics, no task history and no API key.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            metrics: None,
            history: None,
            history_writer: None,
            api_key_digest: None,
            public_metrics: false,
            samples: Arc::default(),
            limits: spice_hf_listen::Limits::default(),
        }
    }

    /// What one client may hold: open connections, header and body timeouts (by default
    /// [`spice_hf_listen::Limits::default`]).
    pub fn with_limits(mut self, limits: spice_hf_listen::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// `/metrics` answers with what `render` returns.
    pub fn with_metrics(mut self, render: MetricsRenderer) -> Self {
        self.metrics = Some(render);
        self
    }

    /// `/v1/task_history` reads from `history`.
    pub fn with_task_history(mut self, history: TaskHistory) -> Self {
        self.history = Some(history);
        self
    }

    /// `/v1/task_history` first waits (at most 10 s) for the rows `writer` has queued, so a
    /// request that has finished is in the answer (rows are written by a background thread).
    pub fn with_task_history_writer(mut self, writer: TaskHistoryLayer) -> Self {
        self.history_writer = Some(writer);
        self
    }

    /// Requires `Authorization: Bearer <key>` on every route but `/health` and `/v1/ready`
    /// (and `/metrics` with [`App::with_public_metrics`]). Only a digest of the key is kept.
    pub fn with_api_key(mut self, key: &str) -> Self {
        use sha2::Digest as _;
        self.api_key_digest = Some(sha2::Sha256::digest(key.as_bytes()).into());
        self
    }

    /// With `public`, `/metrics` answers without the API key, for scrapers that cannot send
    /// one (Prometheus by pod annotations, the Gateway API inference extension's endpoint
    /// picker). The exposition holds model names and counts, never prompts or outputs.
    pub fn with_public_metrics(mut self, public: bool) -> Self {
        self.public_metrics = public;
        self
    }

    /// The runtime served.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The axum router.
    pub fn router(self) -> axum::Router {
        routes::router(Arc::new(self))
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops admitting requests, lets
/// running ones finish for up to `grace`, cancels what is left, and returns once every
/// connection is closed (or a few seconds after cancelling, whichever comes first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let runtime = app.runtime.clone();
    let limits = app.limits;
    // The status page's samples, while the server runs.
    let sampler = {
        let (samples, runtime) = (app.samples.clone(), runtime.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(samples::EVERY);
            loop {
                tick.tick().await;
                samples.take(&runtime);
            }
        })
    };
    let _stop_sampler = AbortOnDrop(sampler);
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let server = spice_hf_listen::serve(listener, app.router(), limits, async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests; waiting for running ones");
        let _ = stopping_tx.send(true);
    });
    let watchdog = {
        let runtime = runtime.clone();
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
            runtime.stop_admitting();
            let deadline = tokio::time::Instant::now() + grace;
            while runtime.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if runtime.in_flight() > 0 {
                tracing::warn!(
                    in_flight = runtime.in_flight(),
                    "grace period over; cancelling running requests"
                );
            }
            runtime.cancel_all();
            // Streams end within a decode step once cancelled; do not wait forever on a
            // client that keeps its connection open.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    tokio::select! {
        r = server => r,
        () = watchdog => {
            tracing::warn!("connections still open after cancelling; closing them");
            Ok(())
        }
    }
}

/// Aborts a background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error answer in OpenAI's envelope.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<String>,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// 400 for an invalid field.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_value",
            param: Some(field.to_string()),
            message: format!("invalid `{field}`: {}", message.into()),
            retry_after: None,
        }
    }

    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            param: None,
            message,
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind,
                param: self.param.clone(),
                code: self.code,
            },
        }
    }
}

impl From<spice_hf_runtime::Error> for ApiError {
    fn from(e: spice_hf_runtime::Error) -> Self {
        use spice_hf_runtime::Error as E;
        let message = e.to_string();
        let mut out = match &e {
            E::NotFound(_) => Self {
                param: Some("model".into()),
                ..Self::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    message,
                )
            },
            E::Invalid { field, .. } => Self {
                param: Some(field.clone()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_value",
                    message,
                )
            },
            E::Template(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "chat_template_error",
                message,
            ),
            E::ContextLength { .. } => Self {
                param: Some("messages".into()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "context_length_exceeded",
                    message,
                )
            },
            E::InputLength { .. } => Self {
                param: Some("input".into()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "context_length_exceeded",
                    message,
                )
            },
            E::Overloaded { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_overloaded",
                "server_overloaded",
                message,
            ),
            E::QueueTimeout { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_overloaded",
                "queue_timeout",
                message,
            ),
            E::RateLimited { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                message,
            ),
            E::NotReady { .. } | E::Load { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "model_not_ready",
                message,
            ),
            E::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "shutting_down",
                message,
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                message,
            ),
        };
        out.retry_after = e.retry_after();
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            // `Retry-After` has whole seconds (rounded up, never 0); `retry-after-ms` (OpenAI's
            // clients read it first) the exact wait.
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
            headers.insert("retry-after-ms", HeaderValue::from(ms));
        }
        response
    }
}
