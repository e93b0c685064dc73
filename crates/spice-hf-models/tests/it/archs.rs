//! The Llama family's relatives (Qwen2, Qwen3, Mistral, Gemma 3) against transformers itself: tiny
//! random models that `tests/data/archs/generate.py` built with transformers, saved with
//! `save_pretrained` and ran in float64 (prefill, then greedy decode steps through its cache).
//! Our logits for the same ids, on the packed CPU engine and on the Burn graph of every backend
//! the build has, from the safetensors and from the same weights written as GGUF (F32 exactly;
//! Q8_0 and Q4_K within their quantization error).

use std::path::{Path, PathBuf};

use spice_hf_kernels::format::Format;
use spice_hf_models::config::{Arch, LlamaConfig};
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::llama::{Compute, CpuOptions, KvDtype, Llama};
use spice_hf_models::tensors::TensorSet;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::gguf::gguf_from_hf_dir;

use super::llama::{F16_KV_TOLERANCE, compiled_devices, cpu, max_rel_err};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/archs")
        .join(name)
}

/// One prompt of the reference: the ids fed (prompt, then the decoded ones) and one row of
/// logits per id.
struct Case {
    ids: Vec<u32>,
    prompt_len: usize,
    logits: Vec<Vec<f64>>,
}

fn reference(dir: &Path) -> Vec<Case> {
    let bytes = std::fs::read(dir.with_extension("reference.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (0..)
        .map_while(|i| {
            let ids = st.tensor(&format!("p{i}.ids")).ok()?;
            let logits = st.tensor(&format!("p{i}.logits")).unwrap();
            let ids: Vec<u32> = ids
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
                .collect();
            let vocab = logits.shape()[1];
            let values: Vec<f64> = logits
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(logits.shape()[0], ids.len());
            Some(Case {
                prompt_len: meta[&format!("p{i}.prompt_len")].parse().unwrap(),
                logits: values.chunks_exact(vocab).map(<[f64]>::to_vec).collect(),
                ids,
            })
        })
        .collect()
}

/// Runs every case: the prompt as one prefill (every position's logits), then each decoded id
/// through the cache; the largest relative error of any row.
fn worst_error(model: &Llama, cases: &[Case]) -> f64 {
    let vocab = model.config().vocab;
    let mut worst = 0f64;
    for case in cases {
        let mut cache = model.new_cache();
        let prefill = model
            .forward_all(&case.ids[..case.prompt_len], &mut cache)
            .unwrap();
        for (got, want) in prefill.chunks_exact(vocab).zip(&case.logits) {
            worst = worst.max(max_rel_err(got, want));
        }
        for (i, &id) in case.ids.iter().enumerate().skip(case.prompt_len) {
            let got = model.forward(&[id], &mut cache).unwrap();
            worst = worst.max(max_rel_err(&got, &case.logits[i]));
        }
    }
    worst
}

const ARCHS: [(&str, Arch); 4] = [
    ("qwen2", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("mistral", Arch::Mistral),
    ("gemma3", Arch::Gemma3),
];

#[test]
fn each_architecture_matches_transformers_on_every_engine_and_backend() {
    for (name, arch) in ARCHS {
        let dir = fixture(name);
        let cfg = LlamaConfig::from_hf_config(&dir.join("config.json")).unwrap();
        assert_eq!(cfg.arch, arch);
        let cases = reference(&dir);
        assert_eq!(cases.len(), 3, "{name}: reference prompts");
        let tensors = TensorSet::from_safetensors_dir(&dir).unwrap();
        let f32_kv = |threads| Compute::Cpu(CpuOptions::new(threads).with_kv(KvDtype::F32));
        let mut engines: Vec<(String, Compute, f64)> = vec![
            ("packed, f32 KV, 1 thread".into(), f32_kv(1), 1e-4),
            ("packed, f32 KV, 2 threads".into(), f32_kv(2), 1e-4),
            ("packed, f16 KV".into(), Compute::cpu(2), F16_KV_TOLERANCE),
        ];
        engines.extend(
            compiled_devices()
                .into_iter()
                .map(|(kind, device)| (format!("burn on {kind}"), Compute::Burn(device), 1e-4)),
        );
        for (engine, compute, tol) in engines {
            let model = Llama::load(cfg.clone(), &tensors, 64, &compute).unwrap();
            let err = worst_error(&model, &cases);
            assert!(err < tol, "{name} on {engine}: relative error {err:e}");
        }
    }
}

/// How far quantizing the tiny models' weights moves their logits, relative to the largest
/// (measured against transformers: Q8_0 up to 2.9e-2, Q4_K up to 0.40 on Qwen3; their random
/// normal weights, in 4 bits, compound through both layers). The weak Q4_K bound is not what
/// proves the GGUF path: the packed engine must also equal the f32 graph over the same file's
/// weights dequantized to 1e-4, and the F32 GGUF must equal transformers to 1e-4.
const Q8_0_TOLERANCE: f64 = 5e-2;
/// See [`Q8_0_TOLERANCE`].
const Q4_K_TOLERANCE: f64 = 0.6;

#[test]
#[allow(clippy::print_stderr)] // Reason: the measured quantization error, where the runner shows it.
fn each_architecture_written_as_gguf_loads_and_agrees_with_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, arch) in ARCHS {
        let dir = fixture(name);
        let cases = reference(&dir);
        for (format, tol) in [
            (Format::F32, 1e-4),
            (Format::Q8_0, Q8_0_TOLERANCE),
            (Format::Q4K, Q4_K_TOLERANCE),
        ] {
            let path = tmp.path().join(format!("{name}-{format}.gguf"));
            std::fs::write(&path, gguf_from_hf_dir(&dir, format)).unwrap();
            let gguf = GgufFile::open(&path).unwrap();
            let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
            assert_eq!(cfg.arch, arch, "{name} as GGUF");
            // The same shape as config.json says (GGUF stores epsilon as an f32).
            let hf = LlamaConfig::from_hf_config(&dir.join("config.json")).unwrap();
            assert!((hf.rms_eps - cfg.rms_eps).abs() < 1e-12);
            let mut cfg = cfg;
            if let (Some(g), Some(h)) = (cfg.gemma.as_mut(), hf.gemma.as_ref()) {
                // llama.cpp's converter adds Gemma's norm offset to the weights it stores.
                assert_eq!((g.norm_offset, h.norm_offset), (0.0, 1.0));
                // GGUF has no key for `query_pre_attn_scalar`: llama.cpp takes the head size
                // (as every Gemma 3 but the 27B has it); the tiny model's 48 is set by hand.
                assert_eq!(g.query_pre_attn_scalar, cfg.head_dim as f64);
                g.query_pre_attn_scalar = h.query_pre_attn_scalar;
                g.norm_offset = h.norm_offset;
            }
            assert_eq!(
                cfg,
                LlamaConfig {
                    rms_eps: cfg.rms_eps,
                    ..hf
                }
            );
            if let Some(g) = cfg.gemma.as_mut() {
                g.norm_offset = 0.0;
            }
            let tensors = TensorSet::from_gguf(&gguf).unwrap();
            let f32_kv = Compute::Cpu(CpuOptions::new(2).with_kv(KvDtype::F32));
            let packed = Llama::load(cfg.clone(), &tensors, 64, &f32_kv).unwrap();
            // Against transformers on the F16 weights: the quantization's error.
            let err = worst_error(&packed, &cases);
            eprintln!("{name} as {format} GGUF: relative error {err:e} against transformers");
            assert!(err < tol, "{name} as {format} GGUF: {err:e}");
            // Against the f32 graph over the same file's weights dequantized: the packed
            // kernels compute exactly that model (the GGUF's layout and names read right).
            let dequantized = Llama::load(cfg, &tensors, 64, &Compute::Burn(cpu())).unwrap();
            for case in &cases {
                let want: Vec<f64> = dequantized
                    .forward_all(&case.ids, &mut dequantized.new_cache())
                    .unwrap()
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let got = packed
                    .forward_all(&case.ids, &mut packed.new_cache())
                    .unwrap();
                let err = max_rel_err(&got, &want);
                assert!(
                    err < 1e-4,
                    "{name} as {format}: packed against dequantized {err:e}"
                );
            }
            assert!(Tokenizer::from_gguf(&gguf).is_ok());
        }
    }
}

#[test]
fn an_architecture_we_do_not_implement_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(fixture("qwen2").join("config.json")).unwrap();
    for (from, to, says) in [
        (
            r#""model_type": "qwen2""#,
            r#""model_type": "phi3""#,
            "\"phi3\"",
        ),
        (
            r#""model_type": "qwen2""#,
            r#""model_type": "qwen3_moe""#,
            "\"qwen3_moe\"",
        ),
        (
            r#""hidden_act": "silu""#,
            r#""hidden_act": "gelu""#,
            "hidden_act \"gelu\"",
        ),
        (
            r#""use_sliding_window": false"#,
            r#""use_sliding_window": true"#,
            "use_sliding_window",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let path = tmp.path().join("config.json");
        std::fs::write(&path, base.replace(from, to)).unwrap();
        let err = LlamaConfig::from_hf_config(&path).unwrap_err().to_string();
        assert!(err.contains(says), "{to}: {err}");
        assert!(
            err.contains("qwen2, qwen3") || !says.starts_with('"'),
            "{err}"
        );
    }
    // Gemma 3's options we do not implement.
    let gemma = std::fs::read_to_string(fixture("gemma3").join("config.json")).unwrap();
    for (from, to, says) in [
        (
            r#""final_logit_softcapping": null"#,
            r#""final_logit_softcapping": 30.0"#,
            "soft-capping",
        ),
        (
            r#""hidden_activation": "gelu_pytorch_tanh""#,
            r#""hidden_activation": "silu""#,
            "hidden_act \"silu\"",
        ),
        (
            r#""sliding_attention",
    "full_attention""#,
            r#""sliding_attention",
    "chunked_attention""#,
            "chunked_attention",
        ),
    ] {
        assert!(gemma.contains(from), "{from}");
        let path = tmp.path().join("config.json");
        std::fs::write(&path, gemma.replace(from, to)).unwrap();
        let err = LlamaConfig::from_hf_config(&path).unwrap_err().to_string();
        assert!(err.contains(says), "{to}: {err}");
    }
}

/// Mistral's and Gemma 3's windowed layers on the packed engine forget what no query can see
/// any more: over 60 positions (12 windows of the tiny models) the cache holds at most two
/// windows per windowed layer, and every step's logits stay those of the Burn graph, whose
/// cache keeps every position and masks the window instead. The footprint counts the same.
#[test]
fn a_sliding_window_layer_holds_at_most_two_windows_and_answers_as_the_whole_cache_does() {
    use spice_hf_models::footprint::{Footprint, Usage};
    for name in ["mistral", "gemma3"] {
        let dir = fixture(name);
        let cfg = LlamaConfig::from_hf_config(&dir.join("config.json")).unwrap();
        let w = cfg.sliding_window.unwrap();
        let windowed = (0..cfg.layers).filter(|&l| cfg.window(l).is_some()).count();
        assert!(windowed > 0);
        let tensors = TensorSet::from_safetensors_dir(&dir).unwrap();
        let f32_kv = Compute::Cpu(CpuOptions::new(2).with_kv(KvDtype::F32));
        let packed = Llama::load(cfg.clone(), &tensors, 128, &f32_kv).unwrap();
        let whole = Llama::load(cfg.clone(), &tensors, 128, &Compute::Burn(cpu())).unwrap();
        let ids: Vec<u32> = (0..60u32).map(|i| 3 + (i * 37) % 250).collect();
        let (mut a, mut b) = (packed.new_cache(), whole.new_cache());
        packed.forward(&ids[..7], &mut a).unwrap();
        whole.forward(&ids[..7], &mut b).unwrap();
        let row = cfg.kv_dim() * 4 * 2; // keys and values of one position, f32
        for (n, &id) in ids.iter().enumerate().skip(7) {
            let got = packed.forward(&[id], &mut a).unwrap();
            let want: Vec<f64> = whole
                .forward(&[id], &mut b)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let err = max_rel_err(&got, &want);
            assert!(err < 1e-4, "{name} at position {n}: {err:e}");
            let held = n + 1;
            let bound = row * (windowed * held.min(2 * w) + (cfg.layers - windowed) * held);
            let bytes = a.bytes().unwrap();
            assert!(
                bytes <= bound,
                "{name} at {held} positions: {bytes} > {bound}"
            );
        }
        assert!(
            a.bytes().unwrap() < row * cfg.layers * ids.len(),
            "{name}: nothing was forgotten"
        );
        let usage = Usage {
            kv: KvDtype::F32,
            ..Usage::new(ids.len())
        };
        let estimate = Footprint::estimate(&cfg, 0, 0, &usage).kv_cache_bytes;
        assert_eq!(
            estimate as usize,
            row * (windowed * 2 * w + (cfg.layers - windowed) * ids.len()),
            "{name}"
        );
    }
}
