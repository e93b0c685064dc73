//! What an answer must match ([`Constraint`]) and the per-generation state that enforces it
//! ([`Guide`]): before each token, the logits of every token the grammar does not allow next
//! become −∞; after it, the token advances the grammar.

use llguidance::Matcher;
use llguidance::api::TopLevelGrammar;
use serde_json::{Value, json};

use crate::{Error, Result};

/// What the generated text must match.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Constraint {
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid against this JSON Schema.
    JsonSchema(Value),
    /// Text matching this regular expression (whole).
    Regex(String),
    /// Text of this Lark grammar (llguidance's dialect: `%json {...}` embeds a schema).
    Lark(String),
    /// One or more tool calls, or text, as [`crate::tools`] builds it (a Lark grammar).
    ToolCalls(String),
}

/// How JSON is laid out: one space after `:` and `,` (as Python's `json.dumps` writes it and
/// as models have seen most), no other whitespace, so an answer cannot run on in blanks.
pub(crate) fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// `schema` with our layout unless it sets its own `x-guidance` options.
pub(crate) fn with_layout(schema: &Value) -> Value {
    match schema {
        Value::Object(map) if !map.contains_key("x-guidance") => {
            let mut map = map.clone();
            map.insert("x-guidance".into(), json_layout());
            Value::Object(map)
        }
        other => other.clone(),
    }
}

impl Constraint {
    /// `json_object`, `json_schema`, `regex`, `lark` or `tool_calls` (a metric label and a
    /// task-history field).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JsonObject => "json_object",
            Self::JsonSchema(_) => "json_schema",
            Self::Regex(_) => "regex",
            Self::Lark(_) => "lark",
            Self::ToolCalls(_) => "tool_calls",
        }
    }

    pub(crate) fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Self::JsonObject => TopLevelGrammar::from_json_schema(with_layout(&json!({
                "type": "object"
            }))),
            Self::JsonSchema(schema) => {
                if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
                    return Err(Error::Unsupported(
                        "a JSON Schema must be an object (or true/false)".into(),
                    ));
                }
                TopLevelGrammar::from_json_schema(with_layout(schema))
            }
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Lark(lark) | Self::ToolCalls(lark) => TopLevelGrammar::from_lark(lark.clone()),
        })
    }

    /// The engine's compile error, said for this kind of constraint.
    pub(crate) fn explain(&self, error: &str) -> String {
        // The engine's messages can be long (a whole schema); keep the part that names it.
        let error: String = error.chars().take(600).collect();
        match self {
            Self::JsonObject | Self::JsonSchema(_) => {
                format!("this JSON Schema cannot be enforced: {error}")
            }
            Self::Regex(_) => format!("this regular expression cannot be enforced: {error}"),
            Self::Lark(_) => format!("this grammar cannot be enforced: {error}"),
            Self::ToolCalls(_) => {
                format!("the tools' parameter schemas cannot be enforced: {error}")
            }
        }
    }
}

/// The engine's step error in words (its stop reasons are identifiers; without verbose
/// errors it appends a marker, dropped here).
fn step_error(e: impl std::fmt::Display) -> Error {
    let text = e.to_string().replace("<non-verbose/>", "");
    let text = text.trim();
    Error::Step(if text.starts_with("NoExtension") {
        "the constraint allows no token the model's vocabulary can produce here".into()
    } else if text.contains("TooComplex") {
        format!("the constraint needed more work for one token than allowed ({text})")
    } else {
        text.to_string()
    })
}

/// One generation's constraint state.
pub struct Guide {
    matcher: Matcher,
    kind: &'static str,
    eos: Vec<u32>,
    finished: bool,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guide")
            .field("kind", &self.kind)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Guide {
    pub(crate) fn new(matcher: Matcher, kind: &'static str, eos: Vec<u32>) -> Self {
        Self {
            matcher,
            kind,
            eos,
            finished: false,
        }
    }

    /// The constraint's kind ([`Constraint::kind`]).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Sets to −∞ the logit of every token the constraint does not allow next (ids past the
    /// vocabulary included). End-of-sequence tokens are allowed only where the text is
    /// complete.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self.matcher.compute_mask().map_err(step_error)?;
        let words = allowed.as_slice();
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            let ok = words.get(i / 32).is_some_and(|w| w >> (i % 32) & 1 == 1);
            if ok {
                any |= l.is_finite() || *l == f32::INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            return Err(Error::Step(
                "the constraint allows no token the model can produce here".into(),
            ));
        }
        Ok(())
    }

    /// Advances the constraint past `token` (one [`Guide::mask`] allowed).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        if self.eos.contains(&token) {
            self.finished = true;
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(step_error)?;
        if self.matcher.is_stopped() {
            self.finished = true;
        }
        Ok(())
    }

    /// Whether nothing more may follow: the generation ends here.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the text so far is a complete match (an end here would be valid).
    pub fn is_complete(&mut self) -> bool {
        self.finished || self.matcher.is_accepting().unwrap_or(false)
    }
}
