//! The Llama family on the CPU with its weights left as the file stores them: every linear is
//! a [`QMatrix`] over the memory mapping, multiplied by `spice-hf-kernels` on one thread pool;
//! activations are f32; the KV cache is f16 and grows with the sequence. The relatives differ
//! in the attention (Qwen2's Q/K/V biases, Qwen3's and Gemma 3's per-head Q/K norms, Mistral's
//! sliding window, Gemma 3's local and global layers with a RoPE base each) and, for Gemma 3,
//! in the block (norms after attention and MLP, a GELU-tanh MLP, scaled embeddings).
//!
//! One struct per part of the network, each with `load` (from a [`TensorSet`] and a name
//! prefix) and `forward`.

use std::sync::Arc;

use half::f16;
use spice_hf_kernels::attention::{self, Group, Kv};
use spice_hf_kernels::matrix::{Pool, QMatrix};
use spice_hf_kernels::ops::{self, RopeLayout};
use spice_hf_kernels::q8::Q8Acts;

use super::{Activations, CpuOptions, KvDtype};
use crate::config::LlamaConfig;
use crate::tensors::TensorSet;
use crate::{Error, Result};

fn kernel_err(what: &str) -> impl Fn(spice_hf_kernels::Error) -> Error + '_ {
    move |e| Error::Config(format!("{what}: {e}"))
}

/// `y = x Wᵀ` for `s` tokens: on the 8-bit path when the model runs it and `w`'s format has
/// it (`xq` then holds `x` quantized), else in f32.
fn linear(
    m: &Packed,
    w: &QMatrix,
    what: &str,
    x: &[f32],
    xq: &Q8Acts,
    y: &mut [f32],
    s: usize,
) -> Result<()> {
    // `xq` holds this input only when it could be quantized (whole blocks of 32).
    if m.q8 && w.has_q8_path() && xq.cols() == w.cols() && xq.tokens() == s {
        w.matmul_q8(&m.pool, xq, y)
    } else {
        w.matmul(&m.pool, x, y, s)
    }
    .map_err(kernel_err(what))
}

/// Quantizes `x` (`cols` values per token) into `xq` when the model runs the 8-bit path and
/// the rows are whole blocks of 32 (no quantized matrix takes other widths; an F16 one may, and
/// then runs in f32).
fn quantize(m: &Packed, x: &[f32], cols: usize, xq: &mut Q8Acts) -> Result<()> {
    if m.q8 && cols.is_multiple_of(32) {
        xq.quantize(x, cols)
            .map_err(kernel_err("quantizing activations"))?;
    }
    Ok(())
}

/// RMSNorm over each of the `rows` rows of `x` (`len` values each) into `out`.
fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let len = w.len();
    for (xr, or) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        ops::rms_norm(xr, w, eps, or);
    }
}

/// The rotary embedding's inverse frequencies (with Llama 3 scaling when configured) of the
/// global layers, or of Gemma 3's `local` ones (their own base, no scaling).
pub(crate) fn inv_freqs(cfg: &LlamaConfig, local: bool) -> Vec<f64> {
    let hd = cfg.head_dim();
    let base = |theta: f64| -> Vec<f64> {
        (0..hd / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / hd as f64))
            .collect()
    };
    if let Some(g) = &cfg.gemma {
        return if local {
            base(g.rope_local_theta)
        } else {
            base(cfg.rope_theta)
                .into_iter()
                .map(|f| f / g.rope_global_factor)
                .collect()
        };
    }
    let mut inv = base(cfg.rope_theta);
    if let Some(s) = cfg.rope_scaling {
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        for f in &mut inv {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            *f = if wavelen < high_wavelen {
                *f
            } else if wavelen > low_wavelen {
                *f / s.factor
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * *f / s.factor + smooth * *f
            };
        }
    }
    if let Some(factors) = &cfg.rope_freq_factors {
        // llama.cpp's `freq_factors`: each angle is divided by its factor (validated: one
        // positive factor per frequency).
        for (f, d) in inv.iter_mut().zip(factors) {
            *f /= d;
        }
    }
    inv
}

/// Adds `bias` to each row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// RMSNorm of each head of `x` (`w.len()` values each) in place; `tmp` is scratch.
fn norm_heads(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut Vec<f32>) {
    for head in x.chunks_exact_mut(w.len()) {
        tmp.clear();
        tmp.extend_from_slice(head);
        ops::rms_norm(tmp, w, eps, head);
    }
}

