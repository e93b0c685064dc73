//! The OpenAI wire format: request bodies (parsed strictly, so a misspelt field is an error
//! naming it rather than a silently ignored setting), response bodies, stream chunks and the
//! error envelope. The fields we accept but ignore are listed in [`IGNORED_FIELDS`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spice_hf_runtime::{
    Constraint, FinishReason, GenerateParams, Message, SamplingParams, Tool, ToolCall, ToolChoice,
    Tools,
};

use crate::ApiError;

/// Fields OpenAI clients commonly send that do not change what we generate; accepted and
/// ignored (documented in the deviations section of the operator guide).
pub const IGNORED_FIELDS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
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
    /// An assistant turn's calls.
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
    /// The call a `tool` turn answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A tool call as OpenAI writes it, in requests and answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct WireCall {
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) function: WireFunctionCall,
}

/// Its function and arguments (a JSON object as text).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct WireFunctionCall {
    pub(crate) name: String,
    pub(crate) arguments: String,
}

impl From<&ToolCall> for WireCall {
    fn from(c: &ToolCall) -> Self {
        Self {
            id: c.id.clone(),
            kind: "function".into(),
            function: WireFunctionCall {
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            },
        }
    }
}

/// A call in a stream chunk: its index among the answer's calls, then the call.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WireCallDelta {
    pub(crate) index: usize,
    #[serde(flatten)]
    pub(crate) call: WireCall,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonSchemaFormat {
    #[allow(dead_code)] // Reason: required by OpenAI, names the format; not used.
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // Reason: accepted, for the model in OpenAI's API; not used.
    description: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    /// Accepted either way: the schema is always enforced.
    #[serde(default)]
    #[allow(dead_code)] // Reason: every schema is enforced, strict or not.
    strict: Option<bool>,
}

/// An entry of `tools`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolDef {
    #[serde(rename = "type")]
    kind: String,
    function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionDef {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)] // Reason: every call's arguments are enforced, strict or not.
    strict: Option<bool>,
}

/// `tool_choice`: a mode, or a named function.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ToolChoiceWire {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NamedFunction {
    name: String,
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
    #[serde(default)]
    pub(crate) response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub(crate) tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    pub(crate) tool_choice: Option<ToolChoiceWire>,
    #[serde(default)]
    pub(crate) parallel_tool_calls: Option<bool>,
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
    (
        "functions",
        "the legacy `functions` field is not supported; use `tools`",
    ),
    (
        "function_call",
        "the legacy `function_call` field is not supported; use `tool_choice`",
    ),
    ("logit_bias", "logit_bias is not supported"),
    (
        "response_format",
        "response_format is supported on /v1/chat/completions only",
    ),
    ("tools", "tools are supported on /v1/chat/completions only"),
    (
        "tool_choice",
        "tool_choice is supported on /v1/chat/completions only",
    ),
    (
        "parallel_tool_calls",
        "parallel_tool_calls is supported on /v1/chat/completions only",
    ),
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
                "system" | "developer" | "user" | "assistant" | "tool"
            ) {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    format!(
                        "role `{}` is not supported; use system, developer, user, assistant or tool",
                        m.role
                    ),
                ));
            }
            if m.tool_calls.is_some() && m.role != "assistant" {
                return Err(invalid(
                    &format!("messages[{i}].tool_calls"),
                    "only assistant messages carry tool calls",
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
            let mut message = Message::new(role, &text);
            for (j, c) in m.tool_calls.iter().flatten().enumerate() {
                if c.kind != "function" {
                    return Err(invalid(
                        &format!("messages[{i}].tool_calls[{j}].type"),
                        "only `function` calls exist",
                    ));
                }
                message.tool_calls.push(ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                });
            }
            message.tool_call_id = m.tool_call_id.clone();
            out.push(message);
        }
        if out.is_empty() {
            return Err(invalid("messages", "at least one message is required"));
        }
        Ok(out)
    }
}

