//! Chat templates rendered with minijinja (plus Python-compatible string methods), as
//! Hugging Face renders them: `trim_blocks`, `lstrip_blocks`, `raise_exception`, `bos_token`,
//! `eos_token`, `add_generation_prompt`.
//!
//! Templates come from model repositories, so rendering is bounded: at most
//! [`RENDER_FUEL`] template instructions (minijinja's fuel) and [`MAX_RENDERED_BYTES`] of output,
//! either of which ends the render with an error that names the limit. A loop of a hundred
//! thousand squared steps stops after a fraction of a second instead of wedging a thread.

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

use crate::gguf::{GgufFile, MetaValue};
use crate::{Error, Result};
pub use spice_hf_grammar::tools::ToolCall;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The calls an assistant turn made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` turn answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The message as Hugging Face chat templates read it: `tool_calls` as
    /// `[{"type": "function", "id", "function": {"name", "arguments"}}]` with the arguments
    /// an object (as `transformers` passes them), `tool_call_id` on tool turns.
    fn template_value(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"role": self.role, "content": self.content});
        if !self.tool_calls.is_empty() {
            v["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| {
                    let arguments: serde_json::Value = serde_json::from_str(&c.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(c.arguments.clone()));
                    serde_json::json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": arguments}})
                })
                .collect();
        }
        if let Some(id) = &self.tool_call_id {
            v["tool_call_id"] = serde_json::Value::String(id.clone());
        }
        v
    }
}

/// A model's chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

/// Template instructions one render may execute. Real chat templates spend a few hundred per
/// message; this allows conversations of thousands of messages and stops runaway loops after
/// well under a second.
pub const RENDER_FUEL: u64 = 20_000_000;

/// Longest rendered prompt in bytes (far above any context window's worth of text).
pub const MAX_RENDERED_BYTES: usize = 64 << 20;

/// An output that refuses to grow past its cap.
struct Capped {
    out: Vec<u8>,
    cap: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// A template from its source and the BOS/EOS token texts it may refer to.
    pub fn new(source: &str, bos: &str, eos: &str) -> Self {
        Self {
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        }
    }

    /// The template in GGUF metadata (`tokenizer.chat_template`), if any.
    pub fn from_gguf(gguf: &GgufFile) -> Option<Self> {
        let source = gguf.get("tokenizer.chat_template")?.as_str()?;
        let tokens = gguf
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array);
        let text = |key: &str| -> String {
            let id = gguf.get(key).and_then(MetaValue::as_u64);
            id.and_then(|i| tokens?.get(i as usize)?.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        Some(Self::new(
            source,
            &text("tokenizer.ggml.bos_token_id"),
            &text("tokenizer.ggml.eos_token_id"),
        ))
    }

    /// The template in `tokenizer_config.json` in `dir`, if any.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer_config.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let config: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Template(format!("{} is not valid JSON: {e}", path.display())))?;
        let token_text = |v: &serde_json::Value| {
            v.as_str()
                .or_else(|| v["content"].as_str())
                .unwrap_or("")
                .to_string()
        };
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            // A list of named templates: take "default".
            serde_json::Value::Array(list) => match list.iter().find(|t| t["name"] == "default") {
                Some(t) => t["template"].as_str().unwrap_or_default().to_string(),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(Self::new(
            &source,
            &token_text(&config["bos_token"]),
            &token_text(&config["eos_token"]),
        )))
    }

    /// How the template writes tool calls, when it renders `tools` itself (`None`: it does
    /// not, and tools are described in a system message in the default format).
    pub fn tool_syntax(&self) -> Option<spice_hf_grammar::tools::Syntax> {
        spice_hf_grammar::tools::Syntax::of_template(&self.source)
    }

    /// Renders the conversation.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// Renders the conversation with `tools` (OpenAI's function objects) in the template's
    /// `tools` variable (left undefined when empty, as templates test `tools is defined`).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template("chat", &self.source)
            .map_err(|e| Error::Template(format!("the chat template does not parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        let messages: Vec<serde_json::Value> =
            messages.iter().map(Message::template_value).collect();
        let tools = (!tools.is_empty()).then(|| Value::from(minijinja::value::Serde(tools)));
        let ctx = context! {
            messages => Value::from(minijinja::value::Serde(&messages)),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        let mut out = Capped {
            out: Vec::new(),
            cap: MAX_RENDERED_BYTES,
            over: false,
        };
        match tmpl.render_captured_to(ctx, &mut out) {
            // minijinja writes whole `str`s, so the bytes are UTF-8.
            Ok(_) => Ok(String::from_utf8_lossy(&out.out).into_owned()),
            Err(_) if out.over => Err(Error::Template(format!(
                "the chat template's output passed {} MiB; the template or the conversation is too large",
                MAX_RENDERED_BYTES >> 20
            ))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::Template(format!(
                "the chat template ran more than {RENDER_FUEL} steps and was stopped; it loops, or the conversation is far too long"
            ))),
            Err(e) => Err(Error::Template(format!(
                "rendering the chat template failed: {e}"
            ))),
        }
    }
}
