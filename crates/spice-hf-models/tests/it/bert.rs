//! The real all-MiniLM-L6-v2 (sentence-transformers layout: BERT, mean pooling, Normalize)
//! against sentence-transformers itself (`tests/data/minilm/golden.py`, float64): the WordPiece
//! ids of every sentence, and the vectors within 1e-4 (cosine >= 0.99999), on every backend
//! the build has; a batch of 32 equals the same inputs one at a time; repositories that do
//! not say how to pool, or ship only a pickle, are refused by name.

use spice_hf_models::bert::{Bert, Pooling};
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_testkit::fixtures;

use super::llama::compiled_devices;

fn golden() -> Vec<(String, Vec<u32>, Vec<f64>)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm/golden.json");
    let g: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect(),
                c["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
#[allow(clippy::print_stderr)] // Reason: the measured agreement, where the runner shows it.
fn minilm_vectors_match_sentence_transformers_on_every_backend() {
    let Some(dir) = fixtures::minilm_dir_or_skip() else {
        return;
    };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let cases = golden();
    assert!(cases.len() >= 8);
    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|(text, want, _)| {
            let got = tok.encode_with_special_tokens(text).unwrap();
            assert_eq!(&got, want, "{text}");
            got
        })
        .collect();
    for (kind, device) in compiled_devices() {
        let model = Bert::load(&dir, &device).unwrap();
        assert_eq!(model.spec().pooling, Pooling::Mean);
        assert!(model.spec().normalize);
        assert_eq!(model.spec().max_tokens, 256);
        assert_eq!(model.dimensions(), 384);
        // One forward pass over every sentence (padded to the longest).
        let got = model.embed(&ids).unwrap();
        let (mut worst, mut least) = (0f64, 1f64);
        for ((text, _, want), got) in cases.iter().zip(&got) {
            let err = got
                .iter()
                .zip(want)
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max);
            let cos = cosine(got, want);
            assert!(err < 1e-4, "{kind}: {text}: largest difference {err:e}");
            assert!(cos >= 0.99999, "{kind}: {text}: cosine {cos}");
            (worst, least) = (worst.max(err), least.min(cos));
        }
        eprintln!("{kind}: largest difference {worst:e}, lowest cosine {least}");
    }
}

#[test]
fn a_batch_of_32_equals_the_same_inputs_one_at_a_time_and_a_large_one_runs_in_bounded_passes() {
    let Some(dir) = fixtures::minilm_dir_or_skip() else {
        return;
    };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let cases = golden();
    // 32 inputs of many lengths (padding up to 30 positions for the shortest).
    let texts: Vec<String> = (0..32)
        .map(|i| {
            let (t, _, _) = &cases[i % cases.len()];
            format!("{t} {}", "and more ".repeat(i / cases.len() * 3))
        })
        .collect();
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode_with_special_tokens(t).unwrap())
        .collect();
    let (shortest, longest) = (
        ids.iter().map(Vec::len).min().unwrap(),
        ids.iter().map(Vec::len).max().unwrap(),
    );
    assert!(longest >= shortest + 20, "{shortest}..{longest}");
    let model = Bert::load(&dir, &super::llama::cpu()).unwrap();
    let batch = model.embed(&ids).unwrap();
    for (i, one) in ids.iter().enumerate() {
        let alone = model.embed(std::slice::from_ref(one)).unwrap();
        let err = alone[0]
            .iter()
            .zip(&batch[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "input {i} ({} tokens): {err:e}", one.len());
    }
    // 50 inputs of 250 tokens exceed one pass's score budget (42 such inputs): they run in
    // two passes, and each vector is still the one the input gets alone.
    let long: Vec<Vec<u32>> = (0..50)
        .map(|i| {
            let mut ids = vec![101];
            ids.extend((0..248).map(|j| 1000 + ((i * 7 + j * 13) % 20000) as u32));
            ids.push(102);
            ids
        })
        .collect();
    let per_pass = spice_hf_models::bert::MAX_SCORES / (12 * 250 * 250);
    assert!(per_pass < long.len(), "{per_pass}");
    let many = model.embed(&long).unwrap();
    assert_eq!(many.len(), long.len());
    for i in [0, per_pass - 1, per_pass, long.len() - 1] {
        let alone = model.embed(std::slice::from_ref(&long[i])).unwrap();
        let err = alone[0]
            .iter()
            .zip(&many[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "long input {i}: {err:e}");
    }
    // Longer than the model's 256 tokens: an error, never a cut.
    let long = tok
        .encode_with_special_tokens(&"word ".repeat(300))
        .unwrap();
    let err = model.embed(&[long]).unwrap_err().to_string();
    assert!(err.contains("256"), "{err}");
}

#[test]
fn a_repository_that_does_not_say_how_to_pool_or_ships_a_pickle_is_refused_by_name() {
    let Some(src) = fixtures::minilm_dir_or_skip() else {
        return;
    };
    let device = super::llama::cpu();
    let copy = |skip: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "modules.json",
            "sentence_bert_config.json",
        ] {
            if !skip.contains(&f) {
                std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        if !skip.contains(&"1_Pooling/config.json") {
            std::fs::copy(
                src.join("1_Pooling/config.json"),
                dir.path().join("1_Pooling/config.json"),
            )
            .unwrap();
        }
        dir
    };
    // Only pytorch_model.bin: the error says what is missing and why the pickle is not read.
    let dir = copy(&[]);
    std::fs::write(dir.path().join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
    let err = Bert::load(dir.path(), &device).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("pytorch_model.bin"),
        "{err}"
    );
    // No modules.json: the pooling is not guessed.
    let dir = copy(&["modules.json"]);
    let err = Bert::load(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("modules.json"), "{err}");
    // A pooling mode we do not implement.
    let dir = copy(&[]);
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"pooling_mode_weightedmean_tokens": true}"#,
    )
    .unwrap();
    let err = Bert::load(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("weightedmean"), "{err}");
}
