//! Tokenizers: `tokenizer.json` through the `tokenizers` crate, or a byte-level BPE built from
//! GGUF metadata (vocabulary, merges, token types and the model's pre-tokenizer).

use std::path::Path;

use serde_json::json;

use crate::gguf::{GgufFile, MetaValue};
use crate::{Error, Result};

/// A tokenizer plus the special tokens generation needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// Tokens that end a turn or the text (`<|im_end|>`, `</s>`, `<|eot_id|>` ...).
    pub eos: Vec<u32>,
    /// Whether the model expects a BOS token before every prompt.
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

impl Tokenizer {
    /// Loads `tokenizer.json`; special tokens come from `tokenizer_config.json` and
    /// `generation_config.json` beside it when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| tok_err(&format!("{}", path.display()), e))?;
        // Lengths are ours to check (a request over the limit is refused, not cut), and
        // nothing is padded but by the encoder's own batching.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| tok_err(&format!("{}", path.display()), e))?;
        let read_json = |name: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
        };
        let config = read_json("tokenizer_config.json").unwrap_or(json!({}));
        let generation = read_json("generation_config.json").unwrap_or(json!({}));
        let token_text = |v: &serde_json::Value| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v["content"].as_str().map(str::to_string))
        };
        let bos = token_text(&config["bos_token"]).and_then(|t| inner.token_to_id(&t));
        let mut eos: Vec<u32> = token_text(&config["eos_token"])
            .and_then(|t| inner.token_to_id(&t))
            .into_iter()
            .collect();
        match &generation["eos_token_id"] {
            serde_json::Value::Number(n) => eos.extend(n.as_u64().map(|v| v as u32)),
            serde_json::Value::Array(a) => {
                eos.extend(a.iter().filter_map(|v| v.as_u64().map(|v| v as u32)))
            }
            _ => {}
        }
        eos.sort_unstable();
        eos.dedup();
        let add_bos = config["add_bos_token"].as_bool().unwrap_or(false);
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos,
        })
    }

    /// Builds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.str("tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model {model:?} (byte-level BPE, \"gpt2\", and SentencePiece BPE, \"llama\", are built from GGUF metadata; use a tokenizer.json)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            gguf.get(key)
                .and_then(MetaValue::as_array)
                .ok_or_else(|| tok_err(key, "missing from the GGUF metadata"))?
                .iter()
                .map(|v| v.as_str().ok_or_else(|| tok_err(key, "holds a non-string")))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = gguf
            .get("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole, before the BPE.
        let added: Vec<_> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3 | 4)))
            .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": types[i] == 3}))
            .collect();
        let spec = if model == "llama" {
            sentencepiece_spec(gguf, &tokens, &types, vocab, added)?
        } else {
            byte_level_spec(gguf, vocab, added, strings("tokenizer.ggml.merges")?)?
        };
        let inner = tokenizers::Tokenizer::from_bytes(
            serde_json::to_vec(&spec).map_err(|e| tok_err("GGUF tokenizer", e))?,
        )
        .map_err(|e| tok_err("GGUF tokenizer", e))?;
        Self::from_gguf_parts(gguf, inner)
    }

    /// The special tokens and BOS flag of a GGUF around its built tokenizer.
    fn from_gguf_parts(gguf: &GgufFile, inner: tokenizers::Tokenizer) -> Result<Self> {
        let id = |key: &str| gguf.get(key).and_then(MetaValue::as_u64).map(|v| v as u32);
        let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        eos.extend(id("tokenizer.ggml.eot_token_id"));
        eos.sort_unstable();
        eos.dedup();
        let add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(false);
        Ok(Self {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            add_bos,
        })
    }
}

