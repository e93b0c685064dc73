//! What the fixtures did not cover: safetensors stored as F16 and BF16, Llama 3 `rope_scaling`,
//! and GGUF version 2, each on the packed CPU engine and Burn's graph against the independent
//! f64 reference.

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use spice_hf_models::config::LlamaConfig;
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::llama::{Compute, CpuOptions, KvDtype, Llama};
use spice_hf_models::tensors::TensorSet;
use spice_hf_models::weights::load_safetensors_dir;
use spice_hf_testkit::fixtures::{self, TinyShape};

use super::llama::{cpu, max_rel_err};
use super::reference;

/// 40 positions, so that slow rotary frequencies turn far enough to matter.
fn ids() -> Vec<u32> {
    (0..40u32).map(|i| 3 + (i * 37) % 250).collect()
}

/// The largest relative difference between two references' logits, over all positions.
fn largest_change(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| max_rel_err(&a.iter().map(|&v| v as f32).collect::<Vec<_>>(), b))
        .fold(0.0, f64::max)
}

/// Loads `tensors` on the packed engine (f32 KV cache) and Burn's CPU graph and checks every
/// position's logits against `want`.
fn check_engines(what: &str, cfg: &LlamaConfig, tensors: &TensorSet, want: &[Vec<f64>]) {
    let ids = ids();
    let engines = [
        (
            "packed",
            Compute::Cpu(CpuOptions::new(2).with_kv(KvDtype::F32)),
        ),
        ("burn", Compute::Burn(cpu())),
    ];
    for (name, compute) in engines {
        let model = Llama::load(cfg.clone(), tensors, 64, &compute).unwrap();
        let mut cache = model.new_cache();
        let got = model.forward_all(&ids, &mut cache).unwrap();
        for (i, row) in want.iter().enumerate() {
            let err = max_rel_err(&got[i * cfg.vocab..(i + 1) * cfg.vocab], row);
            assert!(
                err < 1e-4,
                "{what}, {name}: position {i}: relative error {err:e}"
            );
        }
    }
}

/// The tiny Llama stored as F16 and as BF16 safetensors runs as the values those formats round
/// to. The reference gets the rounded values from `half` (not from the crate's loader), written
/// as an F32 file.
#[test]
fn safetensors_f16_and_bf16_run_as_the_values_they_round_to() {
    let tensors = fixtures::tiny_tensors(9, TinyShape::TINY);
    for dtype in [Dtype::F16, Dtype::BF16] {
        type Round = fn(f32) -> f32;
        type Encode = fn(f32) -> [u8; 2];
        let (round, encode): (Round, Encode) = match dtype {
            Dtype::F16 => (
                |x| f16::from_f32(x).to_f32(),
                |x| f16::from_f32(x).to_le_bytes(),
            ),
            _ => (
                |x| bf16::from_f32(x).to_f32(),
                |x| bf16::from_f32(x).to_le_bytes(),
            ),
        };
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_tiny_llama(dir.path(), 9).unwrap();
        let half_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    s.clone(),
                    d.iter().flat_map(|&x| encode(x)).collect(),
                )
            })
            .collect();
        let views = half_bytes
            .iter()
            .map(|(n, s, d)| (n.clone(), TensorView::new(dtype, s.clone(), d).unwrap()))
            .collect::<Vec<_>>();
        std::fs::write(
            dir.path().join("model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        // The file really holds 2-byte values of that type.
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(parsed.tensors().iter().all(|(_, t)| t.dtype() == dtype));

        let rounded = tempfile::tempdir().unwrap();
        let values: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(n, s, d)| (n.clone(), s.clone(), d.iter().map(|&x| round(x)).collect()))
            .collect();
        fixtures::write_safetensors(
            &rounded.path().join("model.safetensors"),
            values
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
        )
        .unwrap();
        let cfg = LlamaConfig::from_hf_config(&dir.path().join("config.json")).unwrap();
        let want = reference::forward(&cfg, &load_safetensors_dir(rounded.path()).unwrap(), &ids());
        // The loader's own f32 view of the 2-byte file agrees with `half`, value for value.
        let loaded = load_safetensors_dir(dir.path()).unwrap();
        for (n, _, d) in &values {
            assert_eq!(&loaded[n.as_str()].data, d, "{dtype:?} {n}");
        }
        check_engines(
            &format!("{dtype:?}"),
            &cfg,
            &TensorSet::from_safetensors_dir(dir.path()).unwrap(),
            &want,
        );
    }
}

