//! Hostile model files, written to disk and opened the way `spice-hf estimate` and `run` open
//! them: each is a clear error, never a panic or an allocation the file's size does not
//! justify.

use spice_hf_kernels::format::Format;
use spice_hf_models::footprint::Usage;
use spice_hf_models::loaded::ModelFiles;
use spice_hf_testkit::gguf::{Meta, write_sparse_gguf};

fn llama_meta(heads: u32, vocab: Option<u32>) -> Vec<(&'static str, Meta)> {
    let mut m = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("llama.context_length", Meta::U32(256)),
        ("llama.embedding_length", Meta::U32(64)),
        ("llama.feed_forward_length", Meta::U32(128)),
        ("llama.block_count", Meta::U32(1)),
        ("llama.attention.head_count", Meta::U32(heads)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
    ];
    if let Some(v) = vocab {
        m.push(("llama.vocab_size", Meta::U32(v)));
    }
    m
}

fn open_err(path: &std::path::Path) -> String {
    let files = match ModelFiles::open(path) {
        Ok(f) => f,
        Err(e) => return e.to_string(),
    };
    match files.footprint(&Usage::new(256)) {
        Ok(f) => panic!("{} was accepted: {f:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn zero_heads_is_an_error_not_a_division_by_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero-heads.gguf");
    let tensors = vec![("token_embd.weight".to_string(), vec![259, 64], Format::Q8_0)];
    write_sparse_gguf(&path, &llama_meta(0, Some(259)), &tensors).unwrap();
    let err = open_err(&path);
    assert!(
        err.contains("incoherent model shape") && err.contains(", 0 heads of "),
        "{err}"
    );
}

#[test]
fn a_one_dimensional_embedding_without_vocab_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat-embd.gguf");
    let tensors = vec![("token_embd.weight".to_string(), vec![64], Format::F32)];
    write_sparse_gguf(&path, &llama_meta(4, None), &tensors).unwrap();
    let err = open_err(&path);
    assert!(
        err.contains("no llama.vocab_size and no 2-D token_embd"),
        "{err}"
    );
}

#[test]
fn a_forged_metadata_array_is_refused_before_it_is_allocated() {
    // One metadata array of 100,000,000 one-byte values in a sparse 100 MB file: every count
    // fits the file, but holding it would take 3.2 GB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-array.gguf");
    let mut w = Vec::new();
    w.extend(0x4655_4747u32.to_le_bytes());
    w.extend(3u32.to_le_bytes());
    w.extend(0u64.to_le_bytes());
    w.extend(1u64.to_le_bytes());
    let key = "tokenizer.ggml.token_type";
    w.extend((key.len() as u64).to_le_bytes());
    w.extend(key.as_bytes());
    w.extend(9u32.to_le_bytes());
    w.extend(0u32.to_le_bytes());
    w.extend(100_000_000u64.to_le_bytes());
    std::fs::write(&path, &w).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(w.len() as u64 + 100_000_000).unwrap();
    let err = ModelFiles::open(&path).unwrap_err().to_string();
    assert!(err.contains("metadata arrays hold more than"), "{err}");
}
