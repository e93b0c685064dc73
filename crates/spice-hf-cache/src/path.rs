//! Checked joins: every path the cache writes goes through [`checked_join`], which refuses
//! anything that could land outside the base directory under POSIX *or* Windows rules.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The longest single path component accepted (most filesystems stop at 255 bytes).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Checks that `rel` is a safe relative path (`/`-separated) and joins it below `base`.
///
/// Refused, under both POSIX and Windows rules: empty paths and components, `.` and `..`,
/// absolute paths (`/x`), drive forms (`C:\x`, `C:x`), UNC paths (`\\host\share`), any
/// backslash, NUL and other control characters, and components longer than
/// [`MAX_COMPONENT_BYTES`].
pub fn checked_join(base: &Path, rel: &str) -> Result<PathBuf> {
    validate_relative(rel)?;
    let mut out = base.to_path_buf();
    for component in rel.split('/') {
        out.push(component);
    }
    Ok(out)
}

/// Validates a server- or user-supplied relative path without joining it.
pub fn validate_relative(rel: &str) -> Result<()> {
    let bad = |reason: &str| Error::UnsafePath {
        path: rel.escape_debug().to_string(),
        reason: reason.to_string(),
    };
    if rel.is_empty() {
        return Err(bad("the path is empty"));
    }
    if rel.starts_with('/') {
        return Err(bad("absolute paths are not allowed"));
    }
    if let Some(c) = rel.chars().find(|c| c.is_control()) {
        return Err(bad(&format!(
            "control character {:?} is not allowed",
            c.escape_debug().to_string()
        )));
    }
    if rel.contains('\\') {
        return Err(bad("backslashes are not allowed (Windows path separator)"));
    }
    let bytes = rel.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(bad("Windows drive paths are not allowed"));
    }
    for component in rel.split('/') {
        match component {
            "" => return Err(bad("empty path component (`//` or a trailing `/`)")),
            "." | ".." => return Err(bad("`.` and `..` components are not allowed")),
            _ => {}
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(bad("a path component is longer than 255 bytes"));
        }
        if component.contains(':') {
            // `C:x`, alternate data streams `file:stream`, device names such as `CON:`.
            return Err(bad("`:` is not allowed (Windows drive or stream syntax)"));
        }
        if component.ends_with('.') || component.ends_with(' ') {
            return Err(bad(
                "components ending in `.` or a space are not allowed (Windows strips them)",
            ));
        }
        let stem = component.split('.').next().unwrap_or(component);
        if is_windows_device(stem) {
            return Err(bad(
                "Windows device names (CON, NUL, COM1, ...) are not allowed",
            ));
        }
    }
    Ok(())
}

fn is_windows_device(stem: &str) -> bool {
    let upper = stem.to_ascii_uppercase();
    matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit())
}

/// Validates a repository id the way the Hub does: 1 to 96 characters of `[A-Za-z0-9._-]`
/// with at most one `/`, no `--` or `..`, not starting or ending with `-` or `.`.
pub fn validate_repo_id(repo: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidRepoId {
        repo: repo.escape_debug().to_string(),
        reason,
    };
    if repo.is_empty() || repo.len() > 96 {
        return Err(bad("it must be 1 to 96 characters long".into()));
    }
    if let Some(c) = repo
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(bad(format!(
            "character {:?} is not allowed (use letters, digits, `.`, `_`, `-` and one `/`)",
            c
        )));
    }
    if repo.matches('/').count() > 1 {
        return Err(bad("it may contain at most one `/` (org/name)".into()));
    }
    for part in repo.split('/') {
        if part.is_empty() {
            return Err(bad("the organisation and the name must not be empty".into()));
        }
        if part.contains("--") || part.contains("..") {
            return Err(bad("`--` and `..` are not allowed".into()));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(bad("a part must not start or end with `-` or `.`".into()));
        }
    }
    Ok(())
}
