//! Loading a model from a path: a `.gguf` file, or a directory with `config.json`,
//! `*.safetensors` and `tokenizer.json` (or a `.gguf` inside).

use std::path::{Path, PathBuf};

use crate::chat::ChatTemplate;
use crate::config::LlamaConfig;
use crate::footprint::{Footprint, Usage};
use crate::gguf::GgufFile;
use crate::llama::{Compute, Llama};
use crate::tensors::TensorSet;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A model ready to generate: architecture, tokenizer, chat template (if it has one).
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template; `None` means chat is unavailable (plain completion still works).
    pub template: Option<ChatTemplate>,
    /// Where it was loaded from.
    pub source: PathBuf,
}

/// What a model path holds, read from headers only (nothing large is loaded).
#[derive(Debug)]
pub enum ModelFiles {
    /// A GGUF file.
    Gguf(Box<GgufFile>),
    /// A Hugging Face directory.
    Safetensors(PathBuf),
}

impl ModelFiles {
    /// Looks at `path`: a `.gguf` file, or a directory (safetensors preferred, else one `.gguf`).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            return Ok(Self::Gguf(Box::new(GgufFile::open(path)?)));
        }
        if path.join("config.json").is_file() && has_ext(path, "safetensors") {
            return Ok(Self::Safetensors(path.to_path_buf()));
        }
        let ggufs = files_with_ext(path, "gguf");
        match ggufs.as_slice() {
            [one] => Ok(Self::Gguf(Box::new(GgufFile::open(one)?))),
            [] => Err(Error::Config(format!(
                "{} holds neither config.json + *.safetensors nor a .gguf file",
                path.display()
            ))),
            many => Err(Error::Config(format!(
                "{} holds {} .gguf files; name one of them",
                path.display(),
                many.len()
            ))),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> Result<LlamaConfig> {
        match self {
            Self::Gguf(g) => LlamaConfig::from_gguf(g),
            Self::Safetensors(dir) => LlamaConfig::from_hf_config(&dir.join("config.json")),
        }
    }

    /// Estimates the memory the model will take for `usage`.
    pub fn footprint(&self, usage: &Usage) -> Result<Footprint> {
        let cfg = self.config()?;
        cfg.validate()?;
        let (params, file_bytes) = match self {
            Self::Gguf(g) => (
                g.tensors.iter().map(|t| t.elements()).sum(),
                g.tensors.iter().map(|t| t.byte_len()).sum(),
            ),
            Self::Safetensors(dir) => {
                let mut params = 0u64;
                let mut bytes = 0u64;
                for f in files_with_ext(dir, "safetensors") {
                    let (p, b) = safetensors_header(&f)?;
                    params += p;
                    bytes += b;
                }
                (params, bytes)
            }
        };
        Ok(Footprint::estimate(&cfg, params, file_bytes, usage))
    }

    /// Loads everything with room for `context` positions, computing as `compute` says.
    pub fn load(self, context: usize, compute: &Compute) -> Result<LoadedModel> {
        let cfg = self.config()?;
        let (tensors, tokenizer, template, source) = match self {
            Self::Gguf(g) => (
                TensorSet::from_gguf(&g)?,
                Tokenizer::from_gguf(&g)?,
                ChatTemplate::from_gguf(&g),
                g.path.clone(),
            ),
            Self::Safetensors(dir) => (
                TensorSet::from_safetensors_dir(&dir)?,
                Tokenizer::from_dir(&dir)?,
                ChatTemplate::from_dir(&dir)?,
                dir,
            ),
        };
        let model = Llama::load(cfg, &tensors, context, compute)?;
        // The tokenizer's construction left freed memory the allocator would keep resident.
        crate::heap::release_freed();
        Ok(LoadedModel {
            model,
            tokenizer,
            template,
            source,
        })
    }
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case(ext)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn has_ext(dir: &Path, ext: &str) -> bool {
    !files_with_ext(dir, ext).is_empty()
}

/// (parameters, data bytes) from a safetensors header, without reading the data.
fn safetensors_header(path: &Path) -> Result<(u64, u64)> {
    use std::io::Read as _;
    let bad = |reason: String| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > len {
        return Err(bad(format!(
            "header length {n} is past the end of the file or over 100 MiB"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| Error::io("read", path, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let mut params = 0u64;
    let mut bytes = 0u64;
    for (name, t) in v.as_object().into_iter().flatten() {
        if name == "__metadata__" {
            continue;
        }
        let shape: Option<Vec<u64>> = t["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = t["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(bad(format!(
                "tensor {name} has no valid shape or data_offsets"
            )));
        };
        params = params.saturating_add(shape.iter().product());
        if let [a, b] = offsets.as_slice() {
            if b < a || n + 8 + b > len {
                return Err(bad(format!(
                    "tensor {name} data runs past the end of the file"
                )));
            }
            bytes += b - a;
        }
    }
    Ok((params, bytes))
}
