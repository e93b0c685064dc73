//! Generation sessions: a request is templated and tokenized, admitted by the limiter, then
//! generated on a blocking thread that streams text back. Dropping the stream (the client went
//! away) cancels generation before the next decode step and frees the permit. Every request is
//! an `ai_completion` span and feeds the `llm_*` metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use spice_hf_models::generate::{FinishReason, Flow, GenerateParams};
use spice_hf_telemetry::names;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Span, field};

use spice_hf_grammar::Constraint;
use spice_hf_grammar::tools::{CallStream, Piece, ToolCall, Tools};

use crate::engine::{Prepared, Prompt};
use crate::model::ServedModel;
use crate::{Error, Result};

/// One completion request.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// What to complete.
    pub prompt: Prompt,
    /// Generation settings; `None` uses the model's defaults.
    pub params: Option<GenerateParams>,
    /// Whether the caller streams (a metric label).
    pub stream: bool,
    /// An id for the response and the span (`gen_ai.response.id`).
    pub id: String,
    /// What the answer must match (a JSON Schema, any JSON object, a regex, a grammar);
    /// `None` leaves it free. With tools, it is what a text answer must match.
    pub constraint: Option<Constraint>,
    /// Functions the model may or must call (chat prompts only).
    pub tools: Option<Tools>,
}

impl CompletionRequest {
    /// A request with the model's default settings.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            params: None,
            stream: false,
            id: String::new(),
            constraint: None,
            tools: None,
        }
    }

    /// The request with its answer constrained.
    pub fn with_constraint(self, constraint: Constraint) -> Self {
        Self {
            constraint: Some(constraint),
            ..self
        }
    }

    /// The request with tools the model may call.
    pub fn with_tools(self, tools: Tools) -> Self {
        Self {
            tools: Some(tools),
            ..self
        }
    }

    /// The kind of constraint its answer runs under, if any (a metric label).
    fn constraint_kind(&self) -> Option<&'static str> {
        match &self.tools {
            Some(t) if t.active() => Some("tool_calls"),
            _ => self.constraint.as_ref().map(Constraint::kind),
        }
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Completion {
    /// The request id.
    pub id: String,
    /// The served model name.
    pub model: String,
    /// The text (outside tool calls, when there are calls).
    pub text: String,
    /// The tool calls the answer made; the finish reason is then
    /// [`FinishReason::ToolCalls`].
    pub tool_calls: Vec<ToolCall>,
    /// Generated token ids (end of turn included when produced).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Time waiting for a permit, ms.
    pub queue_ms: f64,
    /// Arrival to first token, ms.
    pub ttft_ms: f64,
    /// Arrival to last token, ms.
    pub duration_ms: f64,
    /// Prefill (prompt to first logits), ms.
    pub prefill_ms: f64,
    /// Decode after the first token, ms.
    pub decode_ms: f64,
}

/// What a stream yields.
#[derive(Debug, Clone)]
pub enum Event {
    /// Text safe to show.
    Text(String),
    /// A whole tool call, with its index among the answer's calls.
    ToolCall(usize, ToolCall),
    /// The end, with usage (always the last event on success).
    Done(Completion),
    /// Generation failed after it started (the last event).
    Error(Error),
}

/// A running generation. Dropping it cancels the generation.
#[derive(Debug)]
pub struct CompletionStream {
    rx: mpsc::UnboundedReceiver<Event>,
    prompt_tokens: usize,
    _cancel: DropGuard,
}

impl CompletionStream {
    /// The next event; `None` after the last one.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
}

impl futures_util::Stream for CompletionStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// The telemetry of one request: its span, and the metrics recorded however it ends (a drop
/// before the end counts as cancelled).
struct RequestTelemetry {
    span: Span,
    model: String,
    stream: &'static str,
    arrival: Instant,
    done: bool,
}

