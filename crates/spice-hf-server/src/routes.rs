//! The routes: request parsing and validation, JSON and SSE answers, the API-key check.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use spice_hf_runtime::{
    Completion, CompletionRequest, CompletionStream, Event, FinishReason, Health, Prompt,
};
use spice_hf_telemetry::{TaskFilter, names};

use crate::openai::{
    ChatRequest, Choice, CompletionBody, Delta, EmbeddingList, EmbeddingObject, EmbeddingUsage,
    EmbeddingValue, EmbeddingsRequest, List, ModelObject, Sampling, TextRequest, Usage, WireCall,
    WireCallDelta, check_fields,
};
use crate::status::{HealthBody, ModelHealth, Ready};
use crate::{ApiError, App};

type AppState = State<Arc<App>>;

pub(crate) fn router(app: Arc<App>) -> Router {
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let public_metrics = app.public_metrics;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(text))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/status/samples", get(status_samples))
        .route("/v1/task_history", get(task_history))
        .merge(if public_metrics {
            Router::new()
        } else {
            metrics_route.clone()
        })
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    // The probes answer without the key: a kubelet's probe cannot read it from a Secret, and
    // they tell no more than whether each model is loaded and healthy.
    Router::new()
        .route("/", get(status_page))
        .route("/status.js", get(status_script))
        .route("/health", get(health))
        .route("/v1/ready", get(ready))
        .merge(if public_metrics {
            metrics_route
        } else {
            Router::new()
        })
        .merge(protected)
        .with_state(app)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn auth(State(app): AppState, request: Request, next: Next) -> Response {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let Some(expected) = app.api_key_digest else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(key) if bool::from(sha2::Sha256::digest(key.as_bytes()).ct_eq(&expected)) => {
            next.run(request).await
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "missing or wrong API key; send `Authorization: Bearer <key>` with the key the server was started with".into(),
        )
        .into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_route",
        format!(
            "no route {} {}; see GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Counts a request refused before it reached the runtime (which counts everything after).
fn count_refusal(app: &App, model: Option<&str>, stream: bool, kind: &'static str) {
    let model = match model {
        Some(m) if app.runtime.model(m).is_ok() => m.to_string(),
        _ => "unknown".to_string(),
    };
    let stream = if stream { "true" } else { "false" };
    metrics::counter!(names::REQUESTS, names::MODEL => model.clone(), names::STREAM => stream)
        .increment(1);
    metrics::counter!(names::FAILURES, names::MODEL => model, names::STREAM => stream, names::ERROR_KIND => kind)
        .increment(1);
}

/// Parses the body into the endpoint's request and the shared sampling fields.
fn parse<T: DeserializeOwned>(bytes: &[u8], fields: &[&str]) -> Result<(T, Sampling), ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    check_fields(&value, fields)?;
    Ok((typed(&value)?, typed(&value)?))
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing field is reported at its parent: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (".", None) => "body".to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (parent, None) => parent.to_string(),
        };
        ApiError::invalid(&field, message)
    })
}

/// The model name and stream flag of a body, read leniently for metric labels.
fn peek(bytes: &[u8]) -> (Option<String>, bool) {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    (
        v["model"].as_str().map(str::to_string),
        v["stream"].as_bool().unwrap_or(false),
    )
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

struct Prepared {
    model: Arc<spice_hf_runtime::ServedModel>,
    request: CompletionRequest,
    include_usage: bool,
    echo: Option<String>,
}

fn prepare(app: &App, body: &[u8], kind: Kind) -> Result<Prepared, ApiError> {
    let (mut constraint, mut tools) = (None, None);
    let (model_name, stream, options, sampling, prompt, echo) = match kind {
        Kind::Chat => {
            let (req, sampling): (ChatRequest, _) = parse(
                body,
                &[
                    "messages",
                    "response_format",
                    "tools",
                    "tool_choice",
                    "parallel_tool_calls",
                ],
            )?;
            let prompt = Prompt::Chat(req.messages()?);
            constraint = req.constraint()?;
            tools = req.tools()?;
            (
                req.model,
                req.stream,
                req.stream_options,
                sampling,
                prompt,
                None,
            )
        }
        Kind::Text => {
            let (req, sampling): (TextRequest, _) = parse(body, &["prompt", "echo"])?;
            let text = req.prompt()?;
            let echo = req.echo.then(|| text.clone());
            (
                req.model,
                req.stream,
                req.stream_options,
                sampling,
                Prompt::Text(text),
                echo,
            )
        }
    };
    if options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "only allowed when `stream` is true",
        ));
    }
    let model = app.runtime.model(&model_name)?;
    let params = sampling.params(&model.spec().defaults, model.spec().context_length)?;
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    Ok(Prepared {
        model,
        request: CompletionRequest {
            prompt,
            params: Some(params),
            stream,
            id: new_id(prefix),
            constraint,
            tools,
        },
        include_usage: options.is_some_and(|o| o.include_usage),
        echo,
    })
}

async fn chat(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = json_content(&headers) {
        return refuse(&app, &body, e);
    }
    complete(&app, &body, Kind::Chat).await
}

