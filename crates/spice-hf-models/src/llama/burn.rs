//! The Llama architecture as a Burn graph (GPU devices, and the f32 reference on the CPU):
//! RMSNorm, rotate-half RoPE, grouped-query attention with a preallocated KV cache, SwiGLU
//! MLP, tied or separate LM head. It runs on whatever [`Device`] it is given and never builds
//! one itself. The large matrices stay in f32 (the reference) or f16 (GPU devices: half the
//! memory), and every product runs in f32.

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData, activation};

use crate::config::LlamaConfig;
use crate::tensors::{check_shape, missing};
use crate::weights::HostTensor;
use crate::{Error, Result};

use super::BurnWeights;

struct Layer {
    attn_norm: Tensor<2>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    wo: Tensor<2>,
    mlp_norm: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
}

/// A Llama model as Burn tensors on one device.
pub(crate) struct BurnLlama {
    cfg: LlamaConfig,
    embed: Tensor<2>,
    layers: Vec<Layer>,
    norm: Tensor<2>,
    lm_head: Tensor<2>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    device: Device,
}

/// Keys and values of past positions, per layer, preallocated for the whole context.
pub(crate) struct BurnCache {
    k: Vec<Tensor<4>>,
    v: Vec<Tensor<4>>,
    len: usize,
}

/// Host tensors by Hugging Face name, handed over one at a time (so a model on a GPU never
/// has more than one tensor decoded to f32 on the host at once); `None` when missing.
pub(crate) type Source<'a> = dyn FnMut(&str) -> Option<HostTensor> + 'a;

/// Uploads host tensors to one device, the large matrices in the chosen dtype.
struct Uploader<'a, 's> {
    source: &'a mut Source<'s>,
    device: &'a Device,
    matrices: BurnWeights,
}

impl Uploader<'_, '_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = (self.source)(name).ok_or_else(|| missing(name))?;
        check_shape(name, &t.shape, shape)?;
        Ok(t)
    }

    /// A norm weight `[n]`, as `[1, n]` in f32 (small, and multiplied element-wise).
    fn vector(&mut self, name: &str, n: usize) -> Result<Tensor<2>> {
        let t = self.take(name, &[n])?;
        Ok(Tensor::<2>::from_data(
            TensorData::new(t.data, [1, n]),
            self.device,
        ))
    }

    /// A matrix in the chosen dtype.
    fn matrix(&self, data: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
        match self.matrices {
            BurnWeights::F32 => Tensor::<2>::from_data(TensorData::new(data, shape), self.device),
            BurnWeights::F16 => {
                let half: Vec<half::f16> = data.into_iter().map(half::f16::from_f32).collect();
                Tensor::<2>::from_data(TensorData::new(half, shape), (self.device, DType::F16))
            }
        }
    }

    /// A linear weight `[out, in]` uploaded transposed as `[in, out]` so `x.matmul(w)` needs
    /// no transpose per call.
    fn linear(&mut self, name: &str, out: usize, inp: usize) -> Result<Tensor<2>> {
        let t = self.take(name, &[out, inp])?;
        Ok(self.matrix(transpose(&t.data, out, inp), [inp, out]))
    }
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut tr = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            tr[c * rows + r] = data[r * cols + c];
        }
    }
    tr
}

/// `x · w` in f32: a matrix kept in f16 is widened as it is used (a no-op for f32).
fn mm(x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
    x.matmul(w.clone().cast(FloatDType::F32))
}