/// The `tokenizer.json` of a GGUF's byte-level BPE (`gpt2`): its merges and the pre-tokenizer
/// `tokenizer.ggml.pre` names.
fn byte_level_spec(
    gguf: &GgufFile,
    vocab: serde_json::Map<String, serde_json::Value>,
    added: Vec<serde_json::Value>,
    merges: Vec<&str>,
) -> Result<serde_json::Value> {
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre {
        "smollm" => {
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]})
        }
        "gpt2" | "default" => byte_level,
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        // Qwen2, Qwen2.5 and Qwen3: Llama 3's split, digits one at a time.
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        other => {
            return Err(Error::Unsupported(format!(
                "GGUF pre-tokenizer {other:?} (supported: smollm, gpt2, llama-bpe, qwen2)"
            )));
        }
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// The `tokenizer.json` of a GGUF's SentencePiece BPE (`llama`: Llama 2, Mistral 7B, TinyLlama)
/// as transformers' `LlamaTokenizerFast` has it: a `▁` prepended and spaces as `▁`, no
/// pre-tokenizer, BPE with byte fallback (`<0xAB>` pieces) and merges derived from the pieces'
/// scores the way transformers' `SentencePieceExtractor` derives them (every split of a piece
/// into two pieces, ranked by the whole piece's score).
fn sentencepiece_spec(
    gguf: &GgufFile,
    tokens: &[&str],
    types: &[u64],
    vocab: serde_json::Map<String, serde_json::Value>,
    added: Vec<serde_json::Value>,
) -> Result<serde_json::Value> {
    let key = "tokenizer.ggml.scores";
    let scores: Vec<f64> = gguf
        .get(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| {
            tok_err(
                key,
                "missing from the GGUF metadata (a SentencePiece vocabulary needs it)",
            )
        })?
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| tok_err(key, "holds a non-number")))
        .collect::<Result<_>>()?;
    if scores.len() != tokens.len() {
        return Err(tok_err(
            key,
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    // Pieces that merges may produce or use: normal ones (type 1, or no type given).
    let normal = |i: usize| matches!(types.get(i), None | Some(1));
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| normal(*i))
        .map(|(i, t)| (*t, i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate().filter(|(i, _)| normal(*i)) {
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((scores[i], i, li, ri));
            }
        }
    }
    // Highest score first; then the piece's order, then the halves' ids (a stable order for
    // equal scores, as transformers sorts them).
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let merges: Vec<serde_json::Value> = merges
        .into_iter()
        .map(|(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect();
    let unk = types
        .iter()
        .position(|&t| t == 2)
        .and_then(|i| tokens.get(i))
        .map(|t| json!(t))
        .unwrap_or(serde_json::Value::Null);
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

impl Tokenizer {
    /// Encodes text. Special-token text (`<|im_start|>`) maps to its id; no BOS is added here.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err("encode", e))?
            .get_ids()
            .to_vec())
    }

    /// Encodes text as an encoder takes it: with the special tokens the tokenizer's
    /// post-processor adds (BERT's `[CLS]` ... `[SEP]`).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err("encode", e))?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text, dropping special tokens when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err("decode", e))
    }

    /// The id of a token's text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes a rendered chat prompt in which `plain` (the messages' text, in order) is text
    /// from a client: a special token's text typed inside it (`<|im_start|>system`) is encoded as
    /// the plain characters it is, so a client cannot forge turns; special tokens come from the
    /// template only. Adds BOS as [`Tokenizer::encode_prompt`] does.
    pub fn encode_chat_prompt(&self, prompt: &str, plain: &[&str]) -> Result<Vec<u32>> {
        let spans = plain_spans(prompt, plain);
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| tok_err("encode", e))?;
        let special = self.special_ids();
        let mut ids = Vec::with_capacity(enc.get_ids().len());
        for (&id, &(a, b)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            let typed = spans.iter().any(|&(s, e)| a >= s && b <= e);
            match prompt.get(a..b) {
                Some(text) if typed && special.contains(&id) => {
                    ids.extend(self.encode_plain(text, &special)?);
                }
                _ => ids.push(id),
            }
        }
        Ok(self.with_bos(ids))
    }

    /// Ids of the tokens marked special (control tokens).
    fn special_ids(&self) -> std::collections::HashSet<u32> {
        self.inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect()
    }

    /// `text` encoded with no special token in the result: a special token's text is split
    /// after its first character and the rest encoded again (it gets shorter each time).
    fn encode_plain(
        &self,
        text: &str,
        special: &std::collections::HashSet<u32>,
    ) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err("encode", e))?;
        let mut ids = Vec::new();
        for (&id, &(a, b)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            let piece = text.get(a..b).unwrap_or("");
            if special.contains(&id) && !piece.is_empty() {
                let first = piece.chars().next().map_or(1, char::len_utf8);
                ids.extend(self.encode_plain(&piece[..first], special)?);
                ids.extend(self.encode_plain(&piece[first..], special)?);
            } else {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn with_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let Some(bos) = self.bos.filter(|_| self.add_bos)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        ids
    }

    /// Encodes a rendered chat prompt: adds BOS once when the model wants one and the
    /// template did not already put it there (never a double BOS).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.with_bos(self.encode(prompt)?))
    }
}

