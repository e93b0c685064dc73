//! A GGUF v3 writer for fixtures: the tiny Llama in any weight format the kernels read, laid
//! out as llama.cpp's converter lays a Hugging Face model out (GGUF names, `ne0`-first
//! dimensions, Q/K rows permuted for interleaved RoPE, a byte-level BPE tokenizer and the
//! ChatML template in the metadata).

use std::path::Path;

use spice_hf_kernels::format::Format;
use spice_hf_kernels::quantize::quantize_matrix;

use crate::fixtures::{CHATML_TEMPLATE, TinyShape, byte_to_unicode, tiny, tiny_tensors};

/// A metadata value to write.
#[derive(Debug, Clone)]
pub enum Meta {
    /// uint32.
    U32(u32),
    /// float32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// string.
    Str(String),
    /// array of strings.
    Strs(Vec<String>),
    /// array of int32.
    I32s(Vec<i32>),
    /// array of float32.
    F32s(Vec<f32>),
}

/// GGML's id of a format.
pub fn ggml_type(f: Format) -> u32 {
    match f {
        Format::F32 => 0,
        Format::F16 => 1,
        Format::Q4_0 => 2,
        Format::Q4_1 => 3,
        Format::Q5_0 => 6,
        Format::Q5_1 => 7,
        Format::Q8_0 => 8,
        Format::Q4K => 12,
        Format::Q5K => 13,
        Format::Q6K => 14,
        Format::BF16 => 30,
        other => unreachable!("no GGML id for {other}"),
    }
}

/// A tensor to write: GGUF name, PyTorch shape, format and its encoded bytes.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// PyTorch shape (`[out, in]`); written reversed, `ne0` first.
    pub shape: Vec<usize>,
    /// Stored format.
    pub format: Format,
    /// Encoded bytes.
    pub data: Vec<u8>,
}

/// Serialises a GGUF v3 header (alignment 32) for tensors of the given byte sizes; returns it
/// and the offset of each tensor's data from the start of the data section.
fn header(meta: &[(&str, Meta)], tensors: &[(&str, &[usize], Format, usize)]) -> (Vec<u8>, u64) {
    let mut w = Vec::new();
    let str = |w: &mut Vec<u8>, s: &str| {
        w.extend((s.len() as u64).to_le_bytes());
        w.extend(s.as_bytes());
    };
    w.extend(0x4655_4747u32.to_le_bytes());
    w.extend(3u32.to_le_bytes());
    w.extend((tensors.len() as u64).to_le_bytes());
    w.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        str(&mut w, k);
        match v {
            Meta::U32(x) => {
                w.extend(4u32.to_le_bytes());
                w.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                w.extend(6u32.to_le_bytes());
                w.extend(x.to_le_bytes());
            }
            Meta::Bool(x) => {
                w.extend(7u32.to_le_bytes());
                w.push(*x as u8);
            }
            Meta::Str(s) => {
                w.extend(8u32.to_le_bytes());
                str(&mut w, s);
            }
            Meta::Strs(a) => {
                w.extend(9u32.to_le_bytes());
                w.extend(8u32.to_le_bytes());
                w.extend((a.len() as u64).to_le_bytes());
                for s in a {
                    str(&mut w, s);
                }
            }
            Meta::I32s(a) => {
                w.extend(9u32.to_le_bytes());
                w.extend(5u32.to_le_bytes());
                w.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    w.extend(x.to_le_bytes());
                }
            }
            Meta::F32s(a) => {
                w.extend(9u32.to_le_bytes());
                w.extend(6u32.to_le_bytes());
                w.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    w.extend(x.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, shape, format, len) in tensors {
        str(&mut w, name);
        w.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            w.extend((*d as u64).to_le_bytes());
        }
        w.extend(ggml_type(*format).to_le_bytes());
        w.extend(offset.to_le_bytes());
        offset += (*len as u64).next_multiple_of(32);
    }
    while w.len() % 32 != 0 {
        w.push(0);
    }
    (w, offset)
}

/// Serialises a GGUF v3 file (alignment 32).
pub fn gguf_bytes(meta: &[(&str, Meta)], tensors: &[GgufTensor]) -> Vec<u8> {
    let table: Vec<(&str, &[usize], Format, usize)> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), t.format, t.data.len()))
        .collect();
    let (mut w, _) = header(meta, &table);
    for t in tensors {
        w.extend(&t.data);
        while w.len() % 32 != 0 {
            w.push(0);
        }
    }
    w
}

/// Writes a GGUF whose tensor data is a hole: the header, then the file extended to its full
/// length (sparse on every filesystem that supports it, so a 4 GB layout costs a few KiB).
/// `tensors` are (GGUF name, PyTorch shape, format).
pub fn write_sparse_gguf(
    path: &Path,
    meta: &[(&str, Meta)],
    tensors: &[(String, Vec<usize>, Format)],
) -> std::io::Result<u64> {
    let table: Vec<(&str, &[usize], Format, usize)> = tensors
        .iter()
        .map(|(n, s, f)| {
            let cols = *s.last().unwrap_or(&1);
            let rows: usize = s.iter().rev().skip(1).product();
            let len = rows * f.row_bytes(cols).unwrap_or(0);
            (n.as_str(), s.as_slice(), *f, len)
        })
        .collect();
    let (head, data) = header(meta, &table);
    let file = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut &file, &head)?;
    let len = head.len() as u64 + data;
    file.set_len(len)?;
    Ok(len)
}