/// Qwen2's biases on the query, key and value projections.
struct QkvBias {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Qwen3's and Gemma 3's RMSNorm weights over each query and key head.
struct QkNorm {
    q: Vec<f32>,
    k: Vec<f32>,
}

/// Self-attention: Q/K/V/O projections, RoPE, grouped-query attention over the f16 cache.
struct Attention {
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    bias: Option<QkvBias>,
    qk_norm: Option<QkNorm>,
    /// Gemma 3's local layer: the local RoPE tables.
    local: bool,
    /// Positions a query sees, when not all.
    window: Option<usize>,
}

/// A norm's weight `[len]`, plus the configuration's offset (Gemma's files store `w - 1`).
fn norm_weight(t: &TensorSet, name: &str, len: usize, cfg: &LlamaConfig) -> Result<Vec<f32>> {
    let mut w = t.vector(name, len)?;
    let offset = cfg.norm_offset();
    if offset != 0.0 {
        w.iter_mut().for_each(|v| *v += offset);
    }
    Ok(w)
}

impl Attention {
    fn load(t: &TensorSet, p: &str, l: usize, cfg: &LlamaConfig) -> Result<Self> {
        let (h, hd) = (cfg.hidden, cfg.head_dim());
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let bias = cfg
            .qkv_bias
            .then(|| {
                Ok::<_, Error>(QkvBias {
                    q: t.vector(&format!("{p}.q_proj.bias"), qd)?,
                    k: t.vector(&format!("{p}.k_proj.bias"), kvd)?,
                    v: t.vector(&format!("{p}.v_proj.bias"), kvd)?,
                })
            })
            .transpose()?;
        let qk_norm = cfg
            .qk_norm
            .then(|| {
                Ok::<_, Error>(QkNorm {
                    q: norm_weight(t, &format!("{p}.q_norm.weight"), hd, cfg)?,
                    k: norm_weight(t, &format!("{p}.k_norm.weight"), hd, cfg)?,
                })
            })
            .transpose()?;
        Ok(Self {
            wq: t.matrix(&format!("{p}.q_proj.weight"), qd, h)?,
            wk: t.matrix(&format!("{p}.k_proj.weight"), kvd, h)?,
            wv: t.matrix(&format!("{p}.v_proj.weight"), kvd, h)?,
            wo: t.matrix(&format!("{p}.o_proj.weight"), h, qd)?,
            bias,
            qk_norm,
            local: cfg.is_local(l),
            window: cfg.window(l),
        })
    }

