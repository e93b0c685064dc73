//! BERT-family sentence encoders (BERT and the sentence-transformers models built on it:
//! MiniLM, BGE, E5, GTE) as a Burn graph on whatever device it is given: safetensors weights,
//! a batch of token-id sequences padded and masked into one forward pass, then the pooling the
//! repository declares (`1_Pooling/config.json`: mean, CLS, max or last token) and the
//! `Normalize` module when `modules.json` lists it. Nothing is assumed: a repository that does
//! not say how to pool is refused, as is one that ships only `pytorch_model.bin`.

use std::path::Path;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData, activation};
use serde::Deserialize;

use crate::tensors::{TensorSet, check_shape, missing};
use crate::{Error, Result};

/// The fields of a BERT `config.json` we read.
#[derive(Debug, Deserialize)]
struct HfBertConfig {
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn two() -> usize {
    2
}
fn layer_norm_eps() -> f64 {
    1e-12
}

/// The shape of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Hidden size (the embedding's dimensions before pooling).
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP size.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest input, in tokens (position embeddings).
    pub max_positions: usize,
    /// Token types (segments).
    pub type_vocab: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl BertConfig {
    /// Reads a `config.json` whose `model_type` is `bert`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        let bytes = crate::config::read_capped(path, crate::config::MAX_CONFIG_BYTES)?;
        let c: HfBertConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if c.model_type != "bert" {
            return Err(Error::Unsupported(format!(
                "embedding model_type {:?} (spice-hf implements bert)",
                c.model_type
            )));
        }
        if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Err(Error::Unsupported(format!(
                "hidden_act {act:?} on bert (gelu is)"
            )));
        }
        if let Some(p) = c
            .position_embedding_type
            .as_deref()
            .filter(|p| *p != "absolute")
        {
            return Err(Error::Unsupported(format!(
                "position_embedding_type {p:?} on bert (absolute is)"
            )));
        }
        let cfg = Self {
            hidden: c.hidden_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
            max_positions: c.max_position_embeddings,
            type_vocab: c.type_vocab_size,
            eps: c.layer_norm_eps,
        };
        let ok = cfg.heads > 0
            && cfg.hidden > 0
            && cfg.hidden.is_multiple_of(cfg.heads)
            && cfg.layers > 0
            && cfg.layers <= 1024
            && cfg.vocab > 0
            && cfg.max_positions > 0
            && cfg.type_vocab > 0;
        if !ok {
            return Err(Error::Config(format!(
                "incoherent encoder shape: hidden {}, {} layers, {} heads, vocabulary {}, {} positions",
                cfg.hidden, cfg.layers, cfg.heads, cfg.vocab, cfg.max_positions
            )));
        }
        Ok(cfg)
    }
}

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// The mean of the tokens' vectors (padding excluded).
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
    /// The last token's vector.
    LastToken,
}

impl Pooling {
    /// `mean`, `cls`, `max` or `last_token`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
            Self::LastToken => "last_token",
        }
    }
}

/// What a sentence-transformers repository says of its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceSpec {
    /// The pooling.
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length (`Normalize` in `modules.json`).
    pub normalize: bool,
    /// Longest input in tokens (`sentence_bert_config.json`'s `max_seq_length`, else the
    /// model's positions).
    pub max_tokens: usize,
}

#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Debug, Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = crate::config::read_capped(path, crate::config::MAX_CONFIG_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

