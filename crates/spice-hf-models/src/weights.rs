//! Host-side weights in Hugging Face names and PyTorch layout, decoded to f32 from GGUF (Q/K
//! rows un-permuted) or safetensors (F32, F16, BF16): the Burn graph's input and the tests'
//! reference.

use std::collections::HashMap;
use std::path::Path;

use spice_hf_kernels::ops::RopeLayout;

use crate::Result;
use crate::config::LlamaConfig;
use crate::gguf::GgufFile;
use crate::tensors::TensorSet;

/// One tensor on the host: PyTorch shape and f32 values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Weights by Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
pub type Weights = HashMap<String, HostTensor>;

/// Undoes llama.cpp's Q/K row permutation (made for its interleaved RoPE):
/// `w.reshape(heads, hd/2, 2, in).swapaxes(1, 2).reshape(out, in)`.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let new_row = h * hd + a * (hd / 2) + b;
                let old_row = h * hd + b * 2 + a;
                out[new_row * cols..(new_row + 1) * cols]
                    .copy_from_slice(&data[old_row * cols..(old_row + 1) * cols]);
            }
        }
    }
    out
}

/// Loads and dequantizes every tensor of a Llama GGUF into Hugging Face names and layout.
pub fn load_gguf(g: &GgufFile, cfg: &LlamaConfig) -> Result<Weights> {
    dequantize_all(&TensorSet::from_gguf(g)?, cfg)
}

/// Loads every `*.safetensors` file in `dir` (F32, F16 and BF16 tensors) as f32.
pub fn load_safetensors_dir(dir: &Path) -> Result<Weights> {
    let set = TensorSet::from_safetensors_dir(dir)?;
    let mut out = Weights::new();
    for t in set.iter() {
        out.insert(
            t.name.clone(),
            HostTensor {
                shape: t.shape.clone(),
                data: t.to_f32(),
            },
        );
    }
    Ok(out)
}

/// Every tensor of `set` in f32 and Hugging Face layout (GGUF's Q/K rows un-permuted).
pub fn dequantize_all(set: &TensorSet, cfg: &LlamaConfig) -> Result<Weights> {
    cfg.validate()?;
    Ok(set
        .iter()
        .map(|t| (t.name.clone(), decode(set, t, cfg)))
        .collect())
}

/// One tensor of `set` in f32 and Hugging Face layout (GGUF's Q/K rows un-permuted).
pub(crate) fn decode(
    set: &TensorSet,
    t: &crate::tensors::TensorRef,
    cfg: &LlamaConfig,
) -> HostTensor {
    let mut data = t.to_f32();
    let name = &t.name;
    if set.rope_layout == RopeLayout::Interleaved
        && t.shape.len() == 2
        && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight"))
    {
        let heads = if name.ends_with("q_proj.weight") {
            cfg.heads
        } else {
            cfg.kv_heads
        };
        data = unpermute_rows(&data, t.shape[0], t.shape[1], heads);
    }
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}