/// How a tokenizer's token strings stand for bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// GPT-2's byte-level alphabet: one printable character per byte.
    ByteLevel,
    /// SentencePiece style: `▁` for a space, `<0xAB>` tokens for raw bytes.
    ByteFallback,
}

/// GPT-2's byte-to-character map, inverted: the byte each character stands for.
fn byte_level_alphabet() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::new();
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

impl Tokenizer {
    fn spelling(&self) -> Result<Spelling> {
        use tokenizers::decoders::DecoderWrapper as D;
        fn find(d: &D) -> Option<Spelling> {
            match d {
                D::ByteLevel(_) => Some(Spelling::ByteLevel),
                D::ByteFallback(_) | D::Metaspace(_) => Some(Spelling::ByteFallback),
                D::Sequence(seq) => seq.get_decoders().iter().find_map(find),
                _ => None,
            }
        }
        self.inner.get_decoder().and_then(find).ok_or_else(|| {
            Error::Unsupported(
                "constrained decoding needs a byte-level or byte-fallback tokenizer; this one decodes otherwise"
                    .into(),
            )
        })
    }

    /// The vocabulary as the grammar engine sees it, `n_vocab` ids long (the model's output
    /// size, which may exceed the tokenizer's): each token's bytes, control tokens apart, the
    /// end-of-turn tokens as its end.
    pub fn vocabulary(&self, n_vocab: usize) -> Result<spice_hf_grammar::Vocabulary> {
        let tokens = self.token_bytes(n_vocab)?;
        let eos: Vec<u32> = self
            .eos
            .iter()
            .copied()
            .filter(|&e| (e as usize) < tokens.len())
            .collect();
        Ok(spice_hf_grammar::Vocabulary::new(tokens, &eos)?)
    }

    /// What each of `max(n_vocab, vocab_size)` ids stands for: the bytes of text it decodes to,
    /// a control token, or nothing (an id past the tokenizer's, a string outside its alphabet).
    pub fn token_bytes(&self, n_vocab: usize) -> Result<Vec<spice_hf_grammar::Token>> {
        use spice_hf_grammar::Token;
        let spelling = self.spelling()?;
        let alphabet = byte_level_alphabet();
        let added = self.inner.get_added_tokens_decoder();
        let size = n_vocab.max(self.vocab_size());
        let mut tokens = Vec::with_capacity(size);
        for id in 0..size as u32 {
            if let Some(t) = added.get(&id) {
                tokens.push(if t.special {
                    Token::Special(t.content.clone())
                } else {
                    Token::Bytes(t.content.clone().into_bytes())
                });
                continue;
            }
            let Some(text) = self.inner.id_to_token(id) else {
                tokens.push(Token::Unused);
                continue;
            };
            let token = match spelling {
                Spelling::ByteLevel => text
                    .chars()
                    .map(|c| alphabet.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .map_or(Token::Unused, Token::Bytes),
                Spelling::ByteFallback => {
                    let hex = text
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .filter(|h| h.len() == 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => Token::Bytes(vec![b]),
                        None => Token::Bytes(text.replace('\u{2581}', " ").into_bytes()),
                    }
                }
            };
            tokens.push(token);
        }
        Ok(tokens)
    }
}

/// Byte ranges of `prompt` where each of `plain` (trimmed, in order) was rendered.
fn plain_spans(prompt: &str, plain: &[&str]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    for text in plain {
        let t = text.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(i) = prompt.get(from..).and_then(|rest| rest.find(t)) {
            spans.push((from + i, from + i + t.len()));
            from += i + t.len();
        }
    }
    spans
}