async fn text(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = json_content(&headers) {
        return refuse(&app, &body, e);
    }
    complete(&app, &body, Kind::Text).await
}

/// Bodies must say they are JSON. A web page can POST `text/plain` or a form to any origin
/// without a preflight; requiring `application/json` means a browser asks the server first
/// (and gets no CORS grant), so another site cannot drive this API through a visitor.
fn json_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/json") => Ok(()),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            format!(
                "the body must be JSON sent with `Content-Type: application/json` (got {}); with curl, add -H 'Content-Type: application/json'",
                other.map_or("no Content-Type".to_string(), |m| format!("`{m}`"))
            ),
        )),
    }
}

fn refuse(app: &App, body: &[u8], e: ApiError) -> Response {
    let (model, stream) = peek(body);
    count_refusal(app, model.as_deref(), stream, "validation");
    e.into_response()
}

async fn complete(app: &App, body: &[u8], kind: Kind) -> Response {
    let prepared = match prepare(app, body, kind) {
        Ok(p) => p,
        Err(e) => return refuse(app, body, e),
    };
    let Prepared {
        model,
        request,
        include_usage,
        echo,
    } = prepared;
    let created = unix_now();
    if request.stream {
        match model.stream(request.clone()).await {
            Ok(stream) => sse(
                stream,
                Chunker {
                    kind,
                    id: request.id,
                    model: model.name().to_string(),
                    created,
                    include_usage,
                },
                echo,
            ),
            Err(e) => ApiError::from(e).into_response(),
        }
    } else {
        match model.generate(request).await {
            Ok(c) if c.finish_reason == FinishReason::Cancelled => {
                ApiError::from(spice_hf_runtime::Error::ShuttingDown).into_response()
            }
            Ok(c) => axum::Json(whole(kind, &c, created, echo.as_deref())).into_response(),
            Err(e) => ApiError::from(e).into_response(),
        }
    }
}

/// The whole answer of a request that did not stream.
fn whole<'a>(
    kind: Kind,
    c: &'a Completion,
    created: u64,
    echo: Option<&str>,
) -> CompletionBody<'a> {
    let (object, choice) = match kind {
        Kind::Chat => (
            "chat.completion",
            Choice::message(&c.text, &c.tool_calls, c.finish_reason),
        ),
        Kind::Text => (
            "text_completion",
            Choice::text(
                format!("{}{}", echo.unwrap_or(""), c.text),
                Some(c.finish_reason),
            ),
        ),
    };
    CompletionBody {
        id: &c.id,
        object,
        created,
        model: &c.model,
        choices: vec![choice],
        usage: Some(Some(Usage::new(c.prompt_tokens, c.completion_tokens))),
    }
}

/// Builds one SSE chunk.
struct Chunker {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
}

impl Chunker {
    fn object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        }
    }

    fn body<'a>(&'a self, choices: Vec<Choice<'a>>, usage: Option<Option<Usage>>) -> SseEvent {
        let body = CompletionBody {
            id: &self.id,
            object: self.object(),
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        SseEvent::default().data(serde_json::to_string(&body).unwrap_or_default())
    }

    fn chunk(&self, content: Option<&str>, role: bool, finish: Option<FinishReason>) -> SseEvent {
        let choice = match self.kind {
            Kind::Chat => Choice::delta(
                Delta {
                    role: role.then_some("assistant"),
                    content,
                    tool_calls: None,
                },
                finish,
            ),
            Kind::Text => Choice::text(content.unwrap_or(""), finish),
        };
        // A stream that asked for usage has `"usage": null` on every chunk but the last.
        self.body(vec![choice], self.include_usage.then_some(None))
    }

    fn usage(&self, c: &Completion) -> SseEvent {
        self.body(
            Vec::new(),
            Some(Some(Usage::new(c.prompt_tokens, c.completion_tokens))),
        )
    }

    fn events(&self, event: Event) -> Vec<SseEvent> {
        match event {
            Event::Text(t) => vec![self.chunk(Some(&t), false, None)],
            Event::ToolCall(index, call) => {
                let delta = Delta {
                    tool_calls: Some(vec![WireCallDelta {
                        index,
                        call: WireCall::from(&call),
                    }]),
                    ..Delta::default()
                };
                let choice = Choice::delta(delta, None);
                vec![self.body(vec![choice], self.include_usage.then_some(None))]
            }
            Event::Done(c) if c.finish_reason == FinishReason::Cancelled => {
                vec![error_event(&ApiError::from(
                    spice_hf_runtime::Error::ShuttingDown,
                ))]
            }
            Event::Done(c) => {
                let mut out = vec![self.chunk(None, false, Some(c.finish_reason))];
                if self.include_usage {
                    out.push(self.usage(&c));
                }
                out.push(SseEvent::default().data("[DONE]"));
                out
            }
            Event::Error(e) => vec![error_event(&ApiError::from(e))],
        }
    }
}

fn error_event(e: &ApiError) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(&e.body()).unwrap_or_default())
}