/// A `rope_scaling` of type `llama3` in `config.json`, with the original context set so the
/// tiny model's 8 rotary frequencies fall in all three bands of the formula (kept, divided,
/// interpolated): both engines match the reference, which implements the formula itself, and
/// the scaling changes the logits (the test would notice an engine that ignored it).
#[test]
fn llama3_rope_scaling_matches_the_published_formula() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 5).unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["rope_scaling"] = serde_json::json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 256
    });
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let cfg = LlamaConfig::from_hf_config(&path).unwrap();
    let weights = load_safetensors_dir(dir.path()).unwrap();

    let plain = reference::inv_freq(cfg.rope_theta, cfg.head_dim(), None);
    let scaled = reference::inv_freq(
        cfg.rope_theta,
        cfg.head_dim(),
        Some(&config["rope_scaling"]),
    );
    let (mut kept, mut divided, mut between) = (0, 0, 0);
    for (p, s) in plain.iter().zip(&scaled) {
        if (p - s).abs() < 1e-15 {
            kept += 1;
        } else if (p / 8.0 - s).abs() < 1e-15 {
            divided += 1;
        } else {
            assert!(s < p && *s > p / 8.0);
            between += 1;
        }
    }
    assert!(
        kept > 0 && divided > 0 && between > 0,
        "{plain:?} -> {scaled:?}"
    );

    let ids = ids();
    let want = reference::forward_with(&cfg, &weights, &ids, &scaled);
    let unscaled = reference::forward(&cfg, &weights, &ids);
    let moved = largest_change(&want, &unscaled);
    assert!(
        moved > 1e-3,
        "the scaling barely changes the logits ({moved:e})"
    );
    check_engines(
        "llama3 rope_scaling",
        &cfg,
        &TensorSet::from_safetensors_dir(dir.path()).unwrap(),
        &want,
    );
}

