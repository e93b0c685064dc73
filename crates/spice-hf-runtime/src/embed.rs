//! Embedding requests: [`ServedModel::embed`] takes a slot from the model's limiter like a
//! completion, loads the model if it is not, tokenizes and runs the whole batch in one forward
//! pass on a blocking thread, in an `embeddings` span (the task history's row) with its
//! metrics. The text embedded is recorded only when the model captures content.

use std::sync::Arc;
use std::time::Instant;

use spice_hf_telemetry::names;
use tracing::field;

pub use crate::engine::{EmbeddingInput, Embeddings};
use crate::model::ServedModel;
use crate::{Error, Result};

/// Most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// What to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbeddingRequest {
    /// The inputs, each one vector.
    pub inputs: Vec<EmbeddingInput>,
    /// Cut inputs longer than the model takes (keeping their first tokens and the closing
    /// special token) instead of refusing them.
    pub truncate: bool,
}

impl EmbeddingRequest {
    /// `inputs`, refused when longer than the model takes.
    pub fn new(inputs: Vec<EmbeddingInput>) -> Self {
        Self {
            inputs,
            truncate: false,
        }
    }

    /// With long inputs cut instead of refused.
    pub fn with_truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }
}

impl ServedModel {
    /// Dimensions of the vectors, once an embedding model is loaded (`None` before, and for a
    /// model that generates).
    pub async fn dimensions(self: &Arc<Self>) -> Result<usize> {
        let engine = self.engine().await?;
        engine.dimensions().ok_or_else(|| Error::Invalid {
            field: "model".into(),
            message: format!("`{}` is not an embedding model", self.name()),
        })
    }

    /// The vectors of `request`'s inputs, in order.
    pub async fn embed(self: &Arc<Self>, request: EmbeddingRequest) -> Result<Embeddings> {
        let model = self.name().to_string();
        let arrival = Instant::now();
        metrics::counter!(names::EMBEDDING_REQUESTS, names::MODEL => model.clone()).increment(1);
        let capture = self.spec().capture_content;
        let span = tracing::info_span!(
            target: "spice_hf_runtime",
            "embeddings",
            model = %model,
            inputs = request.inputs.len(),
            input = field::Empty,
            prompt_tokens = field::Empty,
            queue_ms = field::Empty,
            error = field::Empty,
        );
        if capture {
            let shown: Vec<String> = request
                .inputs
                .iter()
                .map(|i| match i {
                    EmbeddingInput::Text(t) => t.clone(),
                    EmbeddingInput::Tokens(ids) => format!("{} token ids", ids.len()),
                })
                .collect();
            span.record("input", shown.join("\n").as_str());
        }
        let result = self.embed_inner(request, &span).await;
        match &result {
            Ok(e) => {
                span.record("prompt_tokens", e.prompt_tokens);
                metrics::counter!(names::EMBEDDING_INPUTS, names::MODEL => model.clone())
                    .increment(e.vectors.len() as u64);
                metrics::counter!(names::PROMPT_TOKENS, names::MODEL => model.clone())
                    .increment(e.prompt_tokens as u64);
                metrics::histogram!(names::EMBEDDING_DURATION_MS, names::MODEL => model)
                    .record(arrival.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) => {
                span.record("error", e.to_string().as_str());
                metrics::counter!(names::EMBEDDING_FAILURES, names::MODEL => model, names::ERROR_KIND => e.kind())
                    .increment(1);
            }
        }
        result
    }

    async fn embed_inner(
        self: &Arc<Self>,
        request: EmbeddingRequest,
        span: &tracing::Span,
    ) -> Result<Embeddings> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if request.inputs.is_empty() || request.inputs.len() > MAX_INPUTS {
            return Err(Error::Invalid {
                field: "input".into(),
                message: format!(
                    "{} inputs; between 1 and {MAX_INPUTS} are accepted",
                    request.inputs.len()
                ),
            });
        }
        let (engine, permit, _) = self.admit(span).await?;
        let span = span.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            engine.embed(&request.inputs, request.truncate)
        })
        .await
        .map_err(|e| Error::Internal(format!("the embedding task failed: {e}")))?
    }
}