    /// Attends `s` new positions (normed input `sc.xn`, `[s, hidden]`) after the `pos` the
    /// cache holds; writes the output projection to `sc.proj` (`[s, hidden]`).
    fn forward(
        &self,
        m: &Packed,
        layer: &mut LayerCache,
        sc: &mut Scratch,
        s: usize,
        pos: usize,
    ) -> Result<()> {
        let cfg = &m.cfg;
        let (nh, kvh, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim());
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let pool = &m.pool;
        quantize(m, &sc.xn, cfg.hidden, &mut sc.xq)?;
        linear(
            m,
            &self.wq,
            "q_proj",
            &sc.xn,
            &sc.xq,
            &mut sc.q[..s * qd],
            s,
        )?;
        linear(
            m,
            &self.wk,
            "k_proj",
            &sc.xn,
            &sc.xq,
            &mut sc.k[..s * kvd],
            s,
        )?;
        linear(
            m,
            &self.wv,
            "v_proj",
            &sc.xn,
            &sc.xq,
            &mut sc.v[..s * kvd],
            s,
        )?;
        if let Some(b) = &self.bias {
            add_bias(&mut sc.q[..s * qd], &b.q);
            add_bias(&mut sc.k[..s * kvd], &b.k);
            add_bias(&mut sc.v[..s * kvd], &b.v);
        }
        if let Some(n) = &self.qk_norm {
            let eps = cfg.rms_eps as f32;
            norm_heads(&mut sc.q[..s * qd], &n.q, eps, &mut sc.scores);
            norm_heads(&mut sc.k[..s * kvd], &n.k, eps, &mut sc.scores);
        }
        let half = hd / 2;
        let (cos, sin) = if self.local {
            (&sc.cos_local, &sc.sin_local)
        } else {
            (&sc.cos, &sc.sin)
        };
        for i in 0..s {
            let (cos, sin) = (
                &cos[i * half..(i + 1) * half],
                &sin[i * half..(i + 1) * half],
            );
            for head in sc.q[i * qd..(i + 1) * qd].chunks_exact_mut(hd) {
                ops::rope(m.layout, head, cos, sin);
            }
            for head in sc.k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd) {
                ops::rope(m.layout, head, cos, sin);
            }
        }
        layer.k.push(&sc.k[..s * kvd]);
        layer.v.push(&sc.v[..s * kvd]);
        let total = pos + s;
        let scale = cfg.attention_scale() as f32;
        let rep = nh / kvh;
        let (kc, vc) = (layer.k.rows(), layer.v.rows());
        // The cache holds positions `stored..`: a windowed layer drops what no query can see.
        let stored = layer.first;
        let q = &sc.q[..s * qd];
        // One task per (position, key/value head): the `rep` query heads sharing that head are
        // scored together, into their slice of the output.
        let window = self.window;
        let group_out = |idx: usize, out: &mut [f32], scores: &mut Vec<f32>| {
            let (i, g) = (idx / kvh, idx % kvh);
            // Position `pos + i` sees itself and the positions before it, within the window.
            let end = pos + i + 1;
            let first = window.map_or(0, |w| end.saturating_sub(w));
            let group = Group {
                stride: kvd,
                offset: g * hd,
                head_dim: hd,
                seen: end - first,
            };
            let qg = &q[i * qd + g * rep * hd..][..rep * hd];
            let (k, v) = (
                kc.from_position(first - stored, kvd),
                vc.from_position(first - stored, kvd),
            );
            attention::attend(qg, k, v, group, scale, scores, out);
        };
        let att = &mut sc.att[..s * qd];
        if s * nh * total < 1 << 14 || pool.threads() == 1 {
            for (idx, out) in att.chunks_exact_mut(rep * hd).enumerate() {
                group_out(idx, out, &mut sc.scores);
            }
        } else {
            use rayon::prelude::*;
            pool.install(|| {
                att.par_chunks_mut(rep * hd)
                    .enumerate()
                    .for_each_init(Vec::new, |scores, (idx, out)| group_out(idx, out, scores))
            });
        }
        if let Some(w) = window {
            layer.forget_before((pos + 1).saturating_sub(w), w, kvd);
        }
        let att = &sc.att[..s * qd];
        quantize(m, att, qd, &mut sc.xq)?;
        linear(
            m,
            &self.wo,
            "o_proj",
            att,
            &sc.xq,
            &mut sc.proj[..s * cfg.hidden],
            s,
        )
    }
}

/// The SwiGLU MLP.
struct Mlp {
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

impl Mlp {
    fn load(t: &TensorSet, p: &str, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden, cfg.intermediate);
        Ok(Self {
            gate: t.matrix(&format!("{p}.gate_proj.weight"), i, h)?,
            up: t.matrix(&format!("{p}.up_proj.weight"), i, h)?,
            down: t.matrix(&format!("{p}.down_proj.weight"), h, i)?,
        })
    }

    /// `down(silu(gate(xn)) * up(xn))` into `sc.proj`.
    fn forward(&self, m: &Packed, sc: &mut Scratch, s: usize) -> Result<()> {
        let cfg = &m.cfg;
        let n = s * cfg.intermediate;
        quantize(m, &sc.xn, cfg.hidden, &mut sc.xq)?;
        linear(
            m,
            &self.gate,
            "gate_proj",
            &sc.xn,
            &sc.xq,
            &mut sc.gate[..n],
            s,
        )?;
        linear(m, &self.up, "up_proj", &sc.xn, &sc.xq, &mut sc.up[..n], s)?;
        if cfg.gemma.is_some() {
            ops::gelu_tanh_mul(&mut sc.gate[..n], &sc.up[..n]);
        } else {
            ops::silu_mul(&mut sc.gate[..n], &sc.up[..n]);
        }
        let g = &sc.gate[..n];
        quantize(m, g, cfg.intermediate, &mut sc.xq)?;
        linear(
            m,
            &self.down,
            "down_proj",
            g,
            &sc.xq,
            &mut sc.proj[..s * cfg.hidden],
            s,
        )
    }
}

