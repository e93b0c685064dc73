//! The tensors of a model file, memory-mapped and left in their stored format: a GGUF file, or
//! the `*.safetensors` files of a Hugging Face directory, by Hugging Face name.
//!
//! Nothing here reads a tensor's data; the kernels read it from the mapping when they multiply
//! (so the kernel's page cache is the only copy), and the Burn path decodes one tensor at a
//! time.
#![allow(unsafe_code)] // Reason: `memmap2::Mmap::map` is unsafe (see the SAFETY note there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spice_hf_kernels::format::Format;
use spice_hf_kernels::matrix::{Bytes, QMatrix};
use spice_hf_kernels::ops::RopeLayout;

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// One stored tensor: its format, PyTorch shape and bytes (in the mapping).
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// Hugging Face name.
    pub name: String,
    /// Stored format.
    pub format: Format,
    /// Shape, PyTorch order (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    /// The stored bytes.
    pub bytes: Bytes,
}

impl TensorRef {
    /// Elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Decodes every value to f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let raw = self.bytes.as_slice();
        // Float tensors may have any length; the block decoder wants blocks of 32.
        crate::quant::float_values(self.format, raw).unwrap_or_else(|| {
            let mut out = vec![0f32; self.elements()];
            spice_hf_kernels::format::decode_row(self.format, raw, &mut out);
            out
        })
    }
}

/// GGUF name → Hugging Face name, for a file of `arch` (`general.architecture`): llama.cpp
/// calls Gemma 3's pre-MLP norm `ffn_norm`, which is Llama's `post_attention_layernorm`.
pub(crate) fn hf_name(gguf: &str, arch: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, kind) = part.rsplit_once('.')?;
    let gemma = arch == "gemma3";
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "post_attention_norm" if gemma => "post_attention_layernorm",
        "post_ffw_norm" if gemma => "post_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The weight `name` is not in the file.
pub(crate) fn missing(name: &str) -> Error {
    Error::Config(format!("weight {name} is missing"))
}

/// An error unless the weight `name` has the shape the configuration asks for.
pub(crate) fn check_shape(name: &str, shape: &[usize], want: &[usize]) -> Result<()> {
    if shape != want {
        return Err(Error::Config(format!(
            "weight {name} has shape {shape:?}, expected {want:?}"
        )));
    }
    Ok(())
}

/// A file's bytes, mapped read-only.
struct Mapping(memmap2::Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn map(path: &Path) -> Result<Arc<dyn AsRef<[u8]> + Send + Sync>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: the mapping is read-only and lives as long as the tensors that borrow it. It is
    // undefined behaviour only if another process truncates or rewrites the file in place
    // while it is mapped; the cache never does (files are written to `.part` and renamed
    // over, which leaves this inode untouched), and a user editing a model file in place
    // under a running server is outside what we can defend against (llama.cpp and candle map
    // model files the same way).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("map", path, e))?;
    Ok(Arc::new(Mapping(mmap)))
}

/// Every tensor of a model, by Hugging Face name, and how its Q/K rows are laid out.
pub struct TensorSet {
    tensors: HashMap<String, TensorRef>,
    /// GGUF files store Q/K rows permuted for interleaved RoPE; Hugging Face files do not.
    pub rope_layout: RopeLayout,
    /// Where they came from.
    pub source: PathBuf,
}

impl std::fmt::Debug for TensorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorSet")
            .field("tensors", &self.tensors.len())
            .field("rope_layout", &self.rope_layout)
            .field("source", &self.source)
            .finish()
    }
}

