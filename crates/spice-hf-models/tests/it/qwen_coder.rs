//! The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0, Q8_0, Q4_K and Q6_K tensors) against
//! transformers loading the same file (`tests/data/qwen2.5-coder/golden.py`, float64): the
//! chat template's text, the GGUF tokenizer's ids (its `qwen2` pre-tokenizer) and 32 greedy ids
//! for each of 3 prompts on the packed CPU engine.

use spice_hf_models::chat::{ChatTemplate, Message};
use spice_hf_models::config::{Arch, LlamaConfig};
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::llama::{Compute, CpuOptions, KvDtype, Llama};
use spice_hf_models::tensors::TensorSet;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::fixtures;

fn golden() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/qwen2.5-coder/golden.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn qwen_coder_gguf_answers_as_transformers_does_on_the_same_file() {
    let Some(path) = fixtures::qwen_coder_gguf_or_skip() else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
    assert_eq!(
        (cfg.arch, cfg.layers, cfg.heads, cfg.kv_heads, cfg.qkv_bias),
        (Arch::Qwen2, 24, 14, 2, true)
    );
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf).expect("the GGUF carries a chat template");
    let tensors = TensorSet::from_gguf(&gguf).unwrap();
    let compute = Compute::Cpu(CpuOptions::new(2).with_kv(KvDtype::F32));
    let model = Llama::load(cfg, &tensors, 512, &compute).unwrap();
    for case in golden()["cases"].as_array().unwrap() {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let text = template.render(&messages, true).unwrap();
        assert_eq!(text, case["prompt_text"].as_str().unwrap());
        let prompt = tok.encode(&text).unwrap();
        assert_eq!(prompt, ids(&case["prompt_ids"]), "{text}");
        let want = ids(&case["generated_ids"]);
        let mut cache = model.new_cache();
        let mut logits = model.forward(&prompt, &mut cache).unwrap();
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap();
            got.push(next);
            logits = model.forward(&[next], &mut cache).unwrap();
        }
        assert_eq!(
            got,
            want,
            "{:?} vs {:?}",
            tok.decode(&got, false).unwrap(),
            case["generated_text"]
        );
    }
}
