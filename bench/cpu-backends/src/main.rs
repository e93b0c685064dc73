//! `spice-hf-bench-cpu-backends GGUF packed|packed-q8|flex|ndarray [THREADS]`: loads the model on the
//! packed CPU kernels (`THREADS` threads; `packed-q8`: with 8-bit activations) or a Burn CPU backend (weights decoded to f32),
//! prefills a 128-token prompt, decodes 128 tokens greedily (end of turn ignored) and prints one
//! JSON line of timings and the process's peak RSS. Run by `cargo xtask bench infer`, one
//! process per run so each peak RSS is its own.
//!
//! `spice-hf-bench-cpu-backends convert IN.gguf OUT.gguf q8_0|f16` rewrites every matrix of a
//! GGUF in another format (metadata and 1-D tensors as they are), so every engine of the
//! benchmark reads the same Q8_0 or F16 file; `spice-hf-bench-cpu-backends synth IN.gguf
//! OUT.gguf LAYERS` writes a synthetic random-weight Q4_K Llama with IN's tokenizer (40 layers:
//! ~1 GiB) for the benchmark's memory row.

#![allow(clippy::print_stdout)] // Reason: the harness reports on stdout.

mod convert;
mod synth;

use std::time::Instant;

use burn::tensor::Device;
use spice_hf_models::footprint::peak_rss;
use spice_hf_models::generate::{Flow, GenerateParams, generate};
use spice_hf_models::llama::{Activations, Compute, CpuOptions};
use spice_hf_models::loaded::ModelFiles;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("convert") {
        let rest: Vec<String> = args.skip(1).collect();
        return convert::run(&rest);
    }
    if std::env::args().nth(1).as_deref() == Some("synth") {
        let rest: Vec<String> = args.skip(1).collect();
        return synth::run(&rest);
    }
    let (Some(path), Some(backend)) = (args.next(), args.next()) else {
        return Err(
            "usage: spice-hf-bench-cpu-backends GGUF packed|packed-q8|flex|ndarray [THREADS]"
                .into(),
        );
    };
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let compute = match backend.as_str() {
        "packed" => Compute::cpu(threads),
        // The opt-in 8-bit activation path.
        "packed-q8" => Compute::Cpu(CpuOptions::new(threads).with_activations(Activations::Q8)),
        "flex" => Compute::Burn(Device::flex()),
        // Deprecated by Burn 0.22 in favour of flex; measured here to show flex earns its place.
        #[allow(deprecated)]
        "ndarray" => Compute::Burn(Device::ndarray()),
        other => return Err(format!("unknown backend {other}").into()),
    };
    let start = Instant::now();
    let loaded = ModelFiles::open(path.as_ref())?.load(512, &compute)?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let prompt = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the green valley. ".repeat(12);
    let mut ids = loaded.tokenizer.encode_prompt(&prompt)?;
    ids.truncate(128);
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
        "{{\"backend\":\"{backend}\",\"threads\":{threads},\"load_ms\":{load_ms:.1},\"prompt_tokens\":{},\"prefill_tokens_per_s\":{:.1},\"decode_tokens_per_s\":{:.2},\"ttft_ms\":{:.1},\"peak_rss_bytes\":{}}}",
        ids.len(),
        ids.len() as f64 / (out.prefill_ms / 1000.0),
        decoded / (out.decode_ms / 1000.0),
        out.ttft_ms,
        peak_rss().unwrap_or(0)
    );
    Ok(())
}