/// Hugging Face name → GGUF name (the inverse of the loader's map).
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let part = part
        .replace("input_layernorm", "attn_norm")
        .replace("post_attention_layernorm", "ffn_norm")
        .replace("self_attn.q_proj", "attn_q")
        .replace("self_attn.k_proj", "attn_k")
        .replace("self_attn.v_proj", "attn_v")
        .replace("self_attn.o_proj", "attn_output")
        .replace("self_attn.q_norm", "attn_q_norm")
        .replace("self_attn.k_norm", "attn_k_norm")
        .replace("mlp.gate_proj", "ffn_gate")
        .replace("mlp.up_proj", "ffn_up")
        .replace("mlp.down_proj", "ffn_down");
    format!("blk.{layer}.{part}")
}

/// llama.cpp's converter's Q/K permutation: `w.reshape(heads, 2, hd/2, in).swapaxes(1, 2)`.
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let hf_row = h * hd + a * (hd / 2) + b;
                let gguf_row = h * hd + b * 2 + a;
                out[gguf_row * cols..(gguf_row + 1) * cols]
                    .copy_from_slice(&data[hf_row * cols..(hf_row + 1) * cols]);
            }
        }
    }
    out
}

/// The fixtures' byte-level vocabulary as GGUF metadata: the three ChatML specials (control
/// tokens), then the 256 byte-level symbols; with their token types.
fn fixture_vocabulary() -> (Vec<String>, Vec<i32>) {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let tokens: Vec<String> = specials
        .iter()
        .map(|s| s.to_string())
        .chain(byte_to_unicode().into_iter().map(String::from))
        .collect();
    let types = (0..tokens.len())
        .map(|i| if i < specials.len() { 3 } else { 1 })
        .collect();
    (tokens, types)
}

/// The tiny Llama as a GGUF: 2-D weights in `format`, norms in F32 (as llama.cpp writes
/// them), with its tokenizer and chat template.
pub fn tiny_llama_gguf(seed: u64, shape: TinyShape, format: Format) -> Vec<u8> {
    tiny_llama_gguf_with(seed, shape, format, Vec::new())
}

