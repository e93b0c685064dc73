//! `synth SMOLLM2.gguf OUT.gguf LAYERS`: a synthetic Llama in Q4_K with random weights, for
//! the benchmark's memory row: SmolLM2's tokenizer and chat template (its metadata), a 2,048-wide
//! model with 32 query and 4 key/value heads, an 5,632-wide MLP and `LAYERS` layers (40 make
//! ~1 GiB), every matrix random Q4_K blocks (small positive scales, so activations stay
//! finite), norms 1.

use spice_hf_models::gguf::{GgufFile, MetaValue};

/// Q4_K: 256 values in 144 bytes.
const Q4K_BYTES: usize = 144;
/// GGML's id of Q4_K and of F32.
const Q4K: u32 = 12;
const F32: u32 = 0;

pub(crate) fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [input, output, layers] = args else {
        return Err("usage: synth SMOLLM2.gguf OUT.gguf LAYERS".into());
    };
    let layers: usize = layers.parse()?;
    let (hidden, inter, heads, kv_heads) = (2048usize, 5632usize, 32usize, 4usize);
    let hd = hidden / heads;
    let g = GgufFile::open(input.as_ref())?;
    let vocab = match g.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(t)) => t.len(),
        _ => return Err("the input has no tokenizer.ggml.tokens".into()),
    };
    let mut meta = g.metadata.clone();
    for (k, v) in [
        ("llama.embedding_length", hidden),
        ("llama.feed_forward_length", inter),
        ("llama.block_count", layers),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv_heads),
        ("llama.rope.dimension_count", hd),
        ("llama.vocab_size", vocab),
    ] {
        meta.insert(k.to_string(), MetaValue::U32(v as u32));
    }
    meta.insert(
        "general.name".into(),
        MetaValue::String("synthetic Q4_K".into()),
    );
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut q4k = |rows: usize, cols: usize| -> Vec<u8> {
        let blocks = rows * cols / 256;
        let mut out = vec![0u8; blocks * Q4K_BYTES];
        for block in out.chunks_exact_mut(Q4K_BYTES) {
            for b in block.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = (seed >> 32) as u8;
            }
            // d = 2^-12, dmin = 2^-13 as f16: weights ~ +-0.01.
            block[0..2].copy_from_slice(&0x0C00u16.to_le_bytes());
            block[2..4].copy_from_slice(&0x0800u16.to_le_bytes());
        }
        out
    };
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1f32.to_le_bytes()).collect() };
    let mut tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let mut matrix = |name: String, rows: usize, cols: usize, t: &mut Vec<_>| {
        t.push((name, vec![cols as u64, rows as u64], Q4K, q4k(rows, cols)));
    };
    matrix("token_embd.weight".into(), vocab, hidden, &mut tensors);
    for l in 0..layers {
        let p = format!("blk.{l}");
        matrix(format!("{p}.attn_q.weight"), hidden, hidden, &mut tensors);
        matrix(
            format!("{p}.attn_k.weight"),
            kv_heads * hd,
            hidden,
            &mut tensors,
        );
        matrix(
            format!("{p}.attn_v.weight"),
            kv_heads * hd,
            hidden,
            &mut tensors,
        );
        matrix(
            format!("{p}.attn_output.weight"),
            hidden,
            hidden,
            &mut tensors,
        );
        matrix(format!("{p}.ffn_gate.weight"), inter, hidden, &mut tensors);
        matrix(format!("{p}.ffn_up.weight"), inter, hidden, &mut tensors);
        matrix(format!("{p}.ffn_down.weight"), hidden, inter, &mut tensors);
        for n in ["attn_norm", "ffn_norm"] {
            tensors.push((
                format!("{p}.{n}.weight"),
                vec![hidden as u64],
                F32,
                ones(hidden),
            ));
        }
    }
    tensors.push((
        "output_norm.weight".into(),
        vec![hidden as u64],
        F32,
        ones(hidden),
    ));
    let refs: Vec<(&str, &[u64], u32, &[u8])> = tensors
        .iter()
        .map(|(n, d, t, b)| (n.as_str(), d.as_slice(), *t, b.as_slice()))
        .collect();
    crate::convert::write_gguf(output.as_ref(), &meta, g.alignment as usize, &refs)
}
