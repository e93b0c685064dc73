//! spice-hf's telemetry: the names of every metric and span field the other layers emit, the
//! Prometheus recorder the binary installs, and the task history (every completed span as a row
//! in an embedded SQLite file).
//!
//! Like `tracing`, this crate is used by everyone and installs nothing: libraries emit through
//! the [`metrics`] and [`tracing`] facades with the names in [`names`]; the `spice-hf` binary
//! installs the recorder from [`prometheus_recorder`] and a subscriber with a
//! [`TaskHistoryLayer`].
//!
//! ```
//! # fn main() -> Result<(), spice_hf_telemetry::Error> {
//! use tracing_subscriber::layer::SubscriberExt as _;
//!
//! let history = spice_hf_telemetry::TaskHistory::open_in_memory(1_000)?;
//! let layer = spice_hf_telemetry::TaskHistoryLayer::new(history.clone());
//! let subscriber = tracing_subscriber::registry().with(layer.clone());
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!(target: "spice_hf_runtime", "health", model = "tiny");
//!     let _entered = span.enter();
//! });
//! layer.flush();
//! assert_eq!(history.recent(&Default::default())?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod history;
pub mod names;
#[cfg(test)]
mod tests;

pub use history::{
    MAX_CAPTURED_BYTES, MAX_ERROR_BYTES, MAX_LABELS_BYTES, MAX_PENDING_ROWS, TaskFilter,
    TaskHistory, TaskHistoryLayer, TaskRow,
};

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Errors of the telemetry layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task-history database could not be opened, written or read.
    #[error("task history {path}: {reason}")]
    History {
        /// The database file (`:memory:` for an in-memory one).
        path: String,
        /// What failed.
        reason: String,
    },
    /// The metrics recorder could not be built.
    #[error("metrics recorder: {0}")]
    Recorder(String),
}

/// The telemetry layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Bucket bounds, in milliseconds, for request-scale durations (request duration, queue wait,
/// time to first token, model load): 1 ms to 10 minutes.
pub const REQUEST_MS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    20_000.0, 40_000.0, 80_000.0, 160_000.0, 600_000.0,
];

/// Bucket bounds, in milliseconds, for inter-token latency (vLLM's list scaled to ms, with
/// 1-5 ms added for small models on fast hosts).
pub const TOKEN_MS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0,
    1_000.0, 2_500.0, 5_000.0,
];

/// A Prometheus recorder with spice-hf's bucket choices, and the handle that renders the text
/// exposition for `/metrics`. The caller (a binary, or a test) installs the recorder, then
/// calls [`describe`].
pub fn prometheus_recorder() -> Result<(PrometheusRecorder, PrometheusHandle)> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::INTER_TOKEN_MS.into()),
            TOKEN_MS_BUCKETS,
        )
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_ms".into()), REQUEST_MS_BUCKETS))
        .map_err(|e| Error::Recorder(e.to_string()))?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    Ok((recorder, handle))
}

/// Registers the help text and unit of every metric with the installed recorder (call it after
/// installing one).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Completion requests received (health probes excluded)."
    );
    describe_counter!(
        FAILURES,
        Unit::Count,
        "Completion requests that failed, by error kind."
    );
    describe_counter!(
        FINISHED,
        Unit::Count,
        "Completion requests that finished, by finish reason (stop, length, cancelled)."
    );
    describe_histogram!(
        REQUEST_DURATION_MS,
        Unit::Milliseconds,
        "Time from arrival to the last token, queue wait included."
    );
    describe_counter!(PROMPT_TOKENS, Unit::Count, "Prompt tokens processed.");
    describe_counter!(COMPLETION_TOKENS, Unit::Count, "Tokens generated.");
    describe_histogram!(
        TIME_TO_FIRST_TOKEN_MS,
        Unit::Milliseconds,
        "Time from arrival to the first generated token (queue and prefill included)."
    );
    describe_histogram!(
        INTER_TOKEN_MS,
        Unit::Milliseconds,
        "Time between consecutive generated tokens, measured at the decode step."
    );
    describe_histogram!(
        QUEUE_WAIT_MS,
        Unit::Milliseconds,
        "Time a request waited for a concurrency permit."
    );
    describe_gauge!(RUNNING, Unit::Count, "Requests generating now.");
    describe_gauge!(WAITING, Unit::Count, "Requests waiting in the queue now.");
    describe_gauge!(
        KV_CACHE_USAGE,
        Unit::Count,
        "Share (0-1) of the KV cache sized for max_concurrency x context_length held by running requests."
    );
    describe_histogram!(
        MODEL_LOAD_MS,
        Unit::Milliseconds,
        "Time to load a model (pull, weights, tokenizer, warm-up)."
    );
    describe_counter!(
        BACKEND_FALLBACK,
        Unit::Count,
        "Backends passed over when choosing one, by reason."
    );
}
