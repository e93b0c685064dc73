//! The Llama architecture as a Burn graph (GPU devices, and the f32 reference on the CPU), in
//! parts that each load their tensors and run their step (attention, MLP, block):
//! RMSNorm, rotate-half RoPE, grouped-query attention with a preallocated KV cache (Qwen2's
//! Q/K/V biases, Qwen3's and Gemma 3's per-head Q/K norms, Mistral's sliding window, Gemma 3's
//! local and global layers), SwiGLU MLP (GELU-tanh for Gemma 3, with its output norms and
//! scaled embeddings), tied or separate LM head. It runs on whatever [`Device`] it is given and never builds
//! one itself. The large matrices stay in f32 (the reference) or f16 (GPU devices: half the
//! memory), and every product runs in f32.

use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData, activation};

use crate::config::LlamaConfig;
use crate::tensors::{check_shape, missing};
use crate::weights::HostTensor;
use crate::{Error, Result};

use super::BurnWeights;

/// A Llama model as Burn tensors on one device.
pub(crate) struct BurnLlama {
    cfg: LlamaConfig,
    embed: Tensor<2>,
    blocks: Vec<Block>,
    norm: Tensor<2>,
    lm_head: Tensor<2>,
    rope: Rope,
    /// Gemma 3's local layers' tables.
    rope_local: Option<Rope>,
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

    /// A vector `[n]` (a bias), as `[1, n]` in f32 (small, and added element-wise).
    fn vector(&mut self, name: &str, n: usize) -> Result<Tensor<2>> {
        self.norm(name, n, 0.0)
    }

