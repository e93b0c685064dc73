//! spice-hf's constrained decoding: an output constraint ([`Constraint`]: a JSON Schema, any
//! JSON object, a regular expression or a Lark grammar) becomes, at every decode step, a mask
//! over the model's vocabulary ([`Guide::mask`]), so that what the model writes is guaranteed to
//! parse and to validate. The grammar engine is `llguidance` (the one llama.cpp and mistral.rs
//! use); this crate owns how a model's vocabulary is described to it ([`Vocabulary`]), the
//! limits every compile and every step runs within, and turning its failures into errors that
//! name what is wrong.
//!
//! [`tools`] builds on it: the tool-call syntaxes (the Hermes `<tool_call>` blocks that Qwen2.5
//! templates and our default format use, the Llama 3.x JSON call), the system message that
//! describes tools to a model whose template cannot, the grammar that makes a required or
//! named call certain to exist and its arguments certain to validate, and the parser that
//! turns the text back into calls, whole or while it streams.
//!
//! No Burn, no async runtime, no other spice-hf layer: it builds and tests in seconds.
//!
//! ```
//! use spice_hf_grammar::{Constraint, Token, Vocabulary};
//!
//! // A toy vocabulary: one token per ASCII byte, then an end-of-text token.
//! let mut tokens: Vec<Token> = (0u8..128).map(|b| Token::Bytes(vec![b])).collect();
//! tokens.push(Token::Special("<|end|>".into()));
//! let vocab = Vocabulary::new(tokens, &[128]).unwrap();
//! let mut guide = vocab.guide(&Constraint::Regex("[0-9]{2}".into())).unwrap();
//! let mut logits = vec![0.0f32; 129];
//! guide.mask(&mut logits).unwrap();
//! assert!(logits[b'7' as usize].is_finite() && logits[b'a' as usize] == f32::NEG_INFINITY);
//! ```

mod constraint;
pub mod tools;
mod vocab;

pub use constraint::{Constraint, Guide};
pub use vocab::{MAX_TOKEN_BYTES, MAX_VOCABULARY, Token, Vocabulary};

/// Errors of constrained decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The constraint cannot be compiled: a JSON Schema feature the engine does not implement,
    /// a schema nothing satisfies, a regex or grammar that does not parse, or one past the
    /// size limits. The message names it.
    #[error("{0}")]
    Unsupported(String),
    /// The model's vocabulary cannot be described to the grammar engine.
    #[error("the vocabulary cannot be used for constrained decoding: {0}")]
    Vocabulary(String),
    /// A decode step failed (the grammar engine's error, or a step past its limits); the
    /// generation must end with this error.
    #[error("constrained decoding failed: {0}")]
    Step(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