/// One decoder layer: pre-norm attention and pre-norm MLP, each added to the residual (Gemma 3
/// norms their outputs too, before the addition).
struct Block {
    attn_norm: Vec<f32>,
    attn: Attention,
    post_attn_norm: Option<Vec<f32>>,
    mlp_norm: Vec<f32>,
    mlp: Mlp,
    post_mlp_norm: Option<Vec<f32>>,
}

impl Block {
    fn load(t: &TensorSet, l: usize, cfg: &LlamaConfig) -> Result<Self> {
        let p = format!("model.layers.{l}");
        let norm = |name: &str| norm_weight(t, &format!("{p}.{name}.weight"), cfg.hidden, cfg);
        // Gemma's `post_attention_layernorm` norms the attention's output; Llama's is the MLP's
        // input norm.
        let sandwich = cfg.gemma.is_some();
        Ok(Self {
            attn_norm: norm("input_layernorm")?,
            attn: Attention::load(t, &format!("{p}.self_attn"), l, cfg)?,
            post_attn_norm: sandwich
                .then(|| norm("post_attention_layernorm"))
                .transpose()?,
            mlp_norm: norm(if sandwich {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            })?,
            mlp: Mlp::load(t, &format!("{p}.mlp"), cfg)?,
            post_mlp_norm: sandwich
                .then(|| norm("post_feedforward_layernorm"))
                .transpose()?,
        })
    }

    fn forward(
        &self,
        m: &Packed,
        layer: &mut LayerCache,
        sc: &mut Scratch,
        s: usize,
        pos: usize,
    ) -> Result<()> {
        let n = s * m.cfg.hidden;
        let eps = m.cfg.rms_eps as f32;
        norm_rows(&sc.x[..n], &self.attn_norm, eps, &mut sc.xn[..n]);
        self.attn.forward(m, layer, sc, s, pos)?;
        Self::add_output(sc, self.post_attn_norm.as_deref(), n, eps);
        norm_rows(&sc.x[..n], &self.mlp_norm, eps, &mut sc.xn[..n]);
        self.mlp.forward(m, sc, s)?;
        Self::add_output(sc, self.post_mlp_norm.as_deref(), n, eps);
        Ok(())
    }

    /// `x += proj`, normed first when the block norms its outputs (Gemma 3; `xn` is free then).
    fn add_output(sc: &mut Scratch, norm: Option<&[f32]>, n: usize, eps: f32) {
        let out = match norm {
            Some(w) => {
                norm_rows(&sc.proj[..n], w, eps, &mut sc.xn[..n]);
                &sc.xn[..n]
            }
            None => &sc.proj[..n],
        };
        sc.x[..n].iter_mut().zip(out).for_each(|(x, p)| *x += p);
    }
}

/// Keys or values of one layer, `[position][kv_head][head_dim]`, grown as positions come.
enum KvStore {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl KvStore {
    fn new(dtype: KvDtype) -> Self {
        match dtype {
            KvDtype::F16 => Self::F16(Vec::new()),
            KvDtype::F32 => Self::F32(Vec::new()),
        }
    }

    fn push(&mut self, v: &[f32]) {
        match self {
            Self::F16(s) => s.extend(v.iter().map(|&x| f16::from_f32(x))),
            Self::F32(s) => s.extend_from_slice(v),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::F16(s) => s.len() * 2,
            Self::F32(s) => s.len() * 4,
        }
    }

    fn truncate(&mut self, len: usize) {
        match self {
            Self::F16(s) => s.truncate(len),
            Self::F32(s) => s.truncate(len),
        }
    }

    /// Drops the first `n` values.
    fn drop_front(&mut self, n: usize) {
        match self {
            Self::F16(s) => drop(s.drain(..n.min(s.len()))),
            Self::F32(s) => drop(s.drain(..n.min(s.len()))),
        }
    }

    /// Every cached row, for [`attention::attend`].
    fn rows(&self) -> Kv<'_> {
        match self {
            Self::F16(s) => Kv::F16(s),
            Self::F32(s) => Kv::F32(s),
        }
    }
}

/// A layer's keys and values, of positions `first..` (0 unless the layer has a sliding window).
struct LayerCache {
    k: KvStore,
    v: KvStore,
    first: usize,
}