/// The SSE answer: a role chunk (chat) or the echoed prompt (text), the text chunks, the final
/// chunk with the finish reason, the usage chunk when asked, `[DONE]`; or an error object then
/// the end. Dropping the response (the client went away) drops `stream`, which cancels.
fn sse(stream: CompletionStream, chunker: Chunker, echo: Option<String>) -> Response {
    let chunker = Arc::new(chunker);
    let first = match chunker.kind {
        Kind::Chat => Some(chunker.chunk(Some(""), true, None)),
        Kind::Text => echo.as_deref().map(|e| chunker.chunk(Some(e), false, None)),
    };
    let c = chunker.clone();
    let events = futures_util::stream::iter(first)
        .chain(stream.flat_map(move |ev| futures_util::stream::iter(c.events(ev))))
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

/// `POST /v1/embeddings`: every input of the request in one forward pass of an embedding model.
async fn embeddings(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = json_content(&headers) {
        return e.into_response();
    }
    let request: EmbeddingsRequest = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))
        .and_then(|v| typed(&v))
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let model = match app.runtime.model(&request.model) {
        Ok(m) => m,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if request.dimensions == Some(0) {
        return ApiError::invalid("dimensions", "must be at least 1".to_string()).into_response();
    }
    let name = model.name().to_string();
    let inputs = spice_hf_runtime::EmbeddingRequest::new(request.input.inputs())
        .with_truncate(request.truncate);
    match model.embed(inputs).await {
        Ok(out) => {
            let dims = out.vectors.first().map_or(0, Vec::len);
            if let Some(asked) = request.dimensions.filter(|d| *d != dims) {
                // Cutting a vector is only meaningful for models trained for it (Matryoshka);
                // none we serve declares that, so only the full size is accepted.
                return ApiError::invalid(
                    "dimensions",
                    format!(
                        "`{name}` gives {dims}-dimensional vectors and does not declare that shorter ones keep their meaning; ask for {dims} or omit dimensions (asked for {asked})"
                    ),
                )
                .into_response();
            }
            let data = out
                .vectors
                .into_iter()
                .enumerate()
                .map(|(index, v)| EmbeddingObject {
                    object: "embedding",
                    index,
                    embedding: EmbeddingValue::new(v, request.encoding_format),
                })
                .collect();
            axum::Json(EmbeddingList {
                object: "list",
                data,
                model: name,
                usage: EmbeddingUsage {
                    prompt_tokens: out.prompt_tokens,
                    total_tokens: out.prompt_tokens,
                },
            })
            .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn models(State(app): AppState) -> Response {
    let created = unix_now();
    let data: Vec<ModelObject> = app
        .runtime
        .models()
        .map(|m| ModelObject {
            id: m.name(),
            object: "model",
            created,
            owned_by: "spice-hf",
            ready: m.health() == Health::Ready,
        })
        .collect();
    axum::Json(List::new(data)).into_response()
}

async fn health(State(app): AppState) -> Response {
    let infos: Vec<_> = app.runtime.models().map(|m| m.info()).collect();
    axum::Json(HealthBody {
        status: "ok",
        ready: app.runtime.ready(),
        models: infos.iter().map(ModelHealth::from).collect(),
    })
    .into_response()
}

/// The status page: static, it holds no data (its script reads `/health`, and with the key
/// `/v1/status/samples` and `/v1/task_history`).
async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing but our own script, styles and API.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        include_str!("page/index.html"),
    )
        .into_response()
}

async fn status_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("page/status.js"),
    )
        .into_response()
}

async fn status_samples(State(app): AppState) -> Response {
    axum::Json(app.samples.all()).into_response()
}

async fn ready(State(app): AppState) -> Response {
    if app.runtime.ready() {
        return axum::Json(Ready { status: "ready" }).into_response();
    }
    let states: Vec<String> = app
        .runtime
        .models()
        .filter(|m| m.spec().initial_load)
        .map(|m| format!("{}: {:?}", m.name(), m.health()))
        .collect();
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        "model_not_ready",
        format!("not ready: {}", states.join("; ")),
    );
    e.retry_after = Some(Duration::from_secs(1));
    e.into_response()
}

async fn metrics(State(app): AppState) -> Response {
    match &app.metrics {
        Some(render) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "metrics_disabled",
            "metrics are not enabled in this process".into(),
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    task: Option<String>,
    /// Unix milliseconds.
    since: Option<i64>,
    /// Unix milliseconds.
    until: Option<i64>,
    trace_id: Option<String>,
    limit: Option<usize>,
}

async fn task_history(
    State(app): AppState,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(history) = app.history.clone() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "task_history_disabled",
            "the task history is not enabled in this process".into(),
        )
        .into_response();
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return ApiError::invalid("query", e.body_text()).into_response(),
    };
    let filter = TaskFilter {
        task: q.task,
        since_ms: q.since,
        until_ms: q.until,
        trace_id: q.trace_id,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let writer = app.history_writer.clone();
    let read = move || {
        if let Some(w) = writer {
            w.flush();
        }
        history.recent(&filter)
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(rows)) => axum::Json(List::new(rows)).into_response(),
        Ok(Err(e)) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "task_history_error",
            e.to_string(),
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            e.to_string(),
        )
        .into_response(),
    }
}