impl RequestTelemetry {
    fn fail(&mut self, e: &Error) {
        self.done = true;
        metrics::counter!(names::FAILURES, names::MODEL => self.model.clone(), names::STREAM => self.stream, names::ERROR_KIND => e.kind()).increment(1);
        self.span.record("error", e.to_string().as_str());
        self.span.record("error.type", e.kind());
    }

    fn finish(&mut self, c: &Completion, capture: bool) {
        self.done = true;
        let model = self.model.clone();
        metrics::counter!(names::FINISHED, names::MODEL => model.clone(), names::STREAM => self.stream, names::FINISH_REASON => c.finish_reason.as_str()).increment(1);
        metrics::counter!(names::PROMPT_TOKENS, names::MODEL => model.clone())
            .increment(c.prompt_tokens as u64);
        metrics::counter!(names::COMPLETION_TOKENS, names::MODEL => model.clone())
            .increment(c.completion_tokens as u64);
        metrics::histogram!(names::REQUEST_DURATION_MS, names::MODEL => model.clone(), names::STREAM => self.stream).record(c.duration_ms);
        let s = &self.span;
        if capture {
            // The calls are part of the answer: kept after its text, as OpenAI's JSON.
            let output = if c.tool_calls.is_empty() {
                c.text.clone()
            } else {
                let calls = serde_json::to_string(&c.tool_calls).unwrap_or_default();
                format!("{}{calls}", c.text)
            };
            s.record("captured_output", output.as_str());
        }
        s.record("prompt_tokens", c.prompt_tokens);
        s.record("completion_tokens", c.completion_tokens);
        s.record("total_tokens", c.prompt_tokens + c.completion_tokens);
        s.record("finish_reason", c.finish_reason.as_str());
        s.record("gen_ai.usage.input_tokens", c.prompt_tokens);
        s.record("gen_ai.usage.output_tokens", c.completion_tokens);
        s.record("gen_ai.response.finish_reasons", c.finish_reason.as_str());
        if c.finish_reason == FinishReason::Cancelled {
            s.record("error", "cancelled: the client went away");
        }
    }
}

impl Drop for RequestTelemetry {
    fn drop(&mut self) {
        if !self.done {
            // The caller dropped the request while it was queued or loading.
            metrics::counter!(names::FINISHED, names::MODEL => self.model.clone(), names::STREAM => self.stream, names::FINISH_REASON => "cancelled").increment(1);
            self.span.record("finish_reason", "cancelled");
            self.span
                .record("error", "cancelled: the client went away before generation");
            let ms = self.arrival.elapsed().as_secs_f64() * 1000.0;
            metrics::histogram!(names::REQUEST_DURATION_MS, names::MODEL => self.model.clone(), names::STREAM => self.stream).record(ms);
        }
    }
}

impl ServedModel {
    /// Generates to the end and returns the completion. Dropping the future cancels it.
    pub async fn generate(self: &Arc<Self>, request: CompletionRequest) -> Result<Completion> {
        let mut stream = self.stream(request).await?;
        let mut last = None;
        while let Some(event) = stream.next().await {
            match event {
                Event::Text(_) | Event::ToolCall(..) => {}
                Event::Done(c) => last = Some(c),
                Event::Error(e) => return Err(e),
            }
        }
        last.ok_or_else(|| Error::Internal("generation ended without a result".into()))
    }

