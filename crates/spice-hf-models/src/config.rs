//! The shape of a decoder of the Llama family and its relatives (Mistral, Qwen2, Qwen3,
//! Gemma 3), read from GGUF metadata or a Hugging Face `config.json` (a typed document: a field
//! of the wrong type is an error naming it, never a default). An architecture we do not
//! implement is refused by name, never guessed.

use std::path::Path;

use serde::Deserialize;

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// Largest `config.json` read: real ones are a few KiB (a classifier's label map may reach
/// hundreds); a repository's file past this is refused, never read into memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The fields of a Hugging Face `config.json` we read; others are ignored.
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default = "llama")]
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    vocab_size: usize,
    #[serde(default = "rms_norm_eps")]
    rms_norm_eps: f64,
    /// Older files (transformers 4); transformers 5 writes `rope_parameters.rope_theta`.
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default = "max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
    /// transformers 5's name for `rope_scaling`, which also holds `rope_theta`.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    /// The MLP's activation: SiLU (SwiGLU) is the one these architectures use.
    #[serde(default)]
    hidden_act: Option<String>,
    /// Qwen3, Mistral Nemo: heads wider or narrower than `hidden_size / num_attention_heads`.
    #[serde(default)]
    head_dim: Option<usize>,
    /// Llama, Mistral, Qwen3: biases on every attention projection.
    #[serde(default)]
    attention_bias: Option<bool>,
    /// Mistral: how many past positions (itself included) a query sees; `null` for all.
    #[serde(default)]
    sliding_window: Option<usize>,
    /// Qwen2/Qwen3: whether `sliding_window` applies at all (it does not in released models).
    #[serde(default)]
    use_sliding_window: Option<bool>,
    /// Gemma 3: the MLP's activation (`hidden_act` in other families).
    #[serde(default)]
    hidden_activation: Option<String>,
    /// Gemma 3: scores are `q·k / sqrt(query_pre_attn_scalar)`.
    #[serde(default)]
    query_pre_attn_scalar: Option<f64>,
    /// Gemma 3: `sliding_attention` or `full_attention` per layer.
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    /// Gemma 3 before `layer_types`: every n-th layer is global.
    #[serde(default)]
    sliding_window_pattern: Option<usize>,
    /// Gemma 3 (transformers 4): the RoPE base of the sliding layers.
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    /// Gemma: soft-capping of the final logits (Gemma 2; `null` in Gemma 3).
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    /// Gemma: soft-capping of the attention scores (Gemma 2; `null` in Gemma 3).
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
}

/// Gemma 3's `rope_parameters` (transformers 5): one set per kind of layer.
#[derive(Debug, Deserialize)]
struct GemmaRopeParameters {
    full_attention: HfRopeScaling,
    sliding_attention: HfRopeScaling,
}

/// `rope_scaling` in a `config.json`.
#[derive(Debug, Deserialize)]
struct HfRopeScaling {
    /// In `rope_parameters` only.
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_type: Option<String>,
    /// The older name of `rope_type`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    low_freq_factor: Option<f64>,
    #[serde(default)]
    high_freq_factor: Option<f64>,
    #[serde(default)]
    original_max_position_embeddings: Option<f64>,
}

/// Reads at most `max` bytes of `path`; a longer file is an error naming it.
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::Config(format!(
            "{} is larger than {} MiB; a model configuration is a few KiB, so this is not one",
            path.display(),
            max >> 20
        )));
    }
    Ok(bytes)
}

fn llama() -> String {
    "llama".into()
}
fn rms_norm_eps() -> f64 {
    1e-6
}
/// transformers' default RoPE base for these architectures when a file names none.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
fn max_position_embeddings() -> usize {
    2048
}

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

/// A decoder architecture spice-hf runs: the Llama layout and its relatives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arch {
    /// Llama 2/3, SmolLM, TinyLlama.
    Llama,
    /// The Llama layout with sliding-window attention (GGUF files call it `llama`).
    Mistral,
    /// Qwen2 / Qwen2.5: biases on the query, key and value projections.
    Qwen2,
    /// Qwen3: an RMSNorm over each query and key head before RoPE, no biases, and a head size
    /// of its own.
    Qwen3,
    /// Gemma 3 (text): RMSNorm weights offset by one, scaled embeddings, a GELU-tanh MLP,
    /// norms after attention and MLP too, per-head Q/K norms, local (sliding-window) and global
    /// layers with a RoPE base each, its own query scale.
    Gemma3,
}