/// GGUF version 2 (what llama.cpp wrote before big-endian files got version 3; the layout is
/// the same): the version is reported and the model gives exactly the v3 file's logits.
/// Version 1 (32-bit counts) is refused by name.
/// A `config.json` is read with a cap: a hostile repository's huge one (valid JSON, padded)
/// is refused with its name instead of being read into memory; a field of the wrong type is
/// an error naming it, never a default.
#[test]
fn an_oversized_or_mistyped_config_json_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_tiny_llama(dir.path(), 5).unwrap();
    let path = dir.path().join("config.json");
    let good = std::fs::read_to_string(&path).unwrap();
    assert!(LlamaConfig::from_hf_config(&path).is_ok());
    let padded = format!(
        "{}{}",
        " ".repeat(spice_hf_models::config::MAX_CONFIG_BYTES as usize),
        good
    );
    std::fs::write(&path, padded).unwrap();
    let err = LlamaConfig::from_hf_config(&path).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("larger than"),
        "{err}"
    );
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["rope_theta"] = "a lot".into();
    std::fs::write(&path, v.to_string()).unwrap();
    let err = LlamaConfig::from_hf_config(&path).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn gguf_version_2_loads_like_version_3_and_version_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = spice_hf_testkit::gguf::tiny_llama_gguf(
        4,
        TinyShape::TINY,
        spice_hf_kernels::format::Format::Q8_0,
    );
    assert_eq!(&v3[..8], b"GGUF\x03\0\0\0");
    let logits = |version: u32| {
        let mut bytes = v3.clone();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let path = dir.path().join(format!("v{version}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let gguf = GgufFile::open(&path)?;
        assert_eq!(gguf.version, version);
        let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
        let tensors = TensorSet::from_gguf(&gguf).unwrap();
        let model = Llama::load(cfg, &tensors, 64, &Compute::cpu(1)).unwrap();
        let mut cache = model.new_cache();
        Ok::<_, spice_hf_models::Error>(model.forward_all(&ids(), &mut cache).unwrap())
    };
    assert_eq!(logits(2).unwrap(), logits(3).unwrap());
    let err = logits(1).unwrap_err().to_string();
    assert!(err.contains("GGUF version 1 is not supported"), "{err}");
}

/// Llama 3.1 and later GGUFs carry their RoPE scaling as a `rope_freqs.weight` tensor (one
/// divisor per rotary frequency) rather than metadata. Both engines divide the frequencies by
/// it, as the reference does; a tensor of the wrong length or with a zero is refused by name.
#[test]
fn gguf_rope_freqs_divide_the_rotary_frequencies() {
    use spice_hf_kernels::format::Format;
    use spice_hf_testkit::gguf::{GgufTensor, tiny_llama_gguf_with};
    let dir = tempfile::tempdir().unwrap();
    let shape = TinyShape::TINY;
    let half_dim = shape.hidden / shape.heads / 2;
    let write = |name: &str, factors: &[f32]| {
        let path = dir.path().join(name);
        let rope_freqs = GgufTensor {
            name: "rope_freqs.weight".into(),
            shape: vec![factors.len()],
            format: Format::F32,
            data: factors.iter().flat_map(|f| f.to_le_bytes()).collect(),
        };
        std::fs::write(
            &path,
            tiny_llama_gguf_with(6, shape, Format::F32, vec![rope_freqs]),
        )
        .unwrap();
        GgufFile::open(&path).unwrap()
    };
    // Llama 3.1's pattern in small: fast frequencies kept, slow ones divided by 8.
    let factors: Vec<f32> = (0..half_dim)
        .map(|i| [1.0, 1.0, 1.0, 2.5, 8.0, 8.0, 8.0, 8.0][i])
        .collect();
    let gguf = write("scaled.gguf", &factors);
    let cfg = LlamaConfig::from_gguf(&gguf).unwrap();
    assert_eq!(
        cfg.rope_freq_factors.as_deref(),
        Some(
            factors
                .iter()
                .map(|&f| f64::from(f))
                .collect::<Vec<_>>()
                .as_slice()
        )
    );
    let weights = spice_hf_models::weights::load_gguf(&gguf, &cfg).unwrap();
    let freqs: Vec<f64> = reference::inv_freq(cfg.rope_theta, cfg.head_dim(), None)
        .iter()
        .zip(&factors)
        .map(|(f, d)| f / f64::from(*d))
        .collect();
    let want = reference::forward_with(&cfg, &weights, &ids(), &freqs);
    let unscaled = reference::forward(&cfg, &weights, &ids());
    let moved = largest_change(&want, &unscaled);
    assert!(
        moved > 1e-3,
        "the factors barely change the logits ({moved:e})"
    );
    check_engines(
        "rope_freqs",
        &cfg,
        &TensorSet::from_gguf(&gguf).unwrap(),
        &want,
    );

    let short = write("short.gguf", &factors[..3]);
    let err = LlamaConfig::from_gguf(&short)
        .and_then(|c| c.validate())
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_freqs.weight has 3 values"), "{err}");
    let mut zero = factors.clone();
    zero[2] = 0.0;
    let err = LlamaConfig::from_gguf(&write("zero.gguf", &zero))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_freqs.weight holds 0"), "{err}");
}

/// The estimate, component by component, against numbers worked out by hand for the tiny
/// Llama (hidden 64, MLP 128, 2 layers, 4 heads, 2 KV heads, vocabulary 259, untied head):
/// 107,200 parameters (16,576 embedding + 2 x 36,992 per layer + 64 norm + 16,576 head).
#[test]
fn the_footprint_matches_a_hand_computed_table() {
    use spice_hf_kernels::format::Format;
    use spice_hf_models::footprint::{Usage, WeightStorage};
    use spice_hf_models::loaded::ModelFiles;
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    fixtures::write_tiny_llama(&st, 1).unwrap();
    let q8 = dir.path().join("tiny-q8.gguf");
    spice_hf_testkit::gguf::write_tiny_llama_gguf(&q8, 1, TinyShape::TINY, Format::Q8_0).unwrap();
    let usage = |context, sequences, storage| Usage {
        context,
        sequences,
        headroom: 0.25,
        storage,
        kv: KvDtype::F16,
    };
    // (files, usage, parameters, file bytes, weights in memory, KV cache, headroom)
    let table = [
        // F32 file, packed: weights as stored; KV 2 (K, V) x 2 layers x 32 x 64 x 3 x 2 bytes.
        (
            &st,
            usage(64, 3, WeightStorage::Packed),
            107_200,
            428_800,
            428_800,
            49_152,
            119_488,
        ),
        // Decoded to f32: 4 bytes a parameter, f32 KV (twice the bytes).
        (
            &st,
            usage(64, 3, WeightStorage::F32),
            107_200,
            428_800,
            428_800,
            98_304,
            131_776,
        ),
        // Q8_0: 106,880 matrix values in 3,340 blocks of 34 bytes, plus 320 f32 norm values.
        (
            &q8,
            usage(256, 1, WeightStorage::Packed),
            107_200,
            114_840,
            114_840,
            65_536,
            45_094,
        ),
        // Packed with an f32 KV cache (`--kv-cache f32`): twice the cache, 25 % more headroom on it.
        (
            &q8,
            Usage {
                kv: KvDtype::F32,
                ..usage(256, 1, WeightStorage::Packed)
            },
            107_200,
            114_840,
            114_840,
            131_072,
            61_478,
        ),
        // The same decoded to f32 for a GPU: the file's size no longer matters.
        (
            &q8,
            usage(256, 1, WeightStorage::F32),
            107_200,
            114_840,
            428_800,
            131_072,
            139_968,
        ),
    ];
    for (path, usage, params, file, weights, kv, headroom) in table {
        let f = ModelFiles::open(path).unwrap().footprint(&usage).unwrap();
        let what = format!("{} {usage:?}", path.display());
        assert_eq!(f.parameters, params, "{what}");
        assert_eq!(f.file_bytes, file, "{what}");
        assert_eq!(f.weights_bytes, weights, "{what}");
        assert_eq!(f.kv_cache_bytes, kv, "{what}");
        assert_eq!(f.headroom_bytes, headroom, "{what}");
        assert_eq!(f.total(), weights + kv + headroom, "{what}");
    }
}
