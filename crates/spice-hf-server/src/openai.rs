//! The OpenAI wire format: request bodies (parsed strictly, so a misspelt field is an error
//! naming it rather than a silently ignored setting), response bodies, stream chunks and the
//! error envelope. The fields we accept but ignore are listed in [`IGNORED_FIELDS`].

use serde::{Deserialize, Serialize};
use spice_hf_runtime::{FinishReason, GenerateParams, Message, SamplingParams};

use crate::ApiError;

/// Fields OpenAI clients commonly send that do not change what we generate; accepted and
/// ignored (documented in the deviations section of the operator guide).
pub const IGNORED_FIELDS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
];

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// Message content: a string, or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    #[allow(dead_code)] // Reason: accepted (OpenAI's optional participant name), not used.
    name: Option<String>,
}

/// The sampling fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Sampling {
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    stop: Option<Stop>,
    seed: Option<u64>,
    n: Option<u32>,
    // `logprobs: true` is refused in `params`; the other IGNORED_FIELDS pass `check_fields`
    // and are dropped by serde.
    #[serde(default)]
    logprobs: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions`. Unknown fields are refused by [`check_fields`]; the sampling
/// fields are read from the same body into [`Sampling`] (not flattened, so that an error keeps
/// the field's path).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<ChatMessage>,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TextRequest {
    pub(crate) model: String,
    pub(crate) prompt: Stop,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) echo: bool,
}

const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
    "n",
];

/// Fields we know but do not support, with what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("tools", "tool calling is not supported yet"),
    ("tool_choice", "tool calling is not supported yet"),
    ("functions", "function calling is not supported"),
    ("function_call", "function calling is not supported"),
    ("logit_bias", "logit_bias is not supported"),
    ("response_format", "structured output is not supported yet"),
    ("audio", "audio is not supported"),
    ("modalities", "only text output is supported"),
    (
        "best_of",
        "best_of is not supported; send separate requests",
    ),
    ("suffix", "suffix (insertion) is not supported"),
];

/// Refuses a body that is not an object, or holds a field this endpoint does not know, naming
/// the field. `extra` lists the endpoint's own fields.
pub(crate) fn check_fields(body: &serde_json::Value, extra: &[&str]) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("body", "the request body must be a JSON object"));
    };
    for key in obj.keys() {
        let k = key.as_str();
        if SAMPLING_FIELDS.contains(&k) || IGNORED_FIELDS.contains(&k) || extra.contains(&k) {
            continue;
        }
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == k) {
            return Err(invalid(k, *why));
        }
        return Err(invalid(
            k,
            format!("unknown field `{k}`; check its spelling against the OpenAI API reference"),
        ));
    }
    Ok(())
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(field, message)
}

impl ChatRequest {
    pub(crate) fn messages(&self) -> Result<Vec<Message>, ApiError> {
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    format!(
                        "role `{}` is not supported; use system, developer, user or assistant (tools are not supported)",
                        m.role
                    ),
                ));
            }
            let text = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(invalid(
                                    &format!("messages[{i}].content[{j}]"),
                                    format!(
                                        "content part `{kind}` is not supported; only text parts are"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            // `developer` is OpenAI's newer name for `system`.
            let role = if m.role == "developer" {
                "system"
            } else {
                &m.role
            };
            out.push(Message::new(role, &text));
        }
        if out.is_empty() {
            return Err(invalid("messages", "at least one message is required"));
        }
        Ok(out)
    }
}

impl TextRequest {
    pub(crate) fn prompt(&self) -> Result<String, ApiError> {
        match &self.prompt {
            Stop::One(p) => Ok(p.clone()),
            Stop::Many(list) if list.len() == 1 => Ok(list[0].clone()),
            Stop::Many(_) => Err(invalid(
                "prompt",
                "exactly one prompt per request is supported; send one request per prompt",
            )),
        }
    }
}

impl Sampling {
    /// Applies the request's fields over the model's defaults, checking each.
    pub(crate) fn params(
        &self,
        defaults: &GenerateParams,
        context: usize,
    ) -> Result<GenerateParams, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(invalid(
                "n",
                format!("n = {n} is not supported; only n = 1 is (send separate requests)"),
            ));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| v == &serde_json::Value::Bool(true))
        {
            return Err(invalid("logprobs", "log probabilities are not supported"));
        }
        let (field, max) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        if let Some(m) = max
            && (m == 0 || m as usize >= context)
        {
            return Err(invalid(
                field,
                format!(
                    "{m} is out of range; it must be between 1 and {}",
                    context - 1
                ),
            ));
        }
        let stop = match &self.stop {
            None => defaults.stop.clone(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(invalid(
                "stop",
                "up to 4 non-empty stop strings are allowed",
            ));
        }
        let d = &defaults.sampling;
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: self.seed.or(d.seed),
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.message))?;
        Ok(GenerateParams {
            sampling,
            max_tokens: max.map(|m| m as usize).unwrap_or(defaults.max_tokens),
            stop,
            stop_token_ids: defaults.stop_token_ids.clone(),
            ignore_eos: false,
        })
    }
}

/// `usage`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) total_tokens: usize,
}

impl Usage {
    pub(crate) fn new(prompt: usize, completion: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// A completion, whole or one chunk of a stream: `chat.completion`, `chat.completion.chunk`
/// or `text_completion`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CompletionBody<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    pub(crate) choices: Vec<Choice<'a>>,
    /// Absent, `null` (the chunks of a stream that asked for usage) or the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Option<Usage>>,
}

/// One choice: a chat message, a chat stream delta or a text.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Choice<'a> {
    pub(crate) index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<AssistantMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delta: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<std::borrow::Cow<'a, str>>,
    /// Always `null`: log probabilities are not returned.
    pub(crate) logprobs: Option<()>,
    #[serde(serialize_with = "finish_reason")]
    pub(crate) finish_reason: Option<FinishReason>,
}

impl<'a> Choice<'a> {
    fn new(finish_reason: Option<FinishReason>) -> Self {
        Self {
            index: 0,
            message: None,
            delta: None,
            text: None,
            logprobs: None,
            finish_reason,
        }
    }

    /// A whole chat answer.
    pub(crate) fn message(content: &'a str, finish: FinishReason) -> Self {
        Self {
            message: Some(AssistantMessage {
                role: "assistant",
                content,
            }),
            ..Self::new(Some(finish))
        }
    }

    /// A chat stream chunk.
    pub(crate) fn delta(delta: Delta<'a>, finish: Option<FinishReason>) -> Self {
        Self {
            delta: Some(delta),
            ..Self::new(finish)
        }
    }

    /// A text answer or text stream chunk.
    pub(crate) fn text(
        text: impl Into<std::borrow::Cow<'a, str>>,
        finish: Option<FinishReason>,
    ) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::new(finish)
        }
    }
}

fn finish_reason<S: serde::Serializer>(f: &Option<FinishReason>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_str(f.as_str()),
        None => s.serialize_none(),
    }
}

/// `message` of a chat answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AssistantMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

/// `delta` of a chat stream chunk: the role first, then content.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
}

/// `GET /v1/models`' entries.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelObject<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) owned_by: &'static str,
    /// Ours: whether it answers now.
    pub(crate) ready: bool,
}

/// `{"object": "list", "data": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct List<T> {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<T>,
}

impl<T> List<T> {
    pub(crate) fn new(data: Vec<T>) -> Self {
        Self {
            object: "list",
            data,
        }
    }
}

/// The OpenAI error envelope.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// Its content.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorDetail {
    pub(crate) message: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: &'static str,
}
