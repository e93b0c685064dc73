//! SentencePiece vocabularies in GGUF (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral 7B,
//! TinyLlama): a small BPE model trained by the `sentencepiece` library itself
//! (`tests/data/spm/golden.py`) written into a GGUF as llama.cpp stores one (pieces, scores,
//! token types); our tokenizer gives the ids `sentencepiece` gives (its dummy-prefix space,
//! byte fallback for what the vocabulary lacks, digits one at a time) and decodes them back.

use spice_hf_models::gguf::GgufFile;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::gguf::{Meta, gguf_bytes};

#[test]
fn a_sentencepiece_gguf_vocabulary_encodes_as_sentencepiece_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spm/golden.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let tokens: Vec<String> = g["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let scores: Vec<f32> = g["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let types: Vec<i32> = g["token_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    let meta = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("tokenizer.ggml.model", Meta::Str("llama".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.scores", Meta::F32s(scores)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(true)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spm.gguf");
    std::fs::write(&file, gguf_bytes(&meta, &[])).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&file).unwrap()).unwrap();
    assert_eq!(
        (tok.bos, tok.eos.as_slice(), tok.add_bos),
        (Some(1), &[2][..], true)
    );
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tok.decode(&got, true).unwrap(), text, "{text:?}");
    }
}
