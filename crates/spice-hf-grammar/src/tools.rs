//! Tool calls: the syntaxes models write them in ([`Syntax`]), the system message that
//! describes tools to a model whose chat template cannot ([`Tools::system_prompt`], our one
//! documented default format), the constraint that makes a `required` or named call certain
//! to exist and its arguments certain to validate ([`Tools::constraint`]), and the parser that
//! turns text back into calls, whole ([`parse`]) or as it streams ([`CallStream`]).
//!
//! The default format is the Hermes one Qwen2.5 was trained on, so a model whose template has
//! no tool support and one whose template is Qwen's are read by the same parser:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```

use serde_json::{Value, json};

use crate::constraint::{Constraint, with_layout};
use crate::{Error, Result};

/// Most tools one request may declare (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name: 1 to 64 of `a-z A-Z 0-9 _ -`.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments (an object schema).
    pub parameters: Value,
}

impl Tool {
    /// A tool; `parameters` `None` means it takes no arguments.
    pub fn new(name: &str, description: Option<&str>, parameters: Option<Value>) -> Self {
        Self {
            name: name.to_string(),
            description: description.map(str::to_string),
            parameters: parameters.unwrap_or_else(
                || json!({"type": "object", "properties": {}, "additionalProperties": false}),
            ),
        }
    }

    /// OpenAI's `{"type": "function", "function": {...}}`, which chat templates expect.
    pub fn openai(&self) -> Value {
        let mut function = json!({"name": self.name});
        if let Some(d) = &self.description {
            function["description"] = json!(d);
        }
        function["parameters"] = self.parameters.clone();
        json!({"type": "function", "function": function})
    }
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No call: the model answers in text (the tools are not shown to it).
    None,
    /// A call or text, as the model chooses.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Function(String),
}

/// The tools of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// The functions.
    pub tools: Vec<Tool>,
    /// What the model must do.
    pub choice: ToolChoice,
    /// Whether several calls may be made in one answer.
    pub parallel: bool,
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolCall {
    /// Its id (`call_...`), which the `tool` message answering it names.
    pub id: String,
    /// The function.
    pub name: String,
    /// The arguments, a JSON object as text.
    pub arguments: String,
}

/// How a model writes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call:
    /// Qwen2.5's templates, Hermes models, and our default format.
    Hermes,
    /// One JSON object `{"name": ..., "parameters": {...}}` as the whole answer (Llama 3.1+
    /// templates' JSON tool calling).
    Llama3,
}

impl Syntax {
    /// The syntax a chat template asks for when it renders `tools` itself, or `None` when it
    /// does not (the default format then describes the tools in a system message).
    pub fn of_template(source: &str) -> Option<Self> {
        if !source.contains("tools") {
            return None;
        }
        if source.contains("<tool_call>") {
            Some(Self::Hermes)
        } else if source.contains("\"parameters\": dictionary of argument name") {
            Some(Self::Llama3)
        } else {
            None
        }
    }

    /// The arguments' key in a call object.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Hermes => "arguments",
            Self::Llama3 => "parameters",
        }
    }

    /// A past call as the model would have written it (for a conversation's assistant turn in
    /// the default format).
    pub fn render_call(self, call: &ToolCall) -> String {
        let arguments: Value =
            serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
        let body = json!({"name": call.name, self.arguments_key(): arguments});
        match self {
            Self::Hermes => format!("<tool_call>\n{body}\n</tool_call>"),
            Self::Llama3 => body.to_string(),
        }
    }
}