    /// Starts a generation and streams it. Errors that can be known before the first token
    /// (validation, template, context, overload, load) are returned here, so a server can still
    /// answer with a status code.
    pub async fn stream(self: &Arc<Self>, request: CompletionRequest) -> Result<CompletionStream> {
        let arrival = Instant::now();
        let stream_label = if request.stream { "true" } else { "false" };
        let model = self.name().to_string();
        metrics::counter!(names::REQUESTS, names::MODEL => model.clone(), names::STREAM => stream_label).increment(1);
        let params = request
            .params
            .clone()
            .unwrap_or_else(|| self.spec().defaults.clone());
        let capture = self.spec().capture_content;
        let operation = match request.prompt {
            Prompt::Chat(_) => "chat",
            Prompt::Text(_) => "text_completion",
        };
        let input = capture.then(|| match &request.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Chat(m) => serde_json::to_string(m).unwrap_or_default(),
        });
        let constraint = request.constraint_kind();
        if let Some(kind) = constraint {
            metrics::counter!(names::CONSTRAINED, names::MODEL => model.clone(), names::CONSTRAINT => kind).increment(1);
        }
        let sp = &params.sampling;
        let span = tracing::info_span!(
            target: "spice_hf_runtime",
            "ai_completion",
            otel.name = format!("{operation} {model}"),
            otel.kind = "internal",
            model = %model,
            stream = request.stream,
            constraint = constraint,
            input = input,
            captured_output = field::Empty,
            prompt_tokens = field::Empty,
            completion_tokens = field::Empty,
            total_tokens = field::Empty,
            finish_reason = field::Empty,
            queue_ms = field::Empty,
            ttft_ms = field::Empty,
            error = field::Empty,
            "error.type" = field::Empty,
            "gen_ai.operation.name" = operation,
            "gen_ai.provider.name" = "spice-hf",
            "gen_ai.request.model" = %model,
            "gen_ai.request.max_tokens" = params.max_tokens,
            "gen_ai.request.temperature" = sp.temperature as f64,
            "gen_ai.request.top_p" = sp.top_p as f64,
            "gen_ai.request.top_k" = sp.top_k,
            "gen_ai.request.presence_penalty" = sp.presence_penalty as f64,
            "gen_ai.request.frequency_penalty" = sp.frequency_penalty as f64,
            "gen_ai.request.seed" = sp.seed,
            "gen_ai.request.stream" = request.stream,
            "gen_ai.response.id" = %request.id,
            "gen_ai.response.model" = %model,
            "gen_ai.response.finish_reasons" = field::Empty,
            "gen_ai.usage.input_tokens" = field::Empty,
            "gen_ai.usage.output_tokens" = field::Empty,
        );
        let mut telemetry = RequestTelemetry {
            span: span.clone(),
            model: model.clone(),
            stream: stream_label,
            arrival,
            done: false,
        };
        match self
            .start(request, params, arrival, span, &mut telemetry)
            .await
        {
            Ok(stream) => Ok(stream),
            Err(e) => {
                telemetry.fail(&e);
                Err(e)
            }
        }
    }

    async fn start(
        self: &Arc<Self>,
        request: CompletionRequest,
        params: GenerateParams,
        arrival: Instant,
        span: Span,
        telemetry: &mut RequestTelemetry,
    ) -> Result<CompletionStream> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if params.max_tokens == 0 {
            return Err(Error::Invalid {
                field: "max_tokens".into(),
                message: "must be at least 1".into(),
            });
        }
        // Admission first: waiting for a lazy load, rendering the template and tokenizing all
        // happen on a granted slot, so the queue bound also bounds that work.
        let (engine, permit, queue_ms) = self.admit(&span).await?;
        // Templates and tokenizers are CPU work of unbounded size: never on the async threads.
        let (prepared, permit) = {
            let engine = engine.clone();
            let (prompt, constraint, tools) = (request.prompt, request.constraint, request.tools);
            tokio::task::spawn_blocking(move || {
                let prepared = engine.prepare(&prompt, constraint.as_ref(), tools.as_ref());
                (prepared, permit)
            })
            .await
            .map_err(|e| Error::Internal(format!("the prompt task failed: {e}")))?
        };
        let Prepared {
            ids,
            mut guide,
            calls,
        } = prepared?;

        let cancel = self.shutdown.child_token();
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = ids.len();
        let model = self.name().to_string();
        let capture = self.spec().capture_content;
        // From here on the blocking task owns the telemetry and reports the end.
        let mut telemetry = std::mem::replace(
            telemetry,
            RequestTelemetry {
                span: Span::none(),
                model: model.clone(),
                stream: "false",
                arrival,
                done: true,
            },
        );
        let id = request.id.clone();
        // Call ids: `call_` and the request id's random part, then the call's index.
        let call_prefix = format!("call_{}", id.rsplit('-').next().unwrap_or(&id));
        let task_cancel: CancellationToken = cancel.clone();
        let generated = self.generated.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            let mut splitter = calls
                .as_ref()
                .map(|(syntax, tools)| CallStream::new(*syntax, tools, &call_prefix));
            let mut found: Vec<ToolCall> = Vec::new();
            let mut text = String::new();
            // Text and calls to the caller; false when it is gone.
            let send = |pieces: Vec<Piece>, found: &mut Vec<ToolCall>, text: &mut String| {
                for p in pieces {
                    let event = match p {
                        Piece::Text(t) if t.is_empty() => continue,
                        Piece::Text(t) => {
                            text.push_str(&t);
                            Event::Text(t)
                        }
                        Piece::Call(i, c) => {
                            found.push(c.clone());
                            Event::ToolCall(i, c)
                        }
                    };
                    if tx.send(event).is_err() {
                        return false;
                    }
                }
                true
            };
            let on_piece = |piece: &str| {
                generated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = Instant::now();
                match first {
                    None => {
                        first = Some(now);
                        let ttft = (now - arrival).as_secs_f64() * 1000.0;
                        metrics::histogram!(names::TIME_TO_FIRST_TOKEN_MS, names::MODEL => model.clone(), names::STREAM => telemetry.stream).record(ttft);
                        span.record("ttft_ms", ttft);
                    }
                    Some(_) => {
                        metrics::histogram!(names::INTER_TOKEN_MS, names::MODEL => model.clone())
                            .record((now - last).as_secs_f64() * 1000.0);
                    }
                }
                last = now;
                if task_cancel.is_cancelled() {
                    return Flow::Cancel;
                }
                if piece.is_empty() {
                    return Flow::Continue;
                }
                let pieces = match splitter.as_mut() {
                    Some(s) => s.push(piece),
                    None => vec![Piece::Text(piece.to_string())],
                };
                if !send(pieces, &mut found, &mut text) {
                    return Flow::Cancel;
                }
                Flow::Continue
            };
            let result = engine.generate(&ids, &params, guide.as_mut(), on_piece, "generation");
            let rest = splitter
                .as_mut()
                .map(CallStream::finish)
                .unwrap_or_default();
            send(rest, &mut found, &mut text);
            match result {
                Ok(out) => {
                    let finish = if task_cancel.is_cancelled() || tx.is_closed() {
                        FinishReason::Cancelled
                    } else if !found.is_empty() && out.finish_reason == FinishReason::Stop {
                        FinishReason::ToolCalls
                    } else {
                        out.finish_reason
                    };
                    let text = if splitter.is_some() { text } else { out.text };
                    let completion = Completion {
                        id,
                        model,
                        completion_tokens: out.token_ids.len(),
                        text,
                        tool_calls: found,
                        token_ids: out.token_ids,
                        finish_reason: finish,
                        prompt_tokens: out.prompt_tokens,
                        queue_ms,
                        ttft_ms: first
                            .map(|f| (f - arrival).as_secs_f64() * 1000.0)
                            .unwrap_or(0.0),
                        duration_ms: arrival.elapsed().as_secs_f64() * 1000.0,
                        prefill_ms: out.prefill_ms,
                        decode_ms: out.decode_ms,
                    };
                    telemetry.finish(&completion, capture);
                    let _ = tx.send(Event::Done(completion));
                }
                Err(e) => {
                    telemetry.fail(&e);
                    let _ = tx.send(Event::Error(e));
                }
            }
        });
        Ok(CompletionStream {
            rx,
            prompt_tokens,
            _cancel: cancel.drop_guard(),
        })
    }
}