impl SentenceSpec {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`
    /// in `dir`. Exactly one pooling mode must be set; one we do not implement is refused.
    pub fn from_dir(dir: &Path, cfg: &BertConfig) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Err(Error::Config(format!(
                "{} has no modules.json: spice-hf serves sentence-transformers repositories, which say how token vectors are pooled",
                dir.display()
            )));
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind == "sentence_transformers.models.Pooling")
            .map(|m| m.path.clone())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} lists no sentence_transformers.models.Pooling module",
                    modules_path.display()
                ))
            })?;
        for m in &modules {
            let known = matches!(
                m.kind.as_str(),
                "sentence_transformers.models.Transformer"
                    | "sentence_transformers.models.Pooling"
                    | "sentence_transformers.models.Normalize"
            );
            if !known {
                return Err(Error::Unsupported(format!(
                    "sentence-transformers module {} (Transformer, Pooling and Normalize are)",
                    m.kind
                )));
            }
        }
        if pooling_dir.contains("..") || Path::new(&pooling_dir).is_absolute() {
            return Err(Error::Config(format!(
                "{}: the pooling module's path {pooling_dir:?} leaves the repository",
                modules_path.display()
            )));
        }
        let p: PoolingConfig = read_json(&dir.join(&pooling_dir).join("config.json"))?;
        let modes = [
            (p.pooling_mode_mean_tokens, Some(Pooling::Mean)),
            (p.pooling_mode_cls_token, Some(Pooling::Cls)),
            (p.pooling_mode_max_tokens, Some(Pooling::Max)),
            (p.pooling_mode_lasttoken, Some(Pooling::LastToken)),
            (p.pooling_mode_mean_sqrt_len_tokens, None),
            (p.pooling_mode_weightedmean_tokens, None),
        ];
        let set: Vec<_> = modes.iter().filter(|(on, _)| *on).collect();
        let pooling = match set.as_slice() {
            [(_, Some(p))] => *p,
            [(_, None)] => {
                return Err(Error::Unsupported(
                    "pooling mode mean_sqrt_len or weightedmean (mean, cls, max and lasttoken are)"
                        .into(),
                ));
            }
            _ => {
                return Err(Error::Config(format!(
                    "{pooling_dir}/config.json sets {} pooling modes; one is expected",
                    set.len()
                )));
            }
        };
        #[derive(Deserialize)]
        struct SentenceBert {
            max_seq_length: Option<usize>,
        }
        let bert_config = dir.join("sentence_bert_config.json");
        let max_tokens = if bert_config.exists() {
            read_json::<SentenceBert>(&bert_config)?.max_seq_length
        } else {
            None
        }
        .unwrap_or(cfg.max_positions)
        .min(cfg.max_positions);
        Ok(Self {
            pooling,
            normalize: modules
                .iter()
                .any(|m| m.kind == "sentence_transformers.models.Normalize"),
            max_tokens,
        })
    }
}

/// `x · wᵀ + b` of a linear weight uploaded as `[in, out]`.
struct Linear {
    w: Tensor<2>,
    b: Tensor<2>,
}

impl Linear {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.w.clone()).add(self.b.clone())
    }
}

/// LayerNorm weight and bias, `[1, n]` each.
struct LayerNorm {
    w: Tensor<2>,
    b: Tensor<2>,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mean = x.clone().mean_dim(1);
        let centered = x.sub(mean);
        let var = centered.clone().powf_scalar(2.0).mean_dim(1);
        centered
            .div(var.add_scalar(self.eps).sqrt())
            .mul(self.w.clone())
            .add(self.b.clone())
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// A loaded BERT sentence encoder.
pub struct Bert {
    cfg: BertConfig,
    spec: SentenceSpec,
    word: Tensor<2>,
    position: Tensor<2>,
    token_type: Tensor<2>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("cfg", &self.cfg)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Reads weights by name, with or without the `bert.` prefix some repositories keep.
struct Reader<'a> {
    t: &'a TensorSet,
    prefix: &'static str,
    device: &'a Device,
}

impl Reader<'_> {
    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self.t.get(&full).ok_or_else(|| missing(&full))?;
        check_shape(&full, &t.shape, shape)?;
        Ok(t.to_f32())
    }

    fn vector(&self, name: &str, n: usize) -> Result<Tensor<2>> {
        Ok(Tensor::<2>::from_data(
            TensorData::new(self.values(name, &[n])?, [1, n]),
            self.device,
        ))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor<2>> {
        Ok(Tensor::<2>::from_data(
            TensorData::new(self.values(name, &[rows, cols])?, [rows, cols]),
            self.device,
        ))
    }

    fn linear(&self, p: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = self.values(&format!("{p}.weight"), &[out, inp])?;
        let mut tr = vec![0f32; w.len()];
        for r in 0..out {
            for c in 0..inp {
                tr[c * out + r] = w[r * inp + c];
            }
        }
        Ok(Linear {
            w: Tensor::<2>::from_data(TensorData::new(tr, [inp, out]), self.device),
            b: self.vector(&format!("{p}.bias"), out)?,
        })
    }

    fn norm(&self, p: &str, n: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.vector(&format!("{p}.weight"), n)?,
            b: self.vector(&format!("{p}.bias"), n)?,
            eps,
        })
    }
}

/// Most sequences one call embeds.
pub const MAX_BATCH: usize = 2048;

/// Most attention scores (batch x heads x positions²) one forward pass holds: 2^25 f32
/// values, 128 MiB.
pub const MAX_SCORES: usize = 1 << 25;

impl Bert {
    /// Loads a sentence-transformers repository from `dir` (`config.json`, safetensors
    /// weights, `modules.json` and its pooling config) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = BertConfig::from_hf_config(&dir.join("config.json"))?;
        let spec = SentenceSpec::from_dir(dir, &cfg)?;
        let has_safetensors = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
        if !has_safetensors {
            let pickle = dir.join("pytorch_model.bin").exists();
            return Err(Error::Unsupported(format!(
                "{} has no model.safetensors{}: spice-hf reads safetensors weights only (convert with `safetensors`' convert script, or pick a repository that ships them)",
                dir.display(),
                if pickle {
                    ", only pytorch_model.bin (a pickle, which can run code when loaded)"
                } else {
                    ""
                }
            )));
        }
        let t = TensorSet::from_safetensors_dir(dir)?;
        let prefix = if t.get("embeddings.word_embeddings.weight").is_some() {
            ""
        } else {
            "bert."
        };
        let r = Reader {
            t: &t,
            prefix,
            device,
        };
        let (h, i) = (cfg.hidden, cfg.intermediate);
        let layers = (0..cfg.layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    q: r.linear(&format!("{p}.attention.self.query"), h, h)?,
                    k: r.linear(&format!("{p}.attention.self.key"), h, h)?,
                    v: r.linear(&format!("{p}.attention.self.value"), h, h)?,
                    attn_out: r.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attn_norm: r.norm(&format!("{p}.attention.output.LayerNorm"), h, cfg.eps)?,
                    up: r.linear(&format!("{p}.intermediate.dense"), i, h)?,
                    down: r.linear(&format!("{p}.output.dense"), h, i)?,
                    out_norm: r.norm(&format!("{p}.output.LayerNorm"), h, cfg.eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: r.matrix("embeddings.word_embeddings.weight", cfg.vocab, h)?,
            position: r.matrix(
                "embeddings.position_embeddings.weight",
                cfg.max_positions,
                h,
            )?,
            token_type: r.matrix("embeddings.token_type_embeddings.weight", cfg.type_vocab, h)?,
            embed_norm: r.norm("embeddings.LayerNorm", h, cfg.eps)?,
            layers,
            cfg,
            spec,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The pipeline the repository declares.
    pub fn spec(&self) -> &SentenceSpec {
        &self.spec
    }

    /// Dimensions of a sentence vector.
    pub fn dimensions(&self) -> usize {
        self.cfg.hidden
    }

    /// The sentence vectors of `batch` (token ids with the tokenizer's `[CLS]`/`[SEP]`), in
    /// one forward pass (sequences padded to the longest, padding masked out of attention and
    /// pooling) as long as its attention scores stay within [`MAX_SCORES`] values; a larger
    /// batch runs in as few passes as keep each one within it (2,048 inputs of 256 tokens
    /// would otherwise ask for 6 GiB of scores at once).
    pub fn embed(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.len() > MAX_BATCH {
            return Err(Error::Config(format!(
                "{} inputs in one batch; at most {MAX_BATCH}",
                batch.len()
            )));
        }
        let s = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let per_input = self.cfg.heads.saturating_mul(s).saturating_mul(s).max(1);
        let chunk = (MAX_SCORES / per_input).max(1);
        let mut out = Vec::with_capacity(batch.len());
        for part in batch.chunks(chunk) {
            out.extend(self.embed_pass(part)?);
        }
        Ok(out)
    }

    /// One forward pass over `batch`.
    fn embed_pass(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let b = batch.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        if b > MAX_BATCH {
            return Err(Error::Config(format!(
                "{b} inputs in one batch; at most {MAX_BATCH}"
            )));
        }
        let s = batch.iter().map(Vec::len).max().unwrap_or(0);
        if let Some(empty) = batch.iter().position(Vec::is_empty) {
            return Err(Error::Config(format!("input {empty} has no tokens")));
        }
        if s > self.spec.max_tokens {
            return Err(Error::ContextFull {
                needed: s,
                capacity: self.spec.max_tokens,
            });
        }
        if let Some(&id) = batch
            .iter()
            .flatten()
            .find(|&&t| t as usize >= self.cfg.vocab)
        {
            return Err(Error::TokenOutOfVocabulary {
                id,
                vocab: self.cfg.vocab,
            });
        }
        let (h, nh) = (self.cfg.hidden, self.cfg.heads);
        let hd = h / nh;
        let mut ids = vec![0i64; b * s];
        let mut mask = vec![0f32; b * s];
        for (r, seq) in batch.iter().enumerate() {
            for (c, &t) in seq.iter().enumerate() {
                ids[r * s + c] = i64::from(t);
                mask[r * s + c] = 1.0;
            }
        }
        let dev = &self.device;
        let idx = Tensor::<1, Int>::from_data(TensorData::new(ids, [b * s]), dev);
        let positions = self.position.clone().slice([0..s, 0..h]).repeat_dim(0, b);
        let types = self.token_type.clone().slice([0..1, 0..h]);
        let x = self.word.clone().select(0, idx).add(positions).add(types);
        let mut x = self.embed_norm.forward(x);
        let keep = Tensor::<2>::from_data(TensorData::new(mask.clone(), [b, s]), dev);
        // 0 where a key is a token, a large negative where it is padding (`[B, 1, 1, S]`).
        let bias = keep
            .clone()
            .sub_scalar(1.0)
            .mul_scalar(1e30)
            .reshape([b, 1, 1, s]);
        let heads = |t: Tensor<2>| t.reshape([b, s, nh, hd]).swap_dims(1, 2);
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let q = heads(l.q.forward(x.clone()));
            let k = heads(l.k.forward(x.clone()));
            let v = heads(l.v.forward(x.clone()));
            let scores = q
                .matmul(k.swap_dims(2, 3))
                .mul_scalar(scale)
                .add(bias.clone());
            let ctx = activation::softmax(scores, 3)
                .matmul(v)
                .swap_dims(1, 2)
                .reshape([b * s, h]);
            x = l.attn_norm.forward(l.attn_out.forward(ctx).add(x));
            let up = activation::gelu(l.up.forward(x.clone()));
            x = l.out_norm.forward(l.down.forward(up).add(x));
        }
        let x = x.reshape([b, s, h]);
        let pooled: Tensor<2> = match self.spec.pooling {
            Pooling::Mean => {
                let m = keep.clone().reshape([b, s, 1]);
                let sum = x.mul(m.clone()).sum_dim(1).reshape([b, h]);
                sum.div(m.sum_dim(1).reshape([b, 1]))
            }
            Pooling::Cls => x.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            Pooling::Max => {
                let pad = Tensor::<2>::from_data(TensorData::new(mask, [b, s]), dev)
                    .equal_elem(0.0)
                    .reshape([b, s, 1])
                    .repeat_dim(2, h);
                let pad: Tensor<3, Bool> = pad;
                x.mask_fill(pad, f32::MIN).max_dim(1).reshape([b, h])
            }
            Pooling::LastToken => {
                let rows: Vec<Tensor<2>> = batch
                    .iter()
                    .enumerate()
                    .map(|(r, seq)| {
                        let last = seq.len() - 1;
                        x.clone()
                            .slice([r..r + 1, last..last + 1, 0..h])
                            .reshape([1, h])
                    })
                    .collect();
                Tensor::cat(rows, 0)
            }
        };
        let pooled = if self.spec.normalize {
            let norm = pooled
                .clone()
                .powf_scalar(2.0)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            pooled.div(norm)
        } else {
            pooled
        };
        let values = pooled
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Unsupported(format!("reading embeddings: {e:?}")))?;
        Ok(values.chunks_exact(h).map(<[f32]>::to_vec).collect())
    }
}