impl LayerCache {
    /// A windowed layer forgets positions before `keep` (no query at or after the pass that
    /// just ran sees them, even if it is run again), once that frees a whole window's worth: the
    /// layer holds at most two windows plus one pass's positions, and moves the rows it keeps
    /// once per `window` positions rather than at every step.
    fn forget_before(&mut self, keep: usize, window: usize, kvd: usize) {
        if keep >= self.first + window {
            let n = (keep - self.first) * kvd;
            self.k.drop_front(n);
            self.v.drop_front(n);
            self.first = keep;
        }
    }

    /// Back to positions `first..pos` (a failed pass pushed more).
    fn truncate(&mut self, pos: usize, kvd: usize) {
        let len = pos.saturating_sub(self.first) * kvd;
        self.k.truncate(len);
        self.v.truncate(len);
    }
}

/// Buffers one forward pass reuses, sized for the largest batch of positions seen so far (a
/// decode step allocates nothing once the first has run).
#[derive(Default)]
struct Scratch {
    tokens: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    scores: Vec<f32>,
    /// The input of the next linears, quantized (8-bit path only).
    xq: Q8Acts,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Gemma 3's local layers' tables (empty for the others).
    cos_local: Vec<f32>,
    sin_local: Vec<f32>,
    logits: Vec<f32>,
}

impl Scratch {
    fn fit(&mut self, s: usize, cfg: &LlamaConfig) {
        let (h, hd) = (cfg.hidden, cfg.head_dim());
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let resize = |v: &mut Vec<f32>, n: usize| {
            if v.len() != n {
                v.resize(n, 0.0);
            }
        };
        resize(&mut self.x, s * h);
        resize(&mut self.xn, s * h);
        resize(&mut self.proj, s * h);
        if s > self.tokens {
            resize(&mut self.q, s * qd);
            resize(&mut self.att, s * qd);
            resize(&mut self.k, s * kvd);
            resize(&mut self.v, s * kvd);
            resize(&mut self.gate, s * cfg.intermediate);
            resize(&mut self.up, s * cfg.intermediate);
            self.tokens = s;
        }
        resize(&mut self.cos, s * hd / 2);
        resize(&mut self.sin, s * hd / 2);
        if cfg.gemma.is_some() {
            resize(&mut self.cos_local, s * hd / 2);
            resize(&mut self.sin_local, s * hd / 2);
        }
    }
}

/// The per-sequence state of the packed engine.
pub(crate) struct PackedCache {
    layers: Vec<LayerCache>,
    scratch: Scratch,
}

impl PackedCache {
    /// Bytes the keys and values take now.
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum()
    }
}

/// The packed model.
pub(crate) struct Packed {
    cfg: LlamaConfig,
    embed: QMatrix,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    lm_head: QMatrix,
    inv_freq: Vec<f64>,
    /// Gemma 3's local layers' frequencies.
    inv_freq_local: Option<Vec<f64>>,
    /// Gemma 3 multiplies the embeddings by `sqrt(hidden)`.
    embed_scale: Option<f32>,
    layout: RopeLayout,
    pool: Arc<Pool>,
    kv: KvDtype,
    /// Whether linears with an 8-bit kernel take quantized activations.
    q8: bool,
}

impl Packed {
    /// Wraps the mapped tensors (nothing is copied but the norms' weights).
    pub(crate) fn load(
        cfg: LlamaConfig,
        t: &TensorSet,
        pool: Arc<Pool>,
        opts: CpuOptions,
    ) -> Result<Self> {
        let (h, v) = (cfg.hidden, cfg.vocab);
        let embed = t.matrix("model.embed_tokens.weight", v, h)?;
        let lm_head = if cfg.tie_embeddings {
            embed.clone()
        } else {
            t.matrix("lm_head.weight", v, h)?
        };
        let blocks = (0..cfg.layers)
            .map(|l| Block::load(t, l, &cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: norm_weight(t, "model.norm.weight", h, &cfg)?,
            inv_freq: inv_freqs(&cfg, false),
            inv_freq_local: cfg.gemma.is_some().then(|| inv_freqs(&cfg, true)),
            embed_scale: cfg.gemma.is_some().then(|| (h as f32).sqrt()),
            layout: t.rope_layout,
            embed,
            blocks,
            lm_head,
            cfg,
            pool,
            kv: opts.kv,
            q8: opts.activations == Activations::Q8,
        })
    }

