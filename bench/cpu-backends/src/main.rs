//! `spice-hf-bench-cpu-backends GGUF flex|ndarray`: loads the model on that Burn CPU backend,
//! prefills a ~120-token prompt, decodes 128 tokens greedily (end of turn ignored) and prints
//! one JSON line of timings. Run by `cargo xtask bench infer` for the backend comparison.
#![allow(clippy::print_stdout)] // Reason: the harness reports on stdout.

use std::time::Instant;

use burn::tensor::Device;
use spice_hf_models::generate::{Flow, GenerateParams, generate};
use spice_hf_models::loaded::ModelFiles;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(backend)) = (args.next(), args.next()) else {
        return Err("usage: spice-hf-bench-cpu-backends GGUF flex|ndarray".into());
    };
    let device = match backend.as_str() {
        "flex" => Device::flex(),
        // Deprecated by Burn 0.22 in favour of flex; measured here to show flex earns its place.
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        other => return Err(format!("unknown backend {other}").into()),
    };
    let start = Instant::now();
    let loaded = ModelFiles::open(path.as_ref())?.load(512, &device)?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let prompt = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the green valley. ".repeat(6);
    let ids = loaded.tokenizer.encode_prompt(&prompt)?;
    let params = GenerateParams {
        max_tokens: 128,
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let out = generate(&loaded.model, &loaded.tokenizer, &ids, &params, |_| {
        Flow::Continue
    })?;
    let decoded = out.token_ids.len().saturating_sub(1) as f64;
    println!(
        "{{\"backend\":\"{backend}\",\"load_ms\":{load_ms:.1},\"prompt_tokens\":{},\"prefill_tokens_per_s\":{:.1},\"decode_tokens_per_s\":{:.2},\"ttft_ms\":{:.1}}}",
        ids.len(),
        ids.len() as f64 / (out.prefill_ms / 1000.0),
        decoded / (out.decode_ms / 1000.0),
        out.ttft_ms
    );
    Ok(())
}
