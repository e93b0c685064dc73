//! Host-side weights in Hugging Face names and PyTorch layout, loaded from GGUF (dequantized,
//! Q/K rows un-permuted) or safetensors (F32, F16, BF16), plus the Llama configuration.

use std::collections::HashMap;
use std::path::Path;

use spice_hf_kernels::ops::RopeLayout;

use crate::gguf::GgufFile;
use crate::tensors::TensorSet;
use crate::{Error, Result};

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

/// Llama 3 `rope_scaling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position_embeddings: f64,
}

/// The shape of a Llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Hidden size.
    pub hidden: usize,
    /// MLP size.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest context.
    pub max_positions: usize,
    /// Whether the LM head shares the embedding matrix.
    pub tie_embeddings: bool,
    /// Llama 3 frequency scaling.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Per-frequency divisors of the rotary frequencies, one per pair of head dimensions: how
    /// llama.cpp stores Llama 3 scaling in a GGUF (the `rope_freqs.weight` tensor) instead of
    /// the `rope_scaling` object.
    pub rope_freq_factors: Option<Vec<f64>>,
}

/// Most `rope_freqs.weight` values read (a head dimension of 128 Ki, far beyond any model).
const MAX_ROPE_FREQS: u64 = 1 << 16;

/// Reads and checks the `rope_freqs.weight` tensor of a GGUF.
fn read_rope_freqs(g: &GgufFile, t: &crate::gguf::TensorInfo) -> Result<Vec<f64>> {
    if t.ggml_type != crate::gguf::GgmlType::F32 {
        return Err(Error::Unsupported(format!(
            "rope_freqs.weight stored as {} (F32 expected)",
            t.ggml_type
        )));
    }
    let n = t.elements();
    if n == 0 || n > MAX_ROPE_FREQS || t.dims.len() != 1 {
        return Err(Error::Config(format!(
            "rope_freqs.weight has shape {:?}; one value per rotary frequency expected",
            t.dims
        )));
    }
    let raw = g.read_raw(t)?;
    raw.chunks_exact(4)
        .map(|b| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_finite() && v > 0.0 {
                Ok(f64::from(v))
            } else {
                Err(Error::Config(format!(
                    "rope_freqs.weight holds {v}; the frequency divisors must be positive"
                )))
            }
        })
        .collect()
}

impl LlamaConfig {
    /// Per-head size.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Reads `llama.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Unsupported(format!(
                "GGUF architecture {arch:?} (llama is supported)"
            )));
        }
        let k = |s: &str| format!("llama.{s}");
        let heads = g.u64(&k("attention.head_count"))? as usize;
        let vocab = match g.get(&k("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1))
                .map(|&d| d as usize)
                .ok_or_else(|| {
                    Error::Config(
                        "GGUF has no llama.vocab_size and no 2-D token_embd.weight to read it from"
                            .into(),
                    )
                })?,
        };
        Ok(Self {
            hidden: g.u64(&k("embedding_length"))? as usize,
            intermediate: g.u64(&k("feed_forward_length"))? as usize,
            layers: g.u64(&k("block_count"))? as usize,
            heads,
            kv_heads: g
                .get(&k("attention.head_count_kv"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(heads),
            vocab,
            rms_eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g
                .get(&k("rope.freq_base"))
                .and_then(|v| v.as_f64())
                .unwrap_or(10_000.0),
            max_positions: g.u64(&k("context_length"))? as usize,
            tie_embeddings: g.tensor("output.weight").is_none(),
            rope_scaling: None,
            rope_freq_factors: g
                .tensor("rope_freqs.weight")
                .map(|t| read_rope_freqs(g, t))
                .transpose()?,
        })
    }

    /// Reads a Hugging Face `config.json` of the Llama family.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let c: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let need = |key: &str| {
            c[key].as_u64().map(|v| v as usize).ok_or_else(|| {
                Error::Config(format!(
                    "{}: `{key}` is missing or not a number",
                    path.display()
                ))
            })
        };
        let model_type = c["model_type"].as_str().unwrap_or("llama");
        if model_type != "llama" {
            return Err(Error::Unsupported(format!(
                "model_type {model_type:?} (llama is supported)"
            )));
        }
        let heads = need("num_attention_heads")?;
        let rope_scaling = match &c["rope_scaling"] {
            serde_json::Value::Object(s)
                if s.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") =>
            {
                Some(Llama3RopeScaling {
                    factor: s["factor"].as_f64().unwrap_or(8.0),
                    low_freq_factor: s["low_freq_factor"].as_f64().unwrap_or(1.0),
                    high_freq_factor: s["high_freq_factor"].as_f64().unwrap_or(4.0),
                    original_max_position_embeddings: s["original_max_position_embeddings"]
                        .as_f64()
                        .unwrap_or(8192.0),
                })
            }
            serde_json::Value::Null => None,
            other => return Err(Error::Unsupported(format!("rope_scaling {other}"))),
        };
        Ok(Self {
            hidden: need("hidden_size")?,
            intermediate: need("intermediate_size")?,
            layers: need("num_hidden_layers")?,
            heads,
            kv_heads: c["num_key_value_heads"]
                .as_u64()
                .map(|v| v as usize)
                .unwrap_or(heads),
            vocab: need("vocab_size")?,
            rms_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: c["rope_theta"].as_f64().unwrap_or(10_000.0),
            max_positions: c["max_position_embeddings"]
                .as_u64()
                .map(|v| v as usize)
                .unwrap_or(2048),
            tie_embeddings: c["tie_word_embeddings"].as_bool().unwrap_or(false),
            rope_scaling,
            rope_freq_factors: None,
        })
    }

    /// Checks that the shape is coherent (heads divide the hidden size and each other).
    pub fn validate(&self) -> Result<()> {
        let ok = self.heads > 0
            && self.kv_heads > 0
            && self.hidden.is_multiple_of(self.heads)
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim().is_multiple_of(2)
            && self.layers > 0
            && self.vocab > 0;
        if !ok {
            // The shape only: `rope_freq_factors` can hold 65,536 values from a hostile file.
            return Err(Error::Config(format!(
                "incoherent model shape: hidden {}, intermediate {}, {} layers, {} heads, {} KV heads, vocabulary {}",
                self.hidden, self.intermediate, self.layers, self.heads, self.kv_heads, self.vocab
            )));
        }
        if let Some(f) = &self.rope_freq_factors
            && f.len() != self.head_dim() / 2
        {
            return Err(Error::Config(format!(
                "rope_freqs.weight has {} values; a head of {} dimensions needs {}",
                f.len(),
                self.head_dim(),
                self.head_dim() / 2
            )));
        }
        Ok(())
    }
}

/// GGUF name → Hugging Face name.
pub(crate) fn hf_name(gguf: &str) -> Option<String> {
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
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

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
    let mut out = Weights::new();
    for t in set.iter() {
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
        out.insert(
            name.clone(),
            HostTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    Ok(out)
}
