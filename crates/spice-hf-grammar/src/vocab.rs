//! A model's vocabulary as the grammar engine sees it: the bytes each token stands for, special
//! tokens kept apart (the text of a grammar never matches them), the end-of-sequence tokens,
//! and one compiled parser factory shared by every request of the model.
//!
//! Vocabularies come from model files, so nothing here trusts them: a vocabulary past
//! [`MAX_VOCABULARY`] tokens is refused, a token longer than [`MAX_TOKEN_BYTES`] is never
//! allowed (the trie the engine builds has a depth limit), and building the trie runs with
//! its panics caught.

use std::sync::Arc;

use llguidance::api::ParserLimits;
use llguidance::toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use crate::constraint::{Constraint, Guide};
use crate::{Error, Result};

/// One token of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A token that stands for these bytes of text.
    Bytes(Vec<u8>),
    /// A control token (`<|im_end|>`): never part of text a grammar matches.
    Special(String),
    /// An id with no token (padding of the embedding table): never allowed.
    Unused,
}

/// Most tokens a vocabulary may hold (the largest real ones have about 260,000).
pub const MAX_VOCABULARY: usize = 1 << 20;

/// Longest token, in bytes, that a grammar may produce; longer ones are never allowed.
pub const MAX_TOKEN_BYTES: usize = 512;

/// The environment the engine asks for tokens: the trie, and tokenizing bytes greedily over it
/// (used only for the few tokens a grammar forces).
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// A model's vocabulary compiled for the grammar engine. Build it once per model (it walks the
/// whole vocabulary); [`Vocabulary::guide`] then compiles a constraint for one generation.
pub struct Vocabulary {
    factory: ParserFactory,
    eos: Vec<u32>,
    len: usize,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("len", &self.len)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Vocabulary {
    /// The vocabulary whose token `i` is `tokens[i]`; `eos` are the tokens that end a
    /// generation (at least one, each in range). A grammar allows them exactly when its text
    /// is complete.
    pub fn new(tokens: Vec<Token>, eos: &[u32]) -> Result<Self> {
        let len = tokens.len();
        if len == 0 || len > MAX_VOCABULARY {
            return Err(Error::Vocabulary(format!(
                "it has {len} tokens; between 1 and {MAX_VOCABULARY} are supported"
            )));
        }
        let Some(&first) = eos.first() else {
            return Err(Error::Vocabulary(
                "it has no end-of-sequence token, so a constrained answer could never end".into(),
            ));
        };
        if let Some(bad) = eos.iter().find(|&&e| e as usize >= len) {
            return Err(Error::Vocabulary(format!(
                "end-of-sequence token {bad} is outside the vocabulary of {len} tokens"
            )));
        }
        let words: Vec<Vec<u8>> = tokens
            .into_iter()
            .map(|t| match t {
                Token::Bytes(b) if b.len() <= MAX_TOKEN_BYTES => b,
                Token::Bytes(_) | Token::Unused => Vec::new(),
                Token::Special(name) => {
                    let mut b = Vec::with_capacity(name.len() + 1);
                    b.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    b.extend(name.bytes().take(MAX_TOKEN_BYTES));
                    b
                }
            })
            .collect();
        let info = TokRxInfo::new(len as u32, first);
        let built = std::panic::catch_unwind(|| {
            let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
            let env: llguidance::toktrie::TokEnv = Arc::new(Env { trie });
            ParserFactory::new_simple(&env)
        });
        let mut factory = match built {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(Error::Vocabulary(e.to_string())),
            Err(_) => {
                return Err(Error::Vocabulary(
                    "building the token trie failed (a malformed vocabulary)".into(),
                ));
            }
        };
        factory.quiet();
        *factory.limits_mut() = limits();
        Ok(Self {
            factory,
            eos: eos.to_vec(),
            len,
        })
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vocabulary is empty (never: [`Vocabulary::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The end-of-sequence tokens.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Compiles `constraint` for one generation. The compile is bounded (see the crate docs);
    /// a feature the engine does not implement is an [`Error::Unsupported`] naming it.
    pub fn guide(&self, constraint: &Constraint) -> Result<Guide> {
        let grammar = constraint.grammar()?;
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(grammar)
        }))
        .map_err(|_| Error::Unsupported("compiling the constraint failed".into()))?
        .map_err(|e| Error::Unsupported(constraint.explain(&e.to_string())))?;
        let matcher = Matcher::new(Ok(parser));
        Ok(Guide::new(matcher, constraint.kind(), self.eos.clone()))
    }
}

/// The engine's default limits, except that errors never carry the parser's state (which
/// holds the generated text: a client's private data) and the grammar size is capped lower.
fn limits() -> ParserLimits {
    ParserLimits {
        verbose_errors: false,
        // A few hundred kilobytes of JSON Schema; far above any tool list or response format.
        max_grammar_size: 200_000,
        ..ParserLimits::default()
    }
}