/// A tool result in the default format, sent as a user turn.
pub fn render_response(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Tools {
    /// Checks the declarations: at most [`MAX_TOOLS`], valid unique names, object parameter
    /// schemas, a named choice that exists. The error names the offending field.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        if self.tools.len() > MAX_TOOLS {
            return Err((
                "tools".into(),
                format!(
                    "{} tools given; at most {MAX_TOOLS} are allowed",
                    self.tools.len()
                ),
            ));
        }
        for (i, t) in self.tools.iter().enumerate() {
            if !valid_name(&t.name) {
                return Err((
                    format!("tools[{i}].function.name"),
                    "a function name is 1 to 64 characters of a-z, A-Z, 0-9, _ and -".into(),
                ));
            }
            if self.tools[..i].iter().any(|o| o.name == t.name) {
                return Err((
                    format!("tools[{i}].function.name"),
                    format!("function `{}` is declared twice", t.name),
                ));
            }
            if !t.parameters.is_object() {
                return Err((
                    format!("tools[{i}].function.parameters"),
                    "must be a JSON Schema object".into(),
                ));
            }
        }
        match &self.choice {
            ToolChoice::Function(name) if !self.tools.iter().any(|t| &t.name == name) => Err((
                "tool_choice".into(),
                format!("function `{name}` is not among the request's tools"),
            )),
            ToolChoice::Required | ToolChoice::Function(_) if self.tools.is_empty() => Err((
                "tool_choice".into(),
                "a call is required but no tools are given".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the model is shown tools and may call them.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The tools the model may call under the choice.
    fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Function(name) => self.tools.iter().filter(|t| &t.name == name).collect(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The system message of the default format: the tools as OpenAI describes them, one JSON
    /// object a line inside `<tools>`, and how to call one.
    pub fn system_prompt(&self) -> String {
        let mut s = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for t in &self.tools {
            s.push('\n');
            s.push_str(&t.openai().to_string());
        }
        s.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and \
             arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
        s
    }

    /// The constraint for this request's answer in `syntax`: `None` for no tools and no
    /// `text` constraint; calls only for `required` or a named function; for `auto`, calls or
    /// text (`text` if given, else any text that does not start like a call).
    pub fn constraint(
        &self,
        syntax: Syntax,
        text: Option<&Constraint>,
    ) -> Result<Option<Constraint>> {
        if !self.active() {
            return Ok(text.cloned());
        }
        let key = syntax.arguments_key();
        let one: Vec<Value> = self
            .callable()
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: t.parameters},
                    "required": ["name", key],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = with_layout(&if one.len() == 1 {
            one[0].clone()
        } else {
            json!({"anyOf": one})
        });
        let body = serde_json::to_string(&schema).map_err(|e| Error::Unsupported(e.to_string()))?;
        let calls = match syntax {
            Syntax::Hermes if self.parallel => "calls: call (\"\\n\" call)*",
            Syntax::Hermes => "calls: call",
            Syntax::Llama3 => "calls: body",
        };
        let call = match syntax {
            Syntax::Hermes => "call: \"<tool_call>\\n\" body \"\\n</tool_call>\"\n",
            Syntax::Llama3 => "",
        };
        let start = match (&self.choice, text) {
            (ToolChoice::Auto, Some(Constraint::JsonSchema(s))) => format!(
                "start: calls | answer\nanswer: %json {}\n",
                serde_json::to_string(&with_layout(s)).map_err(|e| Error::Unsupported(e.to_string()))?
            ),
            (ToolChoice::Auto, Some(Constraint::JsonObject)) => {
                "start: calls | answer\nanswer: %json {\"type\": \"object\", \"x-guidance\": {\"whitespace_flexible\": false, \"item_separator\": \", \", \"key_separator\": \": \"}}\n".to_string()
            }
            (ToolChoice::Auto, Some(other)) => {
                return Err(Error::Unsupported(format!(
                    "a {} response format cannot be combined with tools; use a JSON Schema",
                    other.kind()
                )));
            }
            // Text that does not start like a call: a call is then always well formed.
            (ToolChoice::Auto, None) => match syntax {
                Syntax::Hermes => "start: calls | TEXT?\nTEXT: /[^<\\s][\\s\\S]*/\n".to_string(),
                Syntax::Llama3 => "start: calls | TEXT?\nTEXT: /[^{\\s][\\s\\S]*/\n".to_string(),
            },
            _ => "start: calls\n".to_string(),
        };
        Ok(Some(Constraint::ToolCalls(format!(
            "{start}{calls}\n{call}body: %json {body}\n"
        ))))
    }
}

/// A piece of a streamed answer: text to show, or a whole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text.
    Text(String),
    /// A call, with its index among the answer's calls.
    Call(usize, ToolCall),
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Splits a streamed answer into text and calls: text passes through as it comes, except what
/// may be the start of a call, which is held until it is one (then the call is given whole,
/// once it closes) or is not. Call ids are `{prefix}_{index}`.
#[derive(Debug)]
pub struct CallStream {
    syntax: Syntax,
    names: Vec<String>,
    prefix: String,
    held: String,
    in_call: bool,
    /// Llama 3: the answer started with `{`, so it is a call; read at the end.
    whole: bool,
    started: bool,
    calls: usize,
}

impl CallStream {
    /// A splitter for answers in `syntax` that may call `tools`.
    pub fn new(syntax: Syntax, tools: &Tools, prefix: &str) -> Self {
        Self {
            syntax,
            names: tools.tools.iter().map(|t| t.name.clone()).collect(),
            prefix: prefix.to_string(),
            held: String::new(),
            in_call: false,
            whole: false,
            started: false,
            calls: 0,
        }
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn call(&mut self, json: &str) -> Option<Piece> {
        let v: Value = serde_json::from_str(json.trim()).ok()?;
        let name = v.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = v.get(self.syntax.arguments_key())?;
        if !arguments.is_object() {
            return None;
        }
        let call = ToolCall {
            id: format!("{}_{}", self.prefix, self.calls),
            name: name.to_string(),
            arguments: arguments.to_string(),
        };
        self.calls += 1;
        Some(Piece::Call(self.calls - 1, call))
    }

    /// Feeds generated text; returns what can be shown or called now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        match self.syntax {
            Syntax::Llama3 => {
                if !self.started {
                    match self.held.trim_start().chars().next() {
                        None => return out,
                        Some(c) => {
                            self.started = true;
                            self.whole = c == '{';
                        }
                    }
                }
                if !self.whole {
                    out.push(Piece::Text(std::mem::take(&mut self.held)));
                }
            }
            Syntax::Hermes => loop {
                if self.in_call {
                    let Some(end) = self.held.find(CLOSE) else {
                        break;
                    };
                    let body = self.held[..end].to_string();
                    self.held.drain(..end + CLOSE.len());
                    self.in_call = false;
                    match self.call(&body) {
                        Some(p) => out.push(p),
                        None => out.push(Piece::Text(format!("{OPEN}{body}{CLOSE}"))),
                    }
                    continue;
                }
                if let Some(at) = self.held.find(OPEN) {
                    let before: String = self.held.drain(..at).collect();
                    self.held.drain(..OPEN.len());
                    self.in_call = true;
                    // Blank lines between calls are not text.
                    if !before.trim().is_empty() {
                        out.push(Piece::Text(before));
                    }
                    continue;
                }
                // Hold the longest tail that may begin a call; blanks are held too, so the
                // line breaks between calls are never shown as text.
                let keep = (1..=OPEN.len().min(self.held.len()))
                    .rev()
                    .find(|&n| {
                        self.held.is_char_boundary(self.held.len() - n)
                            && OPEN.starts_with(&self.held[self.held.len() - n..])
                    })
                    .unwrap_or(0);
                let cut = self.held.len() - keep;
                let show = self.held[..cut].trim_end().len();
                if self.held[..show].trim().is_empty() {
                    break;
                }
                let text: String = self.held.drain(..show).collect();
                out.push(Piece::Text(text));
                break;
            },
        }
        out
    }

    /// The end of the answer: what was held, as text or a last call.
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        if self.whole {
            return match self.call(&held) {
                Some(p) => vec![p],
                None => vec![Piece::Text(held)],
            };
        }
        let text = if self.in_call {
            format!("{OPEN}{held}")
        } else {
            held
        };
        if text.trim().is_empty() && self.calls > 0 {
            return Vec::new();
        }
        if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(text)]
        }
    }
}

/// A whole answer: its text (`None` when empty or only blanks around calls) and its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The text outside calls.
    pub content: Option<String>,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

/// Parses a whole answer (the same reading as [`CallStream`]).
pub fn parse(syntax: Syntax, tools: &Tools, prefix: &str, text: &str) -> Parsed {
    let mut stream = CallStream::new(syntax, tools, prefix);
    let mut pieces = stream.push(text);
    pieces.extend(stream.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(_, c) => calls.push(c),
        }
    }
    let content = if calls.is_empty() {
        Some(content)
    } else {
        Some(content.trim().to_string()).filter(|c| !c.is_empty())
    };
    Parsed { content, calls }
}