/// RoPE tables `[positions, head_dim]` (cos and sin of `cat(freqs, freqs)`).
fn rope_tables(cfg: &LlamaConfig, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = super::inv_freqs(cfg);
    let hd = cfg.head_dim();
    let mut cos = Vec::with_capacity(positions * hd);
    let mut sin = Vec::with_capacity(positions * hd);
    for p in 0..positions {
        // The table covers both halves: cat(freqs, freqs).
        for _ in 0..2 {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }
    (cos, sin)
}

impl BurnLlama {
    /// Builds the model on `device` from host tensors taken from `source` one at a time, its
    /// matrices (linear weights, embedding, LM head) kept as `matrices`. `max_context` bounds
    /// the RoPE tables and caches (at most the model's own limit).
    pub(crate) fn new(
        cfg: LlamaConfig,
        source: &mut Source<'_>,
        max_context: usize,
        device: &Device,
        matrices: BurnWeights,
    ) -> Result<Self> {
        cfg.validate()?;
        let (h, i, v) = (cfg.hidden, cfg.intermediate, cfg.vocab);
        let hd = cfg.head_dim();
        let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
        let mut up = Uploader {
            source,
            device,
            matrices,
        };
        let embed_host = up.take("model.embed_tokens.weight", &[v, h])?;
        let lm_head = if cfg.tie_embeddings {
            up.matrix(transpose(&embed_host.data, v, h), [h, v])
        } else {
            up.linear("lm_head.weight", v, h)?
        };
        let embed = up.matrix(embed_host.data, [v, h]);
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                attn_norm: up.vector(&format!("{p}.input_layernorm.weight"), h)?,
                wq: up.linear(&format!("{p}.self_attn.q_proj.weight"), qd, h)?,
                wk: up.linear(&format!("{p}.self_attn.k_proj.weight"), kvd, h)?,
                wv: up.linear(&format!("{p}.self_attn.v_proj.weight"), kvd, h)?,
                wo: up.linear(&format!("{p}.self_attn.o_proj.weight"), h, qd)?,
                mlp_norm: up.vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
                w_gate: up.linear(&format!("{p}.mlp.gate_proj.weight"), i, h)?,
                w_up: up.linear(&format!("{p}.mlp.up_proj.weight"), i, h)?,
                w_down: up.linear(&format!("{p}.mlp.down_proj.weight"), h, i)?,
            });
        }
        let norm = up.vector("model.norm.weight", h)?;
        let positions = max_context.clamp(1, cfg.max_positions.max(1));
        let (cos, sin) = rope_tables(&cfg, positions);
        let cos = Tensor::<2>::from_data(TensorData::new(cos, [positions, hd]), device);
        let sin = Tensor::<2>::from_data(TensorData::new(sin, [positions, hd]), device);
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Longest context this instance was built for.
    pub(crate) fn max_context(&self) -> usize {
        self.cos.dims()[0]
    }

    /// An empty cache for the whole context.
    pub(crate) fn new_cache(&self) -> BurnCache {
        let shape = [
            1,
            self.cfg.kv_heads,
            self.max_context(),
            self.cfg.head_dim(),
        ];
        let zeros = || {
            (0..self.cfg.layers)
                .map(|_| Tensor::<4>::zeros(shape, &self.device))
                .collect()
        };
        BurnCache {
            k: zeros(),
            v: zeros(),
            len: 0,
        }
    }

    fn rms_norm(&self, x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
        let inv = x
            .clone()
            .powf_scalar(2.0)
            .mean_dim(1)
            .add_scalar(self.cfg.rms_eps)
            .sqrt()
            .recip();
        x.mul(inv).mul(w.clone())
    }

    /// Applies rotate-half RoPE to `[1, heads, S, hd]` for positions `pos..pos+S`.
    fn rope(&self, x: Tensor<4>, pos: usize) -> Tensor<4> {
        let [_, _, s, hd] = x.dims();
        let cos = self
            .cos
            .clone()
            .slice([pos..pos + s, 0..hd])
            .reshape([1, 1, s, hd]);
        let sin = self
            .sin
            .clone()
            .slice([pos..pos + s, 0..hd])
            .reshape([1, 1, s, hd]);
        let x1 = x.clone().narrow(3, 0, hd / 2);
        let x2 = x.clone().narrow(3, hd / 2, hd / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x.mul(cos).add(rotated.mul(sin))
    }

    /// Runs `ids` (the next positions after the cache) and returns the logits of every
    /// position, `[S, vocab]` (tests), or of the last one only.
    fn run(&self, ids: &[u32], cache: &mut BurnCache, all_positions: bool) -> Result<Tensor<2>> {
        let s = ids.len();
        let pos = cache.len;
        let (nh, kvh, hd) = (self.cfg.heads, self.cfg.kv_heads, self.cfg.head_dim());
        let rep = nh / kvh;
        let t = pos + s;
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [s]),
            &self.device,
        );
        let mut x = self.embed.clone().select(0, idx).cast(FloatDType::F32);
        // Causal mask for the grouped queries (row r is query r % S).
        let mask = (s > 1).then(|| {
            let mut m = vec![0f32; rep * s * t];
            for r in 0..rep * s {
                for j in pos + r % s + 1..t {
                    m[r * t + j] = f32::NEG_INFINITY;
                }
            }
            Tensor::<4>::from_data(TensorData::new(m, [1, 1, rep * s, t]), &self.device)
        });
        let scale = 1.0 / (hd as f64).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &layer.attn_norm);
            let heads = |w: &Tensor<2>, n: usize| {
                mm(h.clone(), w)
                    .reshape([s, n, hd])
                    .swap_dims(0, 1)
                    .reshape([1, n, s, hd])
            };
            let q = self.rope(heads(&layer.wq, nh), pos);
            let k = self.rope(heads(&layer.wk, kvh), pos);
            let v = heads(&layer.wv, kvh);
            let range = [0..1, 0..kvh, pos..t, 0..hd];
            // Owned, so the cache buffer is written in place rather than copied per token.
            cache.k[l].inplace(|c| c.slice_assign(range.clone(), k));
            cache.v[l].inplace(|c| c.slice_assign(range, v));
            let k_all = cache.k[l].clone().slice([0..1, 0..kvh, 0..t, 0..hd]);
            let v_all = cache.v[l].clone().slice([0..1, 0..kvh, 0..t, 0..hd]);
            let qg = q.reshape([1, kvh, rep * s, hd]);
            let mut scores = qg.matmul(k_all.swap_dims(2, 3)).mul_scalar(scale);
            if let Some(m) = &mask {
                scores = scores.add(m.clone());
            }
            let attn = activation::softmax(scores, 3).matmul(v_all);
            let attn = attn
                .reshape([nh, s, hd])
                .swap_dims(0, 1)
                .reshape([s, nh * hd]);
            x = x.add(mm(attn, &layer.wo));
            let h2 = self.rms_norm(x.clone(), &layer.mlp_norm);
            let gate = activation::silu(mm(h2.clone(), &layer.w_gate));
            let up = mm(h2, &layer.w_up);
            x = x.add(mm(gate.mul(up), &layer.w_down));
        }
        cache.len = t;
        let x = self.rms_norm(x, &self.norm);
        let x = if all_positions {
            x
        } else {
            x.slice([s - 1..s, 0..self.cfg.hidden])
        };
        Ok(mm(x, &self.lm_head))
    }

    /// Runs `ids` after what the cache holds; returns the logits of the last position.
    pub(crate) fn forward(&self, ids: &[u32], cache: &mut BurnCache) -> Result<Vec<f32>> {
        let logits = self.run(ids, cache, false)?;
        logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Unsupported(format!("reading logits: {e:?}")))
    }

    /// Runs `ids` and returns the logits of every position, row-major `[S, vocab]`.
    pub(crate) fn forward_all(&self, ids: &[u32], cache: &mut BurnCache) -> Result<Vec<f32>> {
        let logits = self.run(ids, cache, true)?;
        logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Unsupported(format!("reading logits: {e:?}")))
    }
}