    /// An empty cache, its layers holding keys and values in the configured dtype.
    pub(crate) fn new_cache(&self) -> PackedCache {
        PackedCache {
            layers: (0..self.cfg.layers)
                .map(|_| LayerCache {
                    k: KvStore::new(self.kv),
                    v: KvStore::new(self.kv),
                    first: 0,
                })
                .collect(),
            scratch: Scratch::default(),
        }
    }

    /// Bytes of weights it reads (the mapping's, shared with the page cache).
    pub(crate) fn weight_bytes(&self) -> usize {
        let mats = self.blocks.iter().map(|b| {
            [
                &b.attn.wq,
                &b.attn.wk,
                &b.attn.wv,
                &b.attn.wo,
                &b.mlp.gate,
                &b.mlp.up,
                &b.mlp.down,
            ]
            .iter()
            .map(|m| m.byte_len())
            .sum::<usize>()
        });
        let head = if self.cfg.tie_embeddings {
            0
        } else {
            self.lm_head.byte_len()
        };
        mats.sum::<usize>() + self.embed.byte_len() + head
    }

    /// How it was configured (its pool's threads, KV dtype, activations).
    pub(crate) fn options(&self) -> CpuOptions {
        CpuOptions::new(self.threads())
            .with_kv(self.kv)
            .with_activations(if self.q8 {
                Activations::Q8
            } else {
                Activations::F32
            })
    }

    /// Threads it computes on.
    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Cosines and sines of positions `pos..pos + s`, once per forward pass (every layer uses
    /// them), `[s, head_dim / 2]`.
    fn rope_angles(inv_freq: &[f64], pos: usize, s: usize, cos: &mut [f32], sin: &mut [f32]) {
        let half = inv_freq.len();
        for i in 0..s {
            for (k, f) in inv_freq.iter().enumerate() {
                let a = (pos + i) as f64 * f;
                cos[i * half + k] = a.cos() as f32;
                sin[i * half + k] = a.sin() as f32;
            }
        }
    }

    /// Runs `ids` after the cache's `pos` positions; returns the logits of the last position,
    /// or of every one (`[S, vocab]`).
    pub(crate) fn run(
        &self,
        ids: &[u32],
        cache: &mut PackedCache,
        pos: usize,
        all: bool,
    ) -> Result<Vec<f32>> {
        let out = self
            .pool
            .install_spinning(|| self.run_on_pool(ids, cache, pos, all));
        if out.is_err() {
            // Layers that ran before the failure pushed their keys and values: drop them, so
            // the cache still holds exactly `pos` positions.
            let kvd = self.cfg.kv_dim();
            for l in &mut cache.layers {
                l.truncate(pos, kvd);
            }
        }
        out
    }

    fn run_on_pool(
        &self,
        ids: &[u32],
        cache: &mut PackedCache,
        pos: usize,
        all: bool,
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (s, h) = (ids.len(), cfg.hidden);
        let sc = &mut cache.scratch;
        sc.fit(s, cfg);
        Self::rope_angles(&self.inv_freq, pos, s, &mut sc.cos, &mut sc.sin);
        if let Some(local) = &self.inv_freq_local {
            Self::rope_angles(local, pos, s, &mut sc.cos_local, &mut sc.sin_local);
        }
        for (i, &id) in ids.iter().enumerate() {
            let row = &mut sc.x[i * h..(i + 1) * h];
            self.embed.decode_row(id as usize, row);
            if let Some(scale) = self.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        for (block, layer) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            block.forward(self, layer, sc, s, pos)?;
        }
        let first = if all { 0 } else { s - 1 };
        let rows = s - first;
        let eps = cfg.rms_eps as f32;
        norm_rows(
            &sc.x[first * h..s * h],
            &self.norm,
            eps,
            &mut sc.xn[..rows * h],
        );
        sc.logits.resize(rows * cfg.vocab, 0.0);
        let xn = &sc.xn[..rows * h];
        quantize(self, xn, h, &mut sc.xq)?;
        linear(
            self,
            &self.lm_head,
            "lm_head",
            xn,
            &sc.xq,
            &mut sc.logits,
            rows,
        )?;
        Ok(sc.logits.clone())
    }
}
