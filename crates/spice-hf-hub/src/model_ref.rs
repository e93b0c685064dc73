//! Model references: `[huggingface:|hf:][huggingface.co/]org/name[@revision]`.

use std::fmt;

use crate::{Error, Result};

/// A parsed, validated model reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    repo: String,
    revision: String,
}

impl ModelRef {
    /// Parses a reference. `latest` and an empty revision mean `main`; anything that is not a
    /// 40-hex commit or a plain name (`[A-Za-z0-9_.-]`, plus `refs/pr/N` and
    /// `refs/convert/NAME`) is rejected, never rewritten.
    pub fn parse(input: &str) -> Result<Self> {
        Self::parse_noting_revision(input).map(|(r, _)| r)
    }

    /// Parses like [`ModelRef::parse`] and says whether `input` named a revision
    /// (`org/name@rev`) rather than taking `main`: the cache commands read `org/name` alone as
    /// every cached revision.
    pub fn parse_noting_revision(input: &str) -> Result<(Self, bool)> {
        let bad = |reason: String| Error::InvalidRef {
            input: input.to_string(),
            reason,
        };
        let mut rest = input.trim();
        for scheme in ["huggingface:", "hf:"] {
            if let Some(r) = rest.strip_prefix(scheme) {
                rest = r;
                break;
            }
        }
        for host in ["https://huggingface.co/", "huggingface.co/", "hf.co/"] {
            if let Some(r) = rest.strip_prefix(host) {
                rest = r;
                break;
            }
        }
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (rest, ""),
        };
        spice_hf_cache::validate_repo_id(repo).map_err(|e| bad(e.to_string()))?;
        let given = !revision.is_empty();
        let revision = match revision {
            "" | "latest" => "main".to_string(),
            rev => {
                validate_revision(rev)?;
                rev.to_string()
            }
        };
        Ok((
            Self {
                repo: repo.to_string(),
                revision,
            },
            given,
        ))
    }

    /// A reference from parts, validated like [`ModelRef::parse`].
    pub fn new(repo: &str, revision: &str) -> Result<Self> {
        Self::parse(&format!("{repo}@{revision}"))
    }

    /// The repository id (`org/name`).
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The revision (`main`, a tag, a branch or a 40-hex commit).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Whether the revision is a full commit id, which never changes.
    pub fn is_pinned(&self) -> bool {
        is_commit(&self.revision)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

impl std::str::FromStr for ModelRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Whether `s` is a full 40-hex commit id.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Validates a revision name; the error names the first offending character and its position.
pub fn validate_revision(rev: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidRevision {
        revision: rev.to_string(),
        reason,
    };
    if is_commit(rev) {
        return Ok(());
    }
    if rev.len() > 255 {
        return Err(bad("it is longer than 255 characters".into()));
    }
    if let Some((i, c)) = rev
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(bad(format!(
            "character {c:?} at byte {i} is not allowed (use letters, digits, `_`, `.`, `-`)"
        )));
    }
    if rev.starts_with('-') {
        return Err(bad("it must not start with `-`".into()));
    }
    if rev.contains("..") || rev.starts_with('.') {
        return Err(bad("`..` and a leading `.` are not allowed".into()));
    }
    if rev.contains('/') {
        let parts: Vec<&str> = rev.split('/').collect();
        let ok = match parts.as_slice() {
            ["refs", "pr", n] => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
            ["refs", "convert", name] => !name.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(bad(
                "`/` is only allowed in `refs/pr/N` and `refs/convert/NAME`".into(),
            ));
        }
    }
    Ok(())
}