impl ChatRequest {
    /// The answer's constraint from `response_format` (`text`: none).
    pub(crate) fn constraint(&self) -> Result<Option<Constraint>, ApiError> {
        Ok(match &self.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(Constraint::JsonObject),
            Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
                Some(schema) => Some(Constraint::JsonSchema(schema.clone())),
                None => {
                    return Err(invalid(
                        "response_format.json_schema.schema",
                        "a json_schema response format needs its `schema`",
                    ));
                }
            },
        })
    }

    /// `tools`, `tool_choice` and `parallel_tool_calls`, checked.
    pub(crate) fn tools(&self) -> Result<Option<Tools>, ApiError> {
        let Some(defs) = &self.tools else {
            if self.tool_choice.is_some() {
                return Err(invalid("tool_choice", "tool_choice needs `tools`"));
            }
            return Ok(None);
        };
        let mut tools = Vec::with_capacity(defs.len());
        for (i, d) in defs.iter().enumerate() {
            if d.kind != "function" {
                return Err(invalid(
                    &format!("tools[{i}].type"),
                    format!(
                        "tool type `{}` is not supported; only `function` is",
                        d.kind
                    ),
                ));
            }
            let f = &d.function;
            tools.push(Tool::new(
                &f.name,
                f.description.as_deref(),
                f.parameters.clone(),
            ));
        }
        let choice = match &self.tool_choice {
            None => ToolChoice::Auto,
            Some(ToolChoiceWire::Mode(m)) => match m.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                            "`{other}` is not a tool choice; use none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                        ),
                    ));
                }
            },
            Some(ToolChoiceWire::Named { kind, function }) => {
                if kind != "function" {
                    return Err(invalid("tool_choice.type", "must be `function`"));
                }
                ToolChoice::Function(function.name.clone())
            }
        };
        let tools = Tools {
            tools,
            choice,
            parallel: self.parallel_tool_calls.unwrap_or(true),
        };
        tools
            .validate()
            .map_err(|(field, message)| invalid(&field, message))?;
        Ok(Some(tools))
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

    /// A whole chat answer: its text (`null` when it is only calls) and its calls.
    pub(crate) fn message(content: &'a str, calls: &[ToolCall], finish: FinishReason) -> Self {
        Self {
            message: Some(AssistantMessage {
                role: "assistant",
                content: (!content.is_empty() || calls.is_empty()).then_some(content),
                tool_calls: (!calls.is_empty()).then(|| calls.iter().map(WireCall::from).collect()),
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
    pub(crate) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<WireCall>>,
}

/// `delta` of a chat stream chunk: the role first, then content.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_calls: Option<Vec<WireCallDelta>>,
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

/// `POST /v1/embeddings`, as OpenAI defines it (plus `truncate`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmbeddingsRequest {
    pub(crate) model: String,
    pub(crate) input: WireInput,
    #[serde(default)]
    pub(crate) encoding_format: EncodingFormat,
    #[serde(default)]
    pub(crate) dimensions: Option<usize>,
    /// Accepted and ignored, as OpenAI's end-user id.
    #[serde(default)]
    #[allow(dead_code)] // Reason: part of the wire format; nothing to do with it.
    pub(crate) user: Option<String>,
    /// Ours: cut inputs longer than the model takes instead of refusing them.
    #[serde(default)]
    pub(crate) truncate: bool,
}

/// `input`: a string, strings, token ids or arrays of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum WireInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

impl WireInput {
    /// The runtime's inputs.
    pub(crate) fn inputs(self) -> Vec<spice_hf_runtime::EmbeddingInput> {
        use spice_hf_runtime::EmbeddingInput as I;
        match self {
            Self::One(s) => vec![I::Text(s)],
            Self::Many(v) => v.into_iter().map(I::Text).collect(),
            Self::Tokens(ids) => vec![I::Tokens(ids)],
            Self::ManyTokens(v) => v.into_iter().map(I::Tokens).collect(),
        }
    }
}

/// `encoding_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// The little-endian f32 bytes, base64-encoded.
    Base64,
}

/// One vector of the answer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmbeddingObject {
    pub(crate) object: &'static str,
    pub(crate) index: usize,
    pub(crate) embedding: EmbeddingValue,
}

/// A vector as numbers or as base64.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    /// `v` in `format`.
    pub(crate) fn new(v: Vec<f32>, format: EncodingFormat) -> Self {
        use base64::Engine as _;
        match format {
            EncodingFormat::Float => Self::Float(v),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmbeddingList {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<EmbeddingObject>,
    pub(crate) model: String,
    pub(crate) usage: EmbeddingUsage,
}

/// Its `usage`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmbeddingUsage {
    pub(crate) prompt_tokens: usize,
    pub(crate) total_tokens: usize,
}
