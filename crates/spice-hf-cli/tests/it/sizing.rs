//! Memory sizing through the binary on sparse GGUF files (a real layout, no weights): a 7B
//! Q4_K_M model is estimated at about its file's size plus the KV cache and fits a 24 GiB host;
//! a 70B one that cannot fit is refused by the preflight before anything is loaded.

use spice_hf_kernels::format::Format;
use spice_hf_testkit::gguf::{Meta, write_sparse_gguf};

use super::{output, spice, text};

/// GGUF metadata and a tensor table (GGUF name, PyTorch shape, format).
type Layout = (Vec<(&'static str, Meta)>, Vec<(String, Vec<usize>, Format)>);

/// Llama-2's tensor layout at `layers` x `hidden`, quantized like llama.cpp's Q4_K_M (Q6_K
/// for `attn_v` and `ffn_down` in half the layers and for the output, Q4_K elsewhere, F32
/// norms).
fn llama_layout(layers: usize, hidden: usize, ffn: usize, kv_heads: usize, heads: usize) -> Layout {
    let vocab = 32_000;
    let kv = hidden / heads * kv_heads;
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![vocab, hidden],
            Format::Q4K,
        ),
        ("output_norm.weight".to_string(), vec![hidden], Format::F32),
        (
            "output.weight".to_string(),
            vec![vocab, hidden],
            Format::Q6K,
        ),
    ];
    for l in 0..layers {
        let more_bits = if l % 2 == 0 { Format::Q6K } else { Format::Q4K };
        let p = |n: &str| format!("blk.{l}.{n}.weight");
        t.push((p("attn_norm"), vec![hidden], Format::F32));
        t.push((p("ffn_norm"), vec![hidden], Format::F32));
        t.push((p("attn_q"), vec![hidden, hidden], Format::Q4K));
        t.push((p("attn_k"), vec![kv, hidden], Format::Q4K));
        t.push((p("attn_v"), vec![kv, hidden], more_bits));
        t.push((p("attn_output"), vec![hidden, hidden], Format::Q4K));
        t.push((p("ffn_gate"), vec![ffn, hidden], Format::Q4K));
        t.push((p("ffn_up"), vec![ffn, hidden], Format::Q4K));
        t.push((p("ffn_down"), vec![hidden, ffn], more_bits));
    }
    let u = |v: usize| Meta::U32(v as u32);
    let meta = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("llama.context_length", u(4096)),
        ("llama.embedding_length", u(hidden)),
        ("llama.feed_forward_length", u(ffn)),
        ("llama.block_count", u(layers)),
        ("llama.attention.head_count", u(heads)),
        ("llama.attention.head_count_kv", u(kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.vocab_size", u(vocab)),
    ];
    (meta, t)
}

/// The number of GiB on the `estimate` output line that starts with `label` ("3.80 GiB").
fn gib(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in\n{out}"));
    let mut words = line[label.len()..].split_whitespace();
    let (n, unit) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("{line}"));
    match unit {
        "GiB" => n,
        "MiB" => n / 1024.0,
        "KiB" => n / 1048576.0,
        other => panic!("unit {other:?} in {line}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_7b_q4_k_m_is_estimated_near_its_file_size_and_fits_24_gib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-2-7b.Q4_K_M.gguf");
    let (meta, tensors) = llama_layout(32, 4096, 11008, 32, 32);
    let len = write_sparse_gguf(&path, &meta, &tensors).unwrap();
    let file_gib = len as f64 / (1u64 << 30) as f64;
    // llama.cpp's Llama-2-7B Q4_K_M is 3.8-4.1 GB; the layout above is that size.
    assert!((3.5..4.2).contains(&file_gib), "{file_gib} GiB");

    let mut c = spice("http://127.0.0.1:9", dir.path());
    c.arg("estimate").arg(&path).args(["--context", "4096"]);
    let out = output(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    let weights = gib(&out, "weights");
    let kv = gib(&out, "KV cache");
    let total = gib(&out, "total");
    // Weights as stored: the file's tensor bytes (within the printed rounding).
    assert!(
        (weights - file_gib).abs() < 0.02,
        "weights {weights} vs file {file_gib}\n{out}"
    );
    // f16 keys and values: 2 x 32 layers x 4096 x 4096 positions x 2 bytes = 2 GiB.
    assert!((kv - 2.0).abs() < 0.01, "{out}");
    assert!((total - (weights + kv) * 1.25).abs() < 0.05, "{out}");
    assert!(total < 24.0, "a 24 GiB host must admit it: {out}");

    // Three concurrent requests hold three caches; the Burn graph of GPU backends keeps the
    // weights decoded (4 or 2 bytes a parameter) and an f32 KV cache.
    let mut decoded = Vec::new();
    for held in ["f32", "f16"] {
        let mut c = spice("http://127.0.0.1:9", dir.path());
        c.arg("estimate").arg(&path).args([
            "--context",
            "4096",
            "--max-concurrency",
            "3",
            "--weights",
            held,
        ]);
        let out = output(c).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = text(&out.stdout);
        assert!((gib(&out, "KV cache") - 12.0).abs() < 0.01, "{out}");
        decoded.push(gib(&out, "weights"));
    }
    // ~6.7 G parameters: over 24 GiB in f32, half that in f16.
    assert!(decoded[0] > 24.0, "{decoded:?}");
    assert!((decoded[1] * 2.0 - decoded[0]).abs() < 0.02, "{decoded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_fit_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-70b.Q4_K_M.gguf");
    // 80 layers of hidden 8192 (Llama-2-70B's shape, GQA with 8 KV heads): ~40 GiB as Q4_K_M.
    let (meta, tensors) = llama_layout(80, 8192, 28672, 8, 64);
    let len = write_sparse_gguf(&path, &meta, &tensors).unwrap();
    assert!(len > 30 << 30, "{len}");
    let mut c = spice("http://127.0.0.1:9", dir.path());
    c.arg("run")
        .arg(&path)
        .args(["--prompt", "hi", "--context", "4096"]);
    let out = output(c).await;
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("needs about") && err.contains("use a smaller quantization"),
        "{err}"
    );
    // Refused from the header alone: the file has no tokenizer, so a load that got past the
    // preflight would have failed on that instead.
    assert!(!err.contains("tokenizer"), "{err}");
}

/// `estimate` names each architecture and its KV layout, from the tiny models transformers
/// built (the models crate's fixtures): Qwen3's 2 KV heads of 64 (wider heads than hidden /
/// heads), Gemma 3's one windowed layer of two counted at two windows; and a sentence encoder
/// has no KV cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_knows_each_architectures_kv_layout() {
    let archs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spice-hf-models/tests/data/archs");
    let home = tempfile::tempdir().unwrap();
    let run = |dir: std::path::PathBuf| {
        let mut c = spice("http://127.0.0.1:9", home.path());
        c.arg("estimate").arg(dir).args(["--context", "512"]);
        c
    };
    let out = output(run(archs.join("qwen3"))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    assert!(out.contains("(qwen3: 2 layers, hidden 256"), "{out}");
    // 2 layers x keys and values x 2 heads x 64 x 512 positions x 2 bytes = 512 KiB.
    assert!(out.contains("KV cache    512.00 KiB"), "{out}");
    assert!(out.contains("2 KV heads of 64)"), "{out}");
    let out = output(run(archs.join("gemma3"))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    // The global layer 512 positions, the local one 2 x 5: 522 x 2 x 2 x 64 x 2 bytes.
    assert!(out.contains("KV cache    261.00 KiB"), "{out}");
    assert!(
        out.contains("1 of 2 layers hold at most 2 x 5-position windows"),
        "{out}"
    );
    if let Some(minilm) = spice_hf_testkit::fixtures::minilm_dir_or_skip() {
        let out = output(run(minilm)).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = text(&out.stdout);
        assert!(
            out.contains("bert sentence encoder: 6 layers, 384 dimensions, mean pooling, normalized, at most 256 tokens"),
            "{out}"
        );
        assert!(out.contains("KV cache    none"), "{out}");
    }
}