impl Arch {
    /// Every architecture, for messages.
    pub const ALL: [Self; 5] = [
        Self::Llama,
        Self::Mistral,
        Self::Qwen2,
        Self::Qwen3,
        Self::Gemma3,
    ];

    /// Its `model_type` in `config.json`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }

    /// From a `config.json` `model_type` or a GGUF `general.architecture` (where Mistral is
    /// `llama`); anything else is refused with the list of what is implemented.
    pub fn from_name(name: &str) -> Result<Self> {
        // Gemma 3's text-only checkpoints (1B, 270M) say `gemma3_text`.
        let name = if name == "gemma3_text" {
            "gemma3"
        } else {
            name
        };
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "architecture {name:?} (spice-hf implements {})",
                    Self::ALL.map(Self::name).join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What Gemma 3 adds to the Llama layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma {
    /// Added to every RMSNorm weight as it is loaded: 1 for Hugging Face files, which store
    /// `w - 1`; 0 for GGUF, where llama.cpp's converter has added it.
    pub norm_offset: f32,
    /// Scores are `q·k / sqrt(query_pre_attn_scalar)` (not the head size).
    pub query_pre_attn_scalar: f64,
    /// Per layer: whether it is local (attends within `sliding_window`, RoPE base
    /// `rope_local_theta`) rather than global.
    pub local_layers: Vec<bool>,
    /// RoPE base of the local layers.
    pub rope_local_theta: f64,
    /// Linear RoPE scaling of the global layers (1 for none; 8 in Gemma 3 4B and larger).
    pub rope_global_factor: f64,
}

/// The shape of a decoder of the Llama family ([`Arch`] says which one).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Which architecture.
    pub arch: Arch,
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
    /// Values per attention head (`hidden / heads` unless the model says otherwise).
    pub head_dim: usize,
    /// Whether the query, key and value projections add a bias (Qwen2).
    pub qkv_bias: bool,
    /// Whether each query and key head is RMS-normed before RoPE (Qwen3).
    pub qk_norm: bool,
    /// How many positions (itself included) a query attends to, when not all (Mistral; Gemma
    /// 3's local layers).
    pub sliding_window: Option<usize>,
    /// Gemma 3's additions (`None` for the others).
    pub gemma: Option<Gemma>,
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
        self.head_dim
    }

    /// Values of the query projection (`heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Values of the key or value projection (`kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether `layer` is one of Gemma 3's local layers (its own RoPE base and the window).
    pub fn is_local(&self, layer: usize) -> bool {
        self.gemma
            .as_ref()
            .is_some_and(|g| g.local_layers.get(layer).copied().unwrap_or(false))
    }

    /// How many positions (itself included) a query of `layer` sees, when not all.
    pub fn window(&self, layer: usize) -> Option<usize> {
        match &self.gemma {
            Some(_) => self.sliding_window.filter(|_| self.is_local(layer)),
            None => self.sliding_window,
        }
    }

    /// What attention scores are multiplied by.
    pub fn attention_scale(&self) -> f64 {
        match &self.gemma {
            Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
            None => 1.0 / (self.head_dim as f64).sqrt(),
        }
    }

    /// Added to RMSNorm weights as they are loaded (Gemma's files store `w - 1`).
    pub fn norm_offset(&self) -> f32 {
        self.gemma.as_ref().map_or(0.0, |g| g.norm_offset)
    }

