//! The names of metrics, labels, spans and span fields, in one place so that the emitters
//! (runtime, server) and the readers (docs, tests, dashboards) cannot drift apart.
//!
//! Durations are in milliseconds throughout our `llm_*` family (`llm_internal_request_duration_ms`
//! fixed the unit); every duration metric name ends in `_ms`.

/// Counter: completion requests received. Labels: [`MODEL`], [`STREAM`].
pub const REQUESTS: &str = "llm_requests";
/// Counter: failed requests. Labels: [`MODEL`], [`STREAM`], [`ERROR_KIND`].
pub const FAILURES: &str = "llm_failures";
/// Counter: requests whose answer runs under an output constraint (a response format or
/// tool calls). Labels: [`MODEL`], [`CONSTRAINT`].
pub const CONSTRAINED: &str = "llm_constrained_requests_total";
/// Counter: finished requests. Labels: [`MODEL`], [`STREAM`], [`FINISH_REASON`].
pub const FINISHED: &str = "llm_finished";
/// Histogram (ms): arrival to last token. Labels: [`MODEL`], [`STREAM`].
pub const REQUEST_DURATION_MS: &str = "llm_internal_request_duration_ms";
/// Counter: prompt tokens. Labels: [`MODEL`].
pub const PROMPT_TOKENS: &str = "llm_prompt_tokens_total";
/// Counter: generated tokens. Labels: [`MODEL`].
pub const COMPLETION_TOKENS: &str = "llm_completion_tokens_total";
/// Histogram (ms): arrival to first token. Labels: [`MODEL`], [`STREAM`].
pub const TIME_TO_FIRST_TOKEN_MS: &str = "llm_time_to_first_token_ms";
/// Histogram (ms): gap between generated tokens. Labels: [`MODEL`].
pub const INTER_TOKEN_MS: &str = "llm_inter_token_latency_ms";
/// Histogram (ms): time waiting for a permit. Labels: [`MODEL`].
pub const QUEUE_WAIT_MS: &str = "llm_queue_wait_ms";
/// Gauge: requests generating. Labels: [`MODEL`].
pub const RUNNING: &str = "llm_requests_running";
/// Gauge: requests queued. Labels: [`MODEL`].
pub const WAITING: &str = "llm_requests_waiting";
/// Gauge (0 to 1): share of the KV cache the model was sized for (every concurrent request
/// at the full context) that running requests hold now. Labels: [`MODEL`].
pub const KV_CACHE_USAGE: &str = "llm_kv_cache_usage_ratio";
/// Histogram (ms): model load. Labels: [`MODEL`], [`BACKEND`].
pub const MODEL_LOAD_MS: &str = "llm_model_load_duration_ms";
/// Counter: a backend passed over. Labels: [`MODEL`], [`BACKEND`] (the skipped one), [`REASON`].
pub const BACKEND_FALLBACK: &str = "llm_backend_fallback";

/// Label: the model's served name.
pub const MODEL: &str = "model";
/// Label: the kind of output constraint (`json_object`, `json_schema`, `regex`, `lark`,
/// `tool_calls`).
pub const CONSTRAINT: &str = "constraint";
/// Label: `true` or `false`.
pub const STREAM: &str = "stream";
/// Label: `stop`, `length` or `cancelled`.
pub const FINISH_REASON: &str = "finish_reason";
/// Label: one of [`ERROR_KINDS`].
pub const ERROR_KIND: &str = "kind";
/// Label: a backend name (`cpu`, `wgpu`, `cuda`).
pub const BACKEND: &str = "backend";
/// Label: why a backend was skipped, reduced to a closed set (`not_compiled`, `unavailable`).
pub const REASON: &str = "reason";

/// The closed set of error kinds [`FAILURES`] is labelled with.
pub const ERROR_KINDS: &[&str] = &[
    "validation",
    "overloaded",
    "rate_limited",
    "queue_timeout",
    "template",
    "context_length",
    "not_ready",
    "internal",
];

/// Counter: embedding requests received. Labels: [`MODEL`].
pub const EMBEDDING_REQUESTS: &str = "llm_embedding_requests_total";
/// Counter: inputs embedded (one vector each). Labels: [`MODEL`].
pub const EMBEDDING_INPUTS: &str = "llm_embedding_inputs_total";
/// Counter: failed embedding requests. Labels: [`MODEL`], [`ERROR_KIND`].
pub const EMBEDDING_FAILURES: &str = "llm_embedding_failures_total";
/// Histogram (ms): an embedding request from arrival to its vectors. Labels: [`MODEL`].
pub const EMBEDDING_DURATION_MS: &str = "llm_embedding_duration_ms";

/// Span: one embeddings request (its batch in one forward pass).
pub const SPAN_EMBEDDINGS: &str = "embeddings";
/// Span: one completion request (chat or text).
pub const SPAN_COMPLETION: &str = "ai_completion";
/// Span: one health probe (a short real generation).
pub const SPAN_HEALTH: &str = "health";
/// Span: loading one model.
pub const SPAN_LOAD: &str = "model_load";

/// Span field: the request as the task history shows it (absent when capture is off).
pub const FIELD_INPUT: &str = "input";
/// Span field: the generated text (absent when capture is off).
pub const FIELD_OUTPUT: &str = "captured_output";
/// Span field: the error message of a failed task.
pub const FIELD_ERROR: &str = "error";
