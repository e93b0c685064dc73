//! Hub tokens and where they come from.
//!
//! Order: explicit `hf_token` (alias `token`) > `HF_TOKEN` > the file at `HF_TOKEN_PATH` >
//! `$HF_HOME/token` > `~/.cache/huggingface/token`. `HF_HUB_DISABLE_IMPLICIT_TOKEN` (truthy)
//! disables every source but the explicit one. Values are trimmed. The source is logged at
//! info; the value never is.

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// A Hub access token. Its `Debug` and `Display` print `hf_***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct HfToken(String);

impl HfToken {
    /// Wraps a token, trimming white space. Fails on an empty value or on characters that
    /// cannot go in an HTTP header (the error never contains the value).
    pub fn new(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.is_empty() {
            return Err(Error::InvalidTokenValue {
                source_name: "the given token".into(),
                reason: "it is empty".into(),
            });
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidTokenValue {
                source_name: "the given token".into(),
                reason: "it contains spaces or non-ASCII characters".into(),
            });
        }
        Ok(Self(v.to_string()))
    }

    /// The secret value, for the `Authorization` header. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hf_***")
    }
}

impl fmt::Display for HfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hf_***")
    }
}

/// Where a token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given explicitly (`hf_token`, `token`, `--token`).
    Explicit,
    /// The `HF_TOKEN` environment variable.
    EnvVar,
    /// The file named by `HF_TOKEN_PATH`.
    TokenPath(PathBuf),
    /// `$HF_HOME/token`.
    HfHome(PathBuf),
    /// `~/.cache/huggingface/token`.
    DefaultFile(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit => f.write_str("explicit hf_token"),
            Self::EnvVar => f.write_str("HF_TOKEN"),
            Self::TokenPath(p) => write!(f, "HF_TOKEN_PATH ({})", p.display()),
            Self::HfHome(p) => write!(f, "$HF_HOME/token ({})", p.display()),
            Self::DefaultFile(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Whether an environment value means "on" (`1`, `ON`, `YES`, `TRUE`, any case).
pub fn env_truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// Resolves the token from the explicit value and the environment (`env` looks a variable up;
/// pass `|k| std::env::var(k).ok()` in production).
pub fn resolve_token(
    explicit: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(HfToken, TokenSource)>> {
    let found = find(explicit, &env)?;
    match &found {
        Some((_, source)) => tracing::info!(source = %source, "using a Hugging Face token"),
        None => tracing::debug!("no Hugging Face token configured; requests are anonymous"),
    }
    Ok(found)
}

fn find(
    explicit: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(HfToken, TokenSource)>> {
    if let Some(v) = explicit {
        return HfToken::new(v)
            .map(|t| Some((t, TokenSource::Explicit)))
            .map_err(|e| e.with_token_source("the explicit hf_token"));
    }
    if env_truthy(env("HF_HUB_DISABLE_IMPLICIT_TOKEN").as_deref()) {
        return Ok(None);
    }
    if let Some(v) = env("HF_TOKEN").filter(|v| !v.trim().is_empty()) {
        return HfToken::new(&v)
            .map(|t| Some((t, TokenSource::EnvVar)))
            .map_err(|e| e.with_token_source("HF_TOKEN"));
    }
    let mut files = Vec::new();
    if let Some(p) = env("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        files.push((p.clone(), TokenSource::TokenPath(p)));
    }
    if let Some(h) = env("HF_HOME").filter(|h| !h.is_empty()) {
        let p = PathBuf::from(h).join("token");
        files.push((p.clone(), TokenSource::HfHome(p)));
    }
    if let Some(home) = env("HOME").filter(|h| !h.is_empty()) {
        let p = PathBuf::from(home).join(".cache/huggingface/token");
        files.push((p.clone(), TokenSource::DefaultFile(p)));
    }
    for (path, source) in files {
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim().is_empty() => continue,
            Ok(v) => {
                return HfToken::new(&v)
                    .map(|t| Some((t, source)))
                    .map_err(|e| e.with_token_source(&path.display().to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::InvalidTokenValue {
                    source_name: path.display().to_string(),
                    reason: format!("it cannot be read: {e}"),
                });
            }
        }
    }
    Ok(None)
}