    /// Reads the metadata of a GGUF whose `general.architecture` is `llama`, `qwen2`, `qwen3`
    /// or `gemma3` (llama.cpp writes Mistral as `llama`). For Gemma 3 it follows llama.cpp:
    /// every sixth layer global unless `gemma3.attention.sliding_window_pattern` says
    /// otherwise, local RoPE base 10,000, the query scale from the head size (from the
    /// hidden size per head for the 62-layer 27B), norms already offset.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let name = g.str("general.architecture")?;
        let arch = match Arch::from_name(name)? {
            Arch::Mistral => {
                return Err(Error::Unsupported(
                    "GGUF architecture \"mistral\" (llama.cpp writes Mistral models as \"llama\")"
                        .into(),
                ));
            }
            a => a,
        };
        let k = |s: &str| format!("{name}.{s}");
        let heads = g.u64(&k("attention.head_count"))? as usize;
        let hidden = g.u64(&k("embedding_length"))? as usize;
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
        let sliding_window = g
            .get(&k("attention.sliding_window"))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        // A `llama` file with a sliding window is a Mistral.
        let arch = match (arch, sliding_window) {
            (Arch::Llama, Some(_)) => Arch::Mistral,
            (a, _) => a,
        };
        let head_dim = match g.get(&k("attention.key_length")).and_then(|v| v.as_u64()) {
            Some(d) => d as usize,
            None => hidden / heads.max(1),
        };
        let layers = g.u64(&k("block_count"))? as usize;
        let gemma = (arch == Arch::Gemma3).then(|| {
            let period = g
                .get(&k("attention.sliding_window_pattern"))
                .and_then(|v| v.as_u64())
                .unwrap_or(6)
                .max(1) as usize;
            Gemma {
                norm_offset: 0.0,
                query_pre_attn_scalar: if layers == 62 {
                    (hidden / heads.max(1)) as f64
                } else {
                    head_dim as f64
                },
                local_layers: (0..layers.min(MAX_LAYERS))
                    .map(|l| (l + 1) % period != 0)
                    .collect(),
                rope_local_theta: 10_000.0,
                rope_global_factor: g
                    .get(&k("rope.scaling.factor"))
                    .and_then(|v| v.as_f64())
                    .filter(|f| *f > 0.0)
                    .unwrap_or(1.0),
            }
        });
        Ok(Self {
            arch,
            gemma,
            hidden,
            intermediate: g.u64(&k("feed_forward_length"))? as usize,
            layers,
            heads,
            kv_heads: g
                .get(&k("attention.head_count_kv"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim,
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: g.tensor("blk.0.attn_q_norm.weight").is_some(),
            sliding_window,
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

    /// Reads a Hugging Face `config.json` whose `model_type` is `llama`, `mistral`, `qwen2`,
    /// `qwen3` or `gemma3_text`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let bytes = read_capped(path, MAX_CONFIG_BYTES)?;
        let mut c: HfConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let arch = Arch::from_name(&c.model_type)?;
        // Options of these architectures the engines do not implement: refused, never ignored.
        if c.attention_bias == Some(true) && arch != Arch::Qwen2 {
            return Err(Error::Unsupported(format!(
                "attention_bias: true on {arch} (biases on every attention projection)"
            )));
        }
        if c.use_sliding_window == Some(true) && matches!(arch, Arch::Qwen2 | Arch::Qwen3) {
            return Err(Error::Unsupported(format!(
                "use_sliding_window: true on {arch} (per-layer sliding windows)"
            )));
        }
        let gemma = arch == Arch::Gemma3;
        let (act, expected) = if gemma {
            (c.hidden_activation.as_deref(), "gelu_pytorch_tanh")
        } else {
            (c.hidden_act.as_deref(), "silu")
        };
        if let Some(act) = act.filter(|a| *a != expected) {
            return Err(Error::Unsupported(format!(
                "hidden_act {act:?} on {arch} (its MLP is {expected})"
            )));
        }
        if let Some(cap) = c.final_logit_softcapping.or(c.attn_logit_softcapping) {
            return Err(Error::Unsupported(format!(
                "logit soft-capping ({cap}) on {arch}"
            )));
        }
        // Gemma 3 under transformers 5: `rope_parameters` per kind of layer.
        let (rope_parameters, gemma_rope) = match c.rope_parameters.take() {
            Some(v) if gemma && v.get("full_attention").is_some() => {
                let per: GemmaRopeParameters = serde_json::from_value(v).map_err(|e| {
                    Error::Config(format!("{}: rope_parameters: {e}", path.display()))
                })?;
                (Some(per.full_attention), Some(per.sliding_attention))
            }
            Some(v) => (
                Some(serde_json::from_value::<HfRopeScaling>(v).map_err(|e| {
                    Error::Config(format!("{}: rope_parameters: {e}", path.display()))
                })?),
                None,
            ),
            None => (None, None),
        };
        let rope_theta = c
            .rope_theta
            .or(rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(DEFAULT_ROPE_THETA);
        // `rope_parameters` of type "default" carries only the base.
        let scaling = c.rope_scaling.take().or(rope_parameters.filter(|p| {
            p.rope_type.as_deref().or(p.kind.as_deref()) != Some("default")
                && (p.rope_type.is_some() || p.kind.is_some())
        }));
        // Gemma 3's global layers: linear scaling (positions divided by the factor).
        let (scaling, rope_global_factor) = match scaling {
            Some(s) if gemma && s.rope_type.as_deref().or(s.kind.as_deref()) == Some("linear") => {
                (None, s.factor.filter(|f| *f > 0.0).unwrap_or(1.0))
            }
            other => (other, 1.0),
        };
        let rope_scaling = match scaling {
            None => None,
            Some(s) if s.rope_type.as_deref() == Some("llama3") => Some(Llama3RopeScaling {
                factor: s.factor.unwrap_or(8.0),
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: s
                    .original_max_position_embeddings
                    .unwrap_or(8192.0),
            }),
            Some(s) => {
                return Err(Error::Unsupported(format!(
                    "rope_scaling of type {:?} (llama3 is supported)",
                    s.rope_type.or(s.kind).unwrap_or_default()
                )));
            }
        };
        Ok(Self {
            arch,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c
                .head_dim
                .unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            sliding_window: if matches!(arch, Arch::Mistral | Arch::Gemma3) {
                c.sliding_window
            } else {
                None
            },
            gemma: if gemma {
                Some(gemma_config(&c, gemma_rope, rope_global_factor)?)
            } else {
                None
            },
            vocab: c.vocab_size,
            rms_eps: c.rms_norm_eps,
            rope_theta,
            max_positions: c.max_position_embeddings,
            tie_embeddings: c.tie_word_embeddings,
            rope_scaling,
            rope_freq_factors: None,
        })
    }

    /// Checks that the shape is coherent (heads divide the hidden size and each other).
    pub fn validate(&self) -> Result<()> {
        let ok = self.heads > 0
            && self.kv_heads > 0
            && self.head_dim > 0
            && self.hidden > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim.is_multiple_of(2)
            && self.heads.checked_mul(self.head_dim).is_some()
            && self.layers > 0
            && self.vocab > 0
            && self.sliding_window != Some(0)
            && self.gemma.as_ref().is_none_or(|g| {
                g.local_layers.len() == self.layers
                    && g.query_pre_attn_scalar > 0.0
                    && g.rope_local_theta > 0.0
            });
        if !ok {
            // The shape only: `rope_freq_factors` can hold 65,536 values from a hostile file.
            return Err(Error::Config(format!(
                "incoherent model shape: hidden {}, intermediate {}, {} layers, {} heads of {}, {} KV heads, vocabulary {}, sliding window {:?}",
                self.hidden,
                self.intermediate,
                self.layers,
                self.heads,
                self.head_dim,
                self.kv_heads,
                self.vocab,
                self.sliding_window
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

/// Most layers a model may declare (the largest released decoders have about 130).
const MAX_LAYERS: usize = 4096;

/// Gemma 3's part of a `config.json`.
fn gemma_config(
    c: &HfConfig,
    local_rope: Option<HfRopeScaling>,
    rope_global_factor: f64,
) -> Result<Gemma> {
    let layers = c.num_hidden_layers.min(MAX_LAYERS);
    let local_layers = match (&c.layer_types, c.sliding_window_pattern) {
        (Some(types), _) => types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(Error::Unsupported(format!(
                    "layer type {other:?} on gemma3 (sliding_attention and full_attention are)"
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        (None, period) => {
            let period = period.unwrap_or(6).max(1);
            (0..layers).map(|l| (l + 1) % period != 0).collect()
        }
    };
    if local_layers.len() != c.num_hidden_layers {
        return Err(Error::Config(format!(
            "layer_types names {} layers; the model has {}",
            local_layers.len(),
            c.num_hidden_layers
        )));
    }
    Ok(Gemma {
        norm_offset: 1.0,
        query_pre_attn_scalar: c
            .query_pre_attn_scalar
            .filter(|q| *q > 0.0)
            .unwrap_or(c.head_dim.unwrap_or(256) as f64),
        local_layers,
        rope_local_theta: local_rope
            .and_then(|p| p.rope_theta)
            .or(c.rope_local_base_freq)
            .unwrap_or(10_000.0),
        rope_global_factor,
    })
}