    /// A norm weight `[n]` plus `offset` (Gemma's files store `w - 1`), as `[1, n]` in f32.
    fn norm(&mut self, name: &str, n: usize, offset: f32) -> Result<Tensor<2>> {
        let mut t = self.take(name, &[n])?;
        if offset != 0.0 {
            t.data.iter_mut().for_each(|v| *v += offset);
        }
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

/// RoPE tables `[positions, head_dim]` (cos and sin of `cat(freqs, freqs)`), of the global
/// layers or of Gemma 3's `local` ones.
fn rope_tables(cfg: &LlamaConfig, positions: usize, local: bool) -> (Vec<f32>, Vec<f32>) {
    let inv = super::inv_freqs(cfg, local);
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

/// `x / rms(x) * w`, per row.
fn rms_norm(x: Tensor<2>, w: &Tensor<2>, eps: f64) -> Tensor<2> {
    let inv = x
        .clone()
        .powf_scalar(2.0)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x.mul(inv).mul(w.clone())
}

/// Rotate-half RoPE tables on the device, `[positions, head_dim]`.
struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    fn new(cfg: &LlamaConfig, positions: usize, local: bool, device: &Device) -> Self {
        let hd = cfg.head_dim();
        let (cos, sin) = rope_tables(cfg, positions, local);
        Self {
            cos: Tensor::<2>::from_data(TensorData::new(cos, [positions, hd]), device),
            sin: Tensor::<2>::from_data(TensorData::new(sin, [positions, hd]), device),
        }
    }

    /// Applies RoPE to `[1, heads, S, hd]` for positions `pos..pos+S`.
    fn apply(&self, x: Tensor<4>, pos: usize) -> Tensor<4> {
        let [_, _, s, hd] = x.dims();
        let table = |t: &Tensor<2>| {
            t.clone()
                .slice([pos..pos + s, 0..hd])
                .reshape([1, 1, s, hd])
        };
        let x1 = x.clone().narrow(3, 0, hd / 2);
        let x2 = x.clone().narrow(3, hd / 2, hd / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x.mul(table(&self.cos)).add(rotated.mul(table(&self.sin)))
    }
}

/// The causal mask of `s` new positions after `pos` cached ones, for the grouped queries (row
/// `r` is query `r % s`): a query sees itself and the positions before it, the last `window`
/// of them when there is one. `None` when nothing is hidden (one position within the window).
fn causal_mask(
    cfg: &LlamaConfig,
    pos: usize,
    s: usize,
    window: Option<usize>,
    device: &Device,
) -> Option<Tensor<4>> {
    let rep = cfg.heads / cfg.kv_heads;
    let t = pos + s;
    let window = window.unwrap_or(usize::MAX);
    (s > 1 || t > window).then(|| {
        let mut m = vec![0f32; rep * s * t];
        for r in 0..rep * s {
            let at = pos + r % s;
            for (j, v) in m[r * t..(r + 1) * t].iter_mut().enumerate() {
                if j > at || at - j >= window {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::<4>::from_data(TensorData::new(m, [1, 1, rep * s, t]), device)
    })
}

/// What every block of one forward pass shares: where the new positions start, their mask,
/// the RoPE tables and the shapes.
struct At<'a> {
    pos: usize,
    mask: Option<&'a Tensor<4>>,
    rope: &'a Rope,
    /// Gemma 3's local layers: their mask (the window) and RoPE tables.
    local: Option<(Option<&'a Tensor<4>>, &'a Rope)>,
    cfg: &'a LlamaConfig,
}

/// Grouped-query self-attention with its KV cache.
struct Attention {
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    wo: Tensor<2>,
    /// Qwen2: biases of the query, key and value projections, each `[1, out]`.
    bias: Option<[Tensor<2>; 3]>,
    /// Qwen3, Gemma 3: RMSNorm weights over each query and key head, each `[1, head_dim]`.
    qk_norm: Option<[Tensor<2>; 2]>,
    /// Gemma 3's local layer.
    local: bool,
}

impl Attention {
    fn load(up: &mut Uploader<'_, '_>, p: &str, l: usize, cfg: &LlamaConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden, cfg.head_dim());
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let bias = if cfg.qkv_bias {
            Some([
                up.vector(&format!("{p}.q_proj.bias"), qd)?,
                up.vector(&format!("{p}.k_proj.bias"), kvd)?,
                up.vector(&format!("{p}.v_proj.bias"), kvd)?,
            ])
        } else {
            None
        };
        let qk_norm = if cfg.qk_norm {
            Some([
                up.norm(&format!("{p}.q_norm.weight"), hd, cfg.norm_offset())?,
                up.norm(&format!("{p}.k_norm.weight"), hd, cfg.norm_offset())?,
            ])
        } else {
            None
        };
        Ok(Self {
            wq: up.linear(&format!("{p}.q_proj.weight"), qd, h)?,
            wk: up.linear(&format!("{p}.k_proj.weight"), kvd, h)?,
            wv: up.linear(&format!("{p}.v_proj.weight"), kvd, h)?,
            wo: up.linear(&format!("{p}.o_proj.weight"), h, qd)?,
            bias,
            qk_norm,
            local: cfg.is_local(l),
        })
    }

    /// Attends the normed `h` `[S, hidden]` over the cache (written with the new keys and
    /// values) and returns the output projection, `[S, hidden]`.
    fn forward(
        &self,
        h: Tensor<2>,
        k_cache: &mut Tensor<4>,
        v_cache: &mut Tensor<4>,
        at: &At<'_>,
    ) -> Tensor<2> {
        let [s, _] = h.dims();
        let (nh, kvh, hd) = (at.cfg.heads, at.cfg.kv_heads, at.cfg.head_dim());
        let (pos, t) = (at.pos, at.pos + s);
        // Projection `i` (query, key, value) as `[1, n, S, hd]`: plus its bias, its heads
        // normed where the model says so.
        let heads = |i: usize, w: &Tensor<2>, n: usize| {
            let mut x = mm(h.clone(), w);
            if let Some(b) = &self.bias {
                x = x.add(b[i].clone());
            }
            if let Some(norm) = self.qk_norm.as_ref().and_then(|n| n.get(i)) {
                x = rms_norm(x.reshape([s * n, hd]), norm, at.cfg.rms_eps);
            }
            x.reshape([s, n, hd]).swap_dims(0, 1).reshape([1, n, s, hd])
        };
        let (mask, rope) = match at.local {
            Some(local) if self.local => local,
            _ => (at.mask, at.rope),
        };
        let q = rope.apply(heads(0, &self.wq, nh), pos);
        let k = rope.apply(heads(1, &self.wk, kvh), pos);
        let v = heads(2, &self.wv, kvh);
        let range = [0..1, 0..kvh, pos..t, 0..hd];
        // Owned, so the cache buffer is written in place rather than copied per token.
        k_cache.inplace(|c| c.slice_assign(range.clone(), k));
        v_cache.inplace(|c| c.slice_assign(range, v));
        let k_all = k_cache.clone().slice([0..1, 0..kvh, 0..t, 0..hd]);
        let v_all = v_cache.clone().slice([0..1, 0..kvh, 0..t, 0..hd]);
        let qg = q.reshape([1, kvh, (nh / kvh) * s, hd]);
        let scale = at.cfg.attention_scale();
        let mut scores = qg.matmul(k_all.swap_dims(2, 3)).mul_scalar(scale);
        if let Some(m) = mask {
            scores = scores.add(m.clone());
        }
        let attn = activation::softmax(scores, 3)
            .matmul(v_all)
            .reshape([nh, s, hd])
            .swap_dims(0, 1)
            .reshape([s, nh * hd]);
        mm(attn, &self.wo)
    }
}

/// The gated MLP: `down(act(gate(h)) * up(h))`, SiLU (SwiGLU) or Gemma's GELU-tanh.
struct Mlp {
    gate: Tensor<2>,
    up: Tensor<2>,
    down: Tensor<2>,
    gelu: bool,
}

impl Mlp {
    fn load(up: &mut Uploader<'_, '_>, p: &str, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden, cfg.intermediate);
        Ok(Self {
            gate: up.linear(&format!("{p}.gate_proj.weight"), i, h)?,
            up: up.linear(&format!("{p}.up_proj.weight"), i, h)?,
            down: up.linear(&format!("{p}.down_proj.weight"), h, i)?,
            gelu: cfg.gemma.is_some(),
        })
    }

    fn forward(&self, h: Tensor<2>) -> Tensor<2> {
        let gate = mm(h.clone(), &self.gate);
        let gate = if self.gelu {
            gelu_tanh(gate)
        } else {
            activation::silu(gate)
        };
        mm(gate.mul(mm(h, &self.up)), &self.down)
    }
}

/// PyTorch's `gelu(approximate="tanh")`: `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
fn gelu_tanh(x: Tensor<2>) -> Tensor<2> {
    let inner = x
        .clone()
        .add(x.clone().powf_scalar(3.0).mul_scalar(0.044_715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul(inner.tanh().add_scalar(1.0)).mul_scalar(0.5)
}

/// One decoder block: pre-norm attention and pre-norm MLP, each added to the residual (Gemma 3
/// norms their outputs too, before the addition).
struct Block {
    attn_norm: Tensor<2>,
    attn: Attention,
    post_attn_norm: Option<Tensor<2>>,
    mlp_norm: Tensor<2>,
    mlp: Mlp,
    post_mlp_norm: Option<Tensor<2>>,
}

impl Block {
    fn load(up: &mut Uploader<'_, '_>, l: usize, cfg: &LlamaConfig) -> Result<Self> {
        let p = format!("model.layers.{l}");
        let offset = cfg.norm_offset();
        let norm = |up: &mut Uploader<'_, '_>, name: &str| {
            up.norm(&format!("{p}.{name}.weight"), cfg.hidden, offset)
        };
        // Gemma's `post_attention_layernorm` norms the attention's output; Llama's is the MLP's
        // input norm.
        let sandwich = cfg.gemma.is_some();
        let attn_norm = norm(up, "input_layernorm")?;
        let attn = Attention::load(up, &format!("{p}.self_attn"), l, cfg)?;
        let post_attn_norm = if sandwich {
            Some(norm(up, "post_attention_layernorm")?)
        } else {
            None
        };
        let mlp_norm = norm(
            up,
            if sandwich {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            },
        )?;
        let mlp = Mlp::load(up, &format!("{p}.mlp"), cfg)?;
        let post_mlp_norm = if sandwich {
            Some(norm(up, "post_feedforward_layernorm")?)
        } else {
            None
        };
        Ok(Self {
            attn_norm,
            attn,
            post_attn_norm,
            mlp_norm,
            mlp,
            post_mlp_norm,
        })
    }

    fn forward(
        &self,
        x: Tensor<2>,
        k_cache: &mut Tensor<4>,
        v_cache: &mut Tensor<4>,
        at: &At<'_>,
    ) -> Tensor<2> {
        let eps = at.cfg.rms_eps;
        let out = |y: Tensor<2>, norm: &Option<Tensor<2>>| match norm {
            Some(w) => rms_norm(y, w, eps),
            None => y,
        };
        let h = rms_norm(x.clone(), &self.attn_norm, eps);
        let x = x.add(out(
            self.attn.forward(h, k_cache, v_cache, at),
            &self.post_attn_norm,
        ));
        let h = rms_norm(x.clone(), &self.mlp_norm, eps);
        x.add(out(self.mlp.forward(h), &self.post_mlp_norm))
    }
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
        let (h, v) = (cfg.hidden, cfg.vocab);
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
        let blocks = (0..cfg.layers)
            .map(|l| Block::load(&mut up, l, &cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = up.norm("model.norm.weight", h, cfg.norm_offset())?;
        let positions = max_context.clamp(1, cfg.max_positions.max(1));
        let rope = Rope::new(&cfg, positions, false, device);
        let rope_local = cfg
            .gemma
            .is_some()
            .then(|| Rope::new(&cfg, positions, true, device));
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            rope_local,
            device: device.clone(),
        })
    }

    /// Longest context this instance was built for.
    pub(crate) fn max_context(&self) -> usize {
        self.rope.cos.dims()[0]
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

    /// Runs `ids` (the next positions after the cache) and returns the logits of every
    /// position, `[S, vocab]` (tests), or of the last one only.
    fn run(&self, ids: &[u32], cache: &mut BurnCache, all_positions: bool) -> Result<Tensor<2>> {
        let s = ids.len();
        let pos = cache.len;
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [s]),
            &self.device,
        );
        let mut x = self.embed.clone().select(0, idx).cast(FloatDType::F32);
        if self.cfg.gemma.is_some() {
            x = x.mul_scalar((self.cfg.hidden as f64).sqrt());
        }
        // Gemma 3: global layers see everything, local ones the window; the others have one
        // kind of layer, whose window (if any) is the model's.
        let (global_window, local_window) = match &self.cfg.gemma {
            Some(_) => (None, self.cfg.sliding_window),
            None => (self.cfg.sliding_window, None),
        };
        let mask = causal_mask(&self.cfg, pos, s, global_window, &self.device);
        let mask_local = self
            .rope_local
            .as_ref()
            .and_then(|_| causal_mask(&self.cfg, pos, s, local_window, &self.device));
        let at = At {
            pos,
            mask: mask.as_ref(),
            rope: &self.rope,
            local: self
                .rope_local
                .as_ref()
                .map(|rope| (mask_local.as_ref(), rope)),
            cfg: &self.cfg,
        };
        for (block, (k, v)) in self.blocks.iter().zip(cache.k.iter_mut().zip(&mut cache.v)) {
            x = block.forward(x, k, v, &at);
        }
        cache.len = pos + s;
        let x = rms_norm(x, &self.norm, self.cfg.rms_eps);
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