/// [`tiny_llama_gguf`] with `extra` tensors appended to its table (`rope_freqs.weight`, ...).
pub fn tiny_llama_gguf_with(
    seed: u64,
    shape: TinyShape,
    format: Format,
    extra: Vec<GgufTensor>,
) -> Vec<u8> {
    let hd = shape.hidden / shape.heads;
    let mut tensors: Vec<GgufTensor> = tiny_tensors(seed, shape)
        .into_iter()
        .map(|(name, dims, mut data)| {
            let matrix = dims.len() == 2;
            if name.ends_with("q_proj.weight") {
                data = permute_rows(&data, dims[0], dims[1], shape.heads);
            } else if name.ends_with("k_proj.weight") {
                data = permute_rows(&data, dims[0], dims[1], shape.kv_heads);
            }
            let fmt = if matrix { format } else { Format::F32 };
            let cols = *dims.last().unwrap_or(&1);
            GgufTensor {
                name: gguf_name(&name),
                data: quantize_matrix(fmt, &data, cols),
                shape: dims,
                format: fmt,
            }
        })
        .collect();
    let (tokens, types) = fixture_vocabulary();
    let u = |v: usize| Meta::U32(v as u32);
    let meta = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("general.name", Meta::Str("tiny".into())),
        ("llama.context_length", u(256)),
        ("llama.embedding_length", u(shape.hidden)),
        ("llama.feed_forward_length", u(shape.intermediate)),
        ("llama.block_count", u(shape.layers)),
        ("llama.attention.head_count", u(shape.heads)),
        ("llama.attention.head_count_kv", u(shape.kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.freq_base", Meta::F32(10_000.0)),
        ("llama.rope.dimension_count", u(hd)),
        ("llama.vocab_size", u(tiny::VOCAB)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(Vec::new())),
        ("tokenizer.ggml.bos_token_id", u(1)),
        ("tokenizer.ggml.eos_token_id", u(2)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
        ("tokenizer.chat_template", Meta::Str(CHATML_TEMPLATE.into())),
    ];
    tensors.extend(extra);
    gguf_bytes(&meta, &tensors)
}

/// Writes [`tiny_llama_gguf`] to `path`.
pub fn write_tiny_llama_gguf(
    path: &Path,
    seed: u64,
    shape: TinyShape,
    format: Format,
) -> std::io::Result<()> {
    std::fs::write(path, tiny_llama_gguf(seed, shape, format))
}

/// A Hugging Face model directory (`config.json` + `model.safetensors`, F32/F16/BF16) of the
/// Llama family (llama, mistral, qwen2, qwen3, gemma3_text) written as llama.cpp's converter
/// writes it: the architecture's metadata (Mistral as `llama`, with its sliding window; Gemma 3
/// with its window and, where its layers are not llama.cpp's default of every sixth global,
/// `gemma3.attention.sliding_window_pattern`), 2-D weights in `format`, the rest F32, Q/K rows
/// permuted for `llama` only, Gemma's norm weights stored plus one (as llama.cpp stores them),
/// Gemma's norm names, and the fixtures' byte-level tokenizer. Panics on anything else (a
/// fixture helper).
pub fn gguf_from_hf_dir(dir: &Path, format: Format) -> Vec<u8> {
    use safetensors::SafeTensors;
    use spice_hf_kernels::format::decode_row;
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let n = |k: &str| cfg[k].as_u64().unwrap_or_else(|| panic!("config.json {k}")) as usize;
    let model_type = cfg["model_type"].as_str().unwrap();
    let arch = match model_type {
        "llama" | "mistral" => "llama",
        "gemma3_text" => "gemma3",
        other => other,
    };
    let gemma = arch == "gemma3";
    let (hidden, heads) = (n("hidden_size"), n("num_attention_heads"));
    let kv_heads = cfg["num_key_value_heads"]
        .as_u64()
        .map_or(heads, |v| v as usize);
    let head_dim = cfg["head_dim"]
        .as_u64()
        .map_or(hidden / heads, |v| v as usize);
    let theta = cfg["rope_theta"]
        .as_f64()
        .or(cfg["rope_parameters"]["rope_theta"].as_f64())
        .or(cfg["rope_parameters"]["full_attention"]["rope_theta"].as_f64())
        .unwrap_or(10_000.0);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let tensors: Vec<GgufTensor> = names
        .iter()
        .map(|name| {
            let view = st.tensor(name).unwrap();
            let stored = match view.dtype() {
                safetensors::Dtype::F32 => Format::F32,
                safetensors::Dtype::F16 => Format::F16,
                safetensors::Dtype::BF16 => Format::BF16,
                other => panic!("{name}: {other:?}"),
            };
            let dims = view.shape().to_vec();
            let mut data = vec![0f32; dims.iter().product()];
            decode_row(stored, view.data(), &mut data);
            if arch == "llama" && name.ends_with("q_proj.weight") {
                data = permute_rows(&data, dims[0], dims[1], heads);
            } else if arch == "llama" && name.ends_with("k_proj.weight") {
                data = permute_rows(&data, dims[0], dims[1], kv_heads);
            }
            if gemma && name.ends_with("norm.weight") {
                data.iter_mut().for_each(|v| *v += 1.0);
            }
            let fmt = if dims.len() == 2 { format } else { Format::F32 };
            let cols = *dims.last().unwrap_or(&1);
            let hf = if gemma {
                name.replace("post_attention_layernorm", "post_attention_norm")
                    .replace("pre_feedforward_layernorm", "ffn_norm")
                    .replace("post_feedforward_layernorm", "post_ffw_norm")
            } else {
                name.clone()
            };
            GgufTensor {
                name: gguf_name(&hf),
                data: quantize_matrix(fmt, &data, cols),
                shape: dims,
                format: fmt,
            }
        })
        .collect();
    let (tokens, types) = fixture_vocabulary();
    let u = |v: usize| Meta::U32(v as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta: Vec<(String, Meta)> = vec![
        ("general.architecture".into(), Meta::Str(arch.into())),
        (
            "general.name".into(),
            Meta::Str(format!("tiny {model_type}")),
        ),
        (key("context_length"), u(n("max_position_embeddings"))),
        (key("embedding_length"), u(hidden)),
        (key("feed_forward_length"), u(n("intermediate_size"))),
        (key("block_count"), u(n("num_hidden_layers"))),
        (key("attention.head_count"), u(heads)),
        (key("attention.head_count_kv"), u(kv_heads)),
        (key("attention.key_length"), u(head_dim)),
        (key("attention.value_length"), u(head_dim)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Meta::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        (key("rope.freq_base"), Meta::F32(theta as f32)),
        (key("rope.dimension_count"), u(head_dim)),
        (key("vocab_size"), u(n("vocab_size"))),
        ("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type".into(), Meta::I32s(types)),
        ("tokenizer.ggml.merges".into(), Meta::Strs(Vec::new())),
        ("tokenizer.ggml.eos_token_id".into(), u(2)),
        ("tokenizer.ggml.add_bos_token".into(), Meta::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Meta::Str(CHATML_TEMPLATE.into()),
        ),
    ];
    if let Some(w) = cfg["sliding_window"].as_u64() {
        meta.push((key("attention.sliding_window"), u(w as usize)));
    }
    if let Some(types) = cfg["layer_types"].as_array().filter(|_| gemma) {
        // The period of the local/global pattern: the first global layer's position.
        let period = types
            .iter()
            .position(|t| t == "full_attention")
            .map_or(types.len(), |i| i + 1);
        meta.push((key("attention.sliding_window_pattern"), u(period)));
    }
    let meta: Vec<(&str, Meta)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    gguf_bytes(&meta, &tensors)
}
