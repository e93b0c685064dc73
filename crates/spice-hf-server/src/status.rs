//! spice-hf's own status bodies, `GET /health` and `GET /ready`, built from what the runtime
//! reports (the runtime's types carry no wire format).

use std::path::Path;

use serde::Serialize;
use spice_hf_runtime::{Health, ModelInfo};

/// `GET /health`.
#[derive(Debug, Serialize)]
pub(crate) struct HealthBody<'a> {
    /// Always `ok` (the process answers).
    pub(crate) status: &'static str,
    /// Whether every model loaded at start is ready.
    pub(crate) ready: bool,
    pub(crate) models: Vec<ModelHealth<'a>>,
}

/// One model in `/health`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelHealth<'a> {
    name: &'a str,
    health: State<'a>,
    backend: Option<&'static str>,
    device: Option<&'a str>,
    skipped_backends: Vec<SkippedBackend<'a>>,
    estimated_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    load_ms: Option<f64>,
    path: Option<&'a Path>,
    chat_template: bool,
    context_length: usize,
    running: usize,
    waiting: usize,
    refused: u64,
    generated_tokens: u64,
}

/// `{"state": "failed", "reason": "..."}`; no reason for the states that have none.
#[derive(Debug, Serialize)]
struct State<'a> {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> From<&'a Health> for State<'a> {
    fn from(h: &'a Health) -> Self {
        Self {
            state: h.state(),
            reason: h.reason(),
        }
    }
}

/// A backend passed over, and why.
#[derive(Debug, Serialize)]
struct SkippedBackend<'a> {
    backend: &'static str,
    reason: &'a str,
}

impl<'a> From<&'a ModelInfo> for ModelHealth<'a> {
    fn from(m: &'a ModelInfo) -> Self {
        Self {
            name: &m.name,
            health: (&m.health).into(),
            backend: m.backend.map(|b| b.name()),
            device: m.device.as_deref(),
            skipped_backends: m
                .skipped_backends
                .iter()
                .map(|s| SkippedBackend {
                    backend: s.kind.name(),
                    reason: &s.reason,
                })
                .collect(),
            estimated_bytes: m.estimated_bytes,
            peak_rss_bytes: m.peak_rss_bytes,
            load_ms: m.load_ms,
            path: m.path.as_deref(),
            chat_template: m.chat_template,
            refused: m.refused,
            generated_tokens: m.generated_tokens,
            context_length: m.context_length,
            running: m.running,
            waiting: m.waiting,
        }
    }
}

/// `GET /ready` when ready.
#[derive(Debug, Serialize)]
pub(crate) struct Ready {
    pub(crate) status: &'static str,
}
