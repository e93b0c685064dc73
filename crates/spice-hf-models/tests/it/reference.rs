//! An independent Llama forward pass in plain Rust (f64 accumulation, no Burn), written from
//! the Hugging Face `LlamaForCausalLM` definition, to check the Burn implementation against.

use spice_hf_models::config::LlamaConfig;
use spice_hf_models::weights::Weights;

fn w<'a>(weights: &'a Weights, name: &str) -> &'a [f32] {
    &weights[name].data
}

/// `y = W x` for `W` of shape `[out, in]`.
fn matvec(wt: &[f32], x: &[f64], out: usize) -> Vec<f64> {
    let inp = x.len();
    (0..out)
        .map(|r| (0..inp).map(|c| wt[r * inp + c] as f64 * x[c]).sum())
        .collect()
}

fn rms_norm(x: &[f64], g: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(g).map(|(v, g)| v * inv * *g as f64).collect()
}

fn rope(v: &mut [f64], pos: usize, inv_freq: &[f64]) {
    let half = v.len() / 2;
    let orig = v.to_vec();
    for (i, freq) in inv_freq.iter().enumerate().take(half) {
        let (s, c) = (pos as f64 * freq).sin_cos();
        v[i] = orig[i] * c - orig[i + half] * s;
        v[i + half] = orig[i + half] * c + orig[i] * s;
    }
}

/// RoPE inverse frequencies `theta^(-2i/d)`, rescaled by a Llama 3 `rope_scaling` object as
/// given in `config.json` (read here from the JSON, not from the crate's parsed config). The
/// formula is Hugging Face's `_compute_llama3_parameters` (transformers,
/// `modeling_rope_utils.py`): wavelengths above `original_max_position_embeddings /
/// low_freq_factor` are divided by `factor`, those below `... / high_freq_factor` kept, and
/// those between interpolated with `smooth = (old_context / wavelen - low) / (high - low)`.
pub(crate) fn inv_freq(
    theta: f64,
    head_dim: usize,
    scaling: Option<&serde_json::Value>,
) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let Some(s) = scaling else {
        return base;
    };
    assert_eq!(s["rope_type"], "llama3");
    let factor = s["factor"].as_f64().unwrap();
    let low = s["low_freq_factor"].as_f64().unwrap();
    let high = s["high_freq_factor"].as_f64().unwrap();
    let old_context = s["original_max_position_embeddings"].as_f64().unwrap();
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    base.iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let llama = if wavelen > low_wavelen { f / factor } else { f };
            let smooth = (old_context / wavelen - low) / (high - low);
            let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
            // transformers: `~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)`
            // (the wavelengths are finite, so the negations are plain comparisons).
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            if medium { smoothed } else { llama }
        })
        .collect()
}

/// Logits of every position of `ids`, `[len][vocab]`, with unscaled RoPE.
pub(crate) fn forward(cfg: &LlamaConfig, weights: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let freqs = inv_freq(cfg.rope_theta, cfg.head_dim(), None);
    forward_with(cfg, weights, ids, &freqs)
}

/// [`forward`] with the RoPE inverse frequencies given.
pub(crate) fn forward_with(
    cfg: &LlamaConfig,
    weights: &Weights,
    ids: &[u32],
    inv_freq: &[f64],
) -> Vec<Vec<f64>> {
    let (h, hd, nh, kvh) = (cfg.hidden, cfg.head_dim(), cfg.heads, cfg.kv_heads);
    let emb = w(weights, "model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&t| {
            emb[t as usize * h..(t as usize + 1) * h]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        let get = |n: &str| w(weights, &format!("{p}.{n}"));
        let normed: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| rms_norm(x, get("input_layernorm.weight"), cfg.rms_eps))
            .collect();
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (pos, x) in normed.iter().enumerate() {
            let mut q = matvec(get("self_attn.q_proj.weight"), x, nh * hd);
            let mut k = matvec(get("self_attn.k_proj.weight"), x, kvh * hd);
            for head in q.chunks_mut(hd) {
                rope(head, pos, inv_freq);
            }
            for head in k.chunks_mut(hd) {
                rope(head, pos, inv_freq);
            }
            qs.push(q);
            ks.push(k);
            vs.push(matvec(get("self_attn.v_proj.weight"), x, kvh * hd));
        }
        for i in 0..xs.len() {
            let mut attn = vec![0f64; nh * hd];
            for head in 0..nh {
                let kv = head / (nh / kvh);
                let q = &qs[i][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        q.iter()
                            .zip(&ks[j][kv * hd..(kv + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += e / sum * vs[j][kv * hd + d];
                    }
                }
            }
            let o = matvec(get("self_attn.o_proj.weight"), &attn, h);
            xs[i].iter_mut().zip(o).for_each(|(x, o)| *x += o);
            let n2 = rms_norm(&xs[i], get("post_attention_layernorm.weight"), cfg.rms_eps);
            let gate = matvec(get("mlp.gate_proj.weight"), &n2, cfg.intermediate);
            let up = matvec(get("mlp.up_proj.weight"), &n2, cfg.intermediate);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(get("mlp.down_proj.weight"), &act, h);
            xs[i].iter_mut().zip(down).for_each(|(x, d)| *x += d);
        }
    }
    let head = if cfg.tie_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    xs.iter()
        .map(|x| {
            matvec(
                w(weights, head),
                &rms_norm(x, w(weights, "model.norm.weight"), cfg.rms_eps),
                cfg.vocab,
            )
        })
        .collect()
}