impl TensorSet {
    /// Maps a parsed GGUF file (its table was checked against the file's length when parsed).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let owner = map(&g.path)?;
        let arch = g.str("general.architecture")?;
        let mut tensors = HashMap::new();
        for t in &g.tensors {
            // Tensors the architecture does not use (e.g. `rope_freqs`) are skipped.
            let Some(name) = hf_name(&t.name, arch) else {
                continue;
            };
            let format = t.ggml_type.format().ok_or_else(|| {
                Error::Unsupported(format!("tensor {} is stored as {}", t.name, t.ggml_type))
            })?;
            let start = usize::try_from(g.data_offset + t.offset)
                .map_err(|_| Error::Config(format!("tensor {} is past 2^64", t.name)))?;
            let bytes = Bytes::new(owner.clone(), start, t.byte_len() as usize).map_err(|e| {
                Error::Gguf {
                    path: g.path.clone(),
                    offset: start as u64,
                    reason: format!("tensor {}: {e}", t.name),
                }
            })?;
            tensors.insert(
                name.clone(),
                TensorRef {
                    name,
                    format,
                    shape: t.shape(),
                    bytes,
                },
            );
        }
        Ok(Self {
            tensors,
            // llama.cpp's converter permutes the Q/K rows of `llama` models only; the others
            // (qwen2, qwen3, gemma3) keep Hugging Face's rotate-half layout (its "NEOX" RoPE).
            rope_layout: if arch == "llama" {
                RopeLayout::Interleaved
            } else {
                RopeLayout::RotateHalf
            },
            source: g.path.clone(),
        })
    }

    /// Maps every `*.safetensors` file in `dir` (F32, F16 and BF16 tensors).
    pub fn from_safetensors_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Config(format!(
                "no .safetensors file in {}",
                dir.display()
            )));
        }
        let mut tensors = HashMap::new();
        for path in files {
            let owner = map(&path)?;
            let bytes: &[u8] = (*owner).as_ref();
            let st =
                safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            for (name, view) in st.tensors() {
                let format = match view.dtype() {
                    safetensors::Dtype::F32 => Format::F32,
                    safetensors::Dtype::F16 => Format::F16,
                    safetensors::Dtype::BF16 => Format::BF16,
                    // Integer and boolean buffers saved with the weights (BERT's
                    // `position_ids`) are not weights: a weight that is missing because of
                    // this is named as missing by whoever needs it.
                    safetensors::Dtype::I64
                    | safetensors::Dtype::I32
                    | safetensors::Dtype::I16
                    | safetensors::Dtype::I8
                    | safetensors::Dtype::U8
                    | safetensors::Dtype::BOOL => continue,
                    other => {
                        return Err(Error::Safetensors {
                            path: path.clone(),
                            reason: format!(
                                "tensor {name} has unsupported dtype {other:?} (F32, F16, BF16 are)"
                            ),
                        });
                    }
                };
                let data = view.data();
                let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
                let bytes = Bytes::new(owner.clone(), start, data.len()).map_err(|e| {
                    Error::Safetensors {
                        path: path.clone(),
                        reason: format!("tensor {name}: {e}"),
                    }
                })?;
                tensors.insert(
                    name.clone(),
                    TensorRef {
                        name,
                        format,
                        shape: view.shape().to_vec(),
                        bytes,
                    },
                );
            }
        }
        Ok(Self {
            tensors,
            rope_layout: RopeLayout::RotateHalf,
            source: dir.to_path_buf(),
        })
    }

    /// A tensor by Hugging Face name.
    pub fn get(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    /// Every tensor.
    pub fn iter(&self) -> impl Iterator<Item = &TensorRef> {
        self.tensors.values()
    }

    /// A tensor that must exist with `shape`.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&TensorRef> {
        let t = self.get(name).ok_or_else(|| missing(name))?;
        check_shape(name, &t.shape, shape)?;
        Ok(t)
    }

    /// A `[rows, cols]` weight kept in its stored format.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QMatrix> {
        let t = self.expect(name, &[rows, cols])?;
        QMatrix::new(t.format, rows, cols, t.bytes.clone())
            .map_err(|e| Error::Config(format!("weight {name}: {e}")))
    }

    /// A vector (a norm's weight) decoded to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.expect(name, &[len])?.to_f32())
    }
}
