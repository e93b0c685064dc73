//! The Burn Llama against an independent reference (tiny random model) on every backend the
//! build has, and the real SmolLM2 against the golden greedy ids of reference/models.md, from
//! GGUF and from safetensors.

use spice_hf_models::chat::{ChatTemplate, Message};
use spice_hf_models::generate::{FinishReason, Flow, GenerateParams, generate};
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::llama::Llama;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_models::weights::{LlamaConfig, load_gguf, load_safetensors_dir};
use spice_hf_testkit::fixtures;

use super::reference;

fn cpu() -> burn::tensor::Device {
    spice_hf_backend::BackendKind::Cpu.device().unwrap()
}

/// Every backend this build has, each forced (so wgpu runs on Mesa's software Vulkan in CI).
/// A compiled backend that cannot start fails the test rather than being left out.
fn compiled_devices() -> Vec<(spice_hf_backend::BackendKind, burn::tensor::Device)> {
    spice_hf_backend::BackendKind::ORDER
        .into_iter()
        .filter(|k| k.compiled())
        .map(|k| {
            let device = k
                .device()
                .unwrap_or_else(|e| panic!("{k} is compiled in but cannot start here: {e}"));
            (k, device)
        })
        .collect()
}

fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-12);
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs() / scale)
        .fold(0.0, f64::max)
}

#[test]
fn tiny_llama_logits_match_the_reference_forward_on_every_compiled_backend() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 9).unwrap();
    let cfg = LlamaConfig::from_hf_config(&dir.path().join("config.json")).unwrap();
    let ids: Vec<u32> = vec![1, 72, 101, 108, 108, 111, 33, 200, 7, 2];
    let want = reference::forward(&cfg, &load_safetensors_dir(dir.path()).unwrap(), &ids);
    let devices = compiled_devices();
    assert!(!devices.is_empty());
    for (kind, device) in devices {
        let weights = load_safetensors_dir(dir.path()).unwrap();
        let model = Llama::new(cfg.clone(), weights, 64, &device).unwrap();

        // Prefill of all positions at once.
        let mut cache = model.new_cache();
        let got = model.forward_all(&ids, &mut cache).unwrap();
        for (i, row) in want.iter().enumerate() {
            let err = max_rel_err(&got[i * cfg.vocab..(i + 1) * cfg.vocab], row);
            assert!(err < 1e-4, "{kind}: position {i}: relative error {err:e}");
        }
        // The same through the KV cache: 6 tokens of prefill then one token at a time.
        let mut cache = model.new_cache();
        model.forward(&ids[..6], &mut cache).unwrap();
        for (i, &t) in ids.iter().enumerate().skip(6) {
            let got = model.forward(&[t], &mut cache).unwrap();
            let err = max_rel_err(&got, &want[i]);
            assert!(
                err < 1e-4,
                "{kind}: cached step {i}: relative error {err:e}"
            );
        }
        assert_eq!(cache.len(), ids.len());
        // Past the context: a clear error, no panic.
        let mut small = model.new_cache();
        let too_long = vec![5u32; 65];
        assert!(
            model
                .forward(&too_long, &mut small)
                .unwrap_err()
                .to_string()
                .contains("context is full")
        );
        assert!(
            model
                .forward(&[10_000], &mut small)
                .unwrap_err()
                .to_string()
                .contains("outside the vocabulary")
        );
    }
}

const GOLDEN: [u32; 7] = [504, 3575, 282, 4649, 314, 7042, 30];

fn golden_run(model: &Llama, tok: &Tokenizer, tmpl: &ChatTemplate) {
    let prompt = tmpl
        .render(
            &[Message::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    let ids = tok.encode_prompt(&prompt).unwrap();
    let mut streamed = String::new();
    let out = generate(
        model,
        tok,
        &ids,
        &GenerateParams {
            max_tokens: 16,
            ..Default::default()
        },
        |t| {
            streamed.push_str(t);
            Flow::Continue
        },
    )
    .unwrap();
    assert_eq!(
        &out.token_ids[..GOLDEN.len()],
        &GOLDEN,
        "greedy ids {:?}",
        out.token_ids
    );
    assert_eq!(
        out.token_ids.get(GOLDEN.len()),
        Some(&2),
        "end of turn after the sentence"
    );
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, "The capital of France is Paris.");
    assert_eq!(streamed, out.text);
    assert_eq!(out.prompt_tokens, 37);
}

#[test]
fn smollm2_gguf_and_its_safetensors_conversion_answer_paris() {
    let Some(path) = fixtures::smollm2_gguf() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run `cargo xtask fixtures` first"
        );
        println!("SKIPPED: run `cargo xtask fixtures` to fetch the SmolLM2 GGUF");
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
    assert_eq!(
        (
            cfg.layers,
            cfg.heads,
            cfg.kv_heads,
            cfg.vocab,
            cfg.tie_embeddings
        ),
        (30, 9, 3, 49152, true)
    );
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let tmpl = ChatTemplate::from_gguf(&gguf).unwrap();
    let weights = load_gguf(&gguf, &cfg).unwrap();

    // The test kit's conversion: the dequantized, un-permuted weights as F32 safetensors.
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_safetensors(
        &dir.path().join("model.safetensors"),
        weights
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )
    .unwrap();

    let model = Llama::new(cfg.clone(), weights, 256, &cpu()).unwrap();
    golden_run(&model, &tok, &tmpl);
    drop(model);

    let from_st = load_safetensors_dir(dir.path()).unwrap();
    assert_eq!(from_st.len(), 272);
    let model = Llama::new(cfg, from_st, 256, &cpu()).unwrap();
    golden_run(&model, &tok, &tmpl);
}
