//! Constrained decoding on the real SmolLM2: the vocabulary handed to the grammar engine spells
//! every token as the tokenizer decodes it, and answers sampled at temperature 1 under a JSON
//! Schema always parse and validate.

use serde_json::{Value, json};
use spice_hf_grammar::{Constraint, Token};
use spice_hf_models::chat::{ChatTemplate, Message};
use spice_hf_models::config::LlamaConfig;
use spice_hf_models::generate::{FinishReason, Flow, GenerateParams, generate_guided};
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::llama::{Compute, Llama};
use spice_hf_models::sampling::SamplingParams;
use spice_hf_models::tensors::TensorSet;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::fixtures;

#[test]
fn the_grammar_vocabulary_spells_tokens_as_the_tokenizer_decodes_them() {
    let Some(path) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let tokens = tok.token_bytes(49152).unwrap();
    assert_eq!(tokens.len(), 49152);
    let mut checked = 0;
    for (id, t) in tokens.iter().enumerate() {
        let decoded = tok.decode(&[id as u32], false).unwrap();
        match t {
            Token::Bytes(b) => {
                // A token that is part of a UTF-8 character decodes to U+FFFD on its own.
                if !decoded.contains('\u{FFFD}') {
                    assert_eq!(b.as_slice(), decoded.as_bytes(), "token {id}");
                    checked += 1;
                }
            }
            Token::Special(name) => assert_eq!(name, &decoded, "token {id}"),
            Token::Unused => panic!("token {id} ({decoded:?}) has no spelling"),
        }
    }
    assert!(checked > 48_000, "{checked}");
    // Multi-byte characters split across tokens join back into the decoded text.
    let ids = tok.encode("naïve café — 東京 🙂").unwrap();
    let joined: Vec<u8> = ids
        .iter()
        .flat_map(|&i| match &tokens[i as usize] {
            Token::Bytes(b) => b.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        String::from_utf8(joined).unwrap(),
        tok.decode(&ids, false).unwrap()
    );
    assert!(matches!(tokens[2], Token::Special(ref n) if n == "<|im_end|>"));
    // The tiny fixture's tokenizer.json (byte-level too) and a padded output size.
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 1).unwrap();
    let tiny = Tokenizer::from_dir(dir.path()).unwrap();
    let padded = tiny.token_bytes(tiny.vocab_size() + 3).unwrap();
    assert_eq!(padded.len(), tiny.vocab_size() + 3);
    assert_eq!(padded.last(), Some(&Token::Unused));
}

#[test]
fn smollm2_answers_under_a_json_schema_always_parse_and_validate() {
    let Some(path) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let tensors = TensorSet::from_gguf(&gguf).unwrap();
    let model = Llama::load(cfg.clone(), &tensors, 512, &Compute::cpu(2)).unwrap();
    let vocab = tok.vocabulary(cfg.vocab).unwrap();
    let prompt = ChatTemplate::from_gguf(&gguf)
        .unwrap()
        .render(
            &[Message::new("user", "Describe a fictional person as JSON.")],
            true,
        )
        .unwrap();
    let ids = tok.encode_prompt(&prompt).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "mood": {"enum": ["happy", "sad", "calm"]}
        },
        "required": ["name", "age", "mood"],
        "additionalProperties": false
    });
    for seed in 0..4 {
        let mut guide = vocab
            .guide(&Constraint::JsonSchema(schema.clone()))
            .unwrap();
        let params = GenerateParams {
            sampling: SamplingParams {
                temperature: 1.0,
                seed: Some(seed),
                ..Default::default()
            },
            max_tokens: 200,
            ..Default::default()
        };
        let mut streamed = String::new();
        let out = generate_guided(&model, &tok, &ids, &params, Some(&mut guide), |t| {
            streamed.push_str(t);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(out.finish_reason, FinishReason::Stop, "{}", out.text);
        assert_eq!(streamed, out.text);
        let v: Value =
            serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{:?}: {e}", out.text));
        assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");
        assert!(
            ["happy", "sad", "calm"].contains(&v["mood"].as_str().unwrap()),
            "{v}"
        );
        assert_eq!(v.as_object().unwrap().len(), 3);
    }
}

#[test]
fn a_mask_that_allows_nothing_ends_the_generation_with_an_error() {
    // A vocabulary without the byte the constraint needs first: the mask is empty at the first
    // step, and the generation returns that error instead of sampling from nothing.
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 2).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let files = spice_hf_models::loaded::ModelFiles::open(dir.path()).unwrap();
    let loaded = files.load(64, &Compute::cpu(1)).unwrap();
    let n = loaded.model.config().vocab;
    let tokens: Vec<Token> = tok
        .token_bytes(n)
        .unwrap()
        .into_iter()
        .map(|t| match t {
            Token::Bytes(b) if b.contains(&b'z') => Token::Unused,
            other => other,
        })
        .collect();
    let vocab = spice_hf_grammar::Vocabulary::new(tokens, &tok.eos).unwrap();
    let mut guide = vocab.guide(&Constraint::Regex("z+".into())).unwrap();
    let ids = tok.encode_prompt("hello").unwrap();
    let err = generate_guided(
        &loaded.model,
        &tok,
        &ids,
        &GenerateParams::default(),
        Some(&mut guide),
        |_| Flow::Continue,
    )
    .unwrap_err();
    assert!(err.to_string().contains("allows no token"), "{err}");
}
