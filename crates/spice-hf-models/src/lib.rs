//! spice-hf's model files and networks: GGUF and safetensors readers (memory-mapped, tensors
//! left in their stored format), the Llama family on the packed CPU kernels of
//! `spice-hf-kernels` or as a Burn graph on a GPU device, tokenizers, chat templates, sampling
//! and the footprint estimate.
//!
//! This layer loads from paths and knows nothing of HTTP or the cache layout.
//!
//! ```no_run
//! # fn main() -> spice_hf_models::Result<()> {
//! let gguf = spice_hf_models::gguf::GgufFile::open("model.gguf".as_ref())?;
//! println!("{} tensors, architecture {}", gguf.tensors.len(), gguf.str("general.architecture")?);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features yet.

pub mod bert;
pub mod chat;
pub mod config;
pub mod footprint;
pub mod generate;
pub mod gguf;
mod heap;
pub mod llama;
pub mod loaded;
pub mod quant;
pub mod sampling;
pub mod tensors;
#[cfg(test)]
mod tests;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A GGUF file is malformed or truncated.
    #[error("{} is not a valid GGUF file (at byte {offset}): {reason}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// Where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A tokenizer could not be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to parse or render, or the model has none.
    #[error("chat template: {0}")]
    Template(String),
    /// A model configuration or weight set is wrong.
    #[error("model configuration: {0}")]
    Config(String),
    /// A safetensors file is malformed.
    #[error("{} is not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The prompt and generation do not fit the context.
    #[error(
        "the context is full: {needed} positions needed, {capacity} available; shorten the prompt or raise the context length"
    )]
    ContextFull {
        /// Positions needed.
        needed: usize,
        /// Positions available.
        capacity: usize,
    },
    /// A token id the model has no embedding for (a tokenizer that does not match the model,
    /// or ids sent by a client).
    #[error(
        "token id {id} is outside the vocabulary of {vocab}; the tokenizer and the model do not match"
    )]
    TokenOutOfVocabulary {
        /// The id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// Something this build does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An output constraint could not be compiled or enforced (see `spice_hf_grammar`).
    #[error(transparent)]
    Constraint(#[from] spice_hf_grammar::Error),
    /// A filesystem operation failed.
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The model layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
