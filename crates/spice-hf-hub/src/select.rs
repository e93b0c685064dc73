//! File selection: include/exclude globs and a GGUF quantization.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// Which files of a repository to pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Globs a file must match (any of them); empty means every file.
    pub include: Vec<String>,
    /// Globs that drop a file.
    pub exclude: Vec<String>,
    /// A GGUF quantization (`q4_1`, `Q8_0`, ...): keep only the `.gguf` files of that
    /// quantization (other files still follow include/exclude).
    pub quant: Option<String>,
}

fn globset(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| Error::Selection(format!("bad glob {g:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Selection(e.to_string()))
}

/// Whether a `.gguf` file name carries quantization `quant` (a `.`/`-`-separated token).
pub fn gguf_quant_matches(path: &str, quant: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(stem) = name
        .strip_suffix(".gguf")
        .or_else(|| name.strip_suffix(".GGUF"))
    else {
        return false;
    };
    stem.split(['.', '-'])
        .any(|t| t.eq_ignore_ascii_case(quant))
}

impl Selection {
    /// Filters `paths`, keeping their order. Fails when a quantization matches no file (the
    /// error lists the `.gguf` files there are) or when nothing at all is selected.
    pub fn apply<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<Vec<&'a str>> {
        let include = globset(&self.include)?;
        let exclude = globset(&self.exclude)?;
        let all: Vec<&str> = paths.into_iter().collect();
        let mut out = Vec::new();
        for &p in &all {
            let name = p.rsplit('/').next().unwrap_or(p);
            let hit = |set: &GlobSet| set.is_match(p) || set.is_match(name);
            if include.as_ref().is_some_and(|s| !hit(s)) || exclude.as_ref().is_some_and(hit) {
                continue;
            }
            if let Some(q) = &self.quant
                && p.to_ascii_lowercase().ends_with(".gguf")
                && !gguf_quant_matches(p, q)
            {
                continue;
            }
            out.push(p);
        }
        if let Some(q) = &self.quant
            && !out.iter().any(|p| gguf_quant_matches(p, q))
        {
            let ggufs: Vec<&str> = all
                .iter()
                .copied()
                .filter(|p| p.to_ascii_lowercase().ends_with(".gguf"))
                .collect();
            return Err(Error::Selection(format!(
                "no .gguf file with quantization {q:?}; available: {}",
                if ggufs.is_empty() {
                    "none".to_string()
                } else {
                    ggufs.join(", ")
                }
            )));
        }
        if out.is_empty() && !all.is_empty() {
            return Err(Error::Selection(
                "the include/exclude globs select no file".into(),
            ));
        }
        Ok(out)
    }
}
