//! `spice-hf-bench-candle GGUF`: candle's `quantized_llama` on the same file and the same work as
//! the spice-hf harness (a 128-token prompt, 128 greedy decode steps), one JSON line out.
//! Threads come from `RAYON_NUM_THREADS`, which `cargo xtask bench infer` sets.
#![allow(clippy::print_stdout)] // Reason: the harness reports on stdout.

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn argmax(logits: &Tensor) -> candle_core::Result<u32> {
    let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    Ok(v.iter()
        .enumerate()
        .fold((0, f32::MIN), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) })
        .0 as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: spice-hf-bench-candle GGUF")?;
    let device = Device::Cpu;
    let start = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    // Token ids of ordinary words; what they say does not change the work.
    let ids: Vec<u32> = (0..128u32).map(|i| 1000 + (i * 37) % 20000).collect();
    let t = Instant::now();
    let logits = model.forward(&Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?, 0)?;
    let mut next = argmax(&logits)?;
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for pos in 0..127 {
        let logits = model.forward(&Tensor::new(&[next], &device)?.unsqueeze(0)?, 128 + pos)?;
        next = argmax(&logits)?;
    }
    let decode = t.elapsed().as_secs_f64();
    println!(
        "{{\"backend\":\"candle\",\"load_ms\":{load_ms:.1},\"prompt_tokens\":128,\"prefill_tokens_per_s\":{:.1},\"decode_tokens_per_s\":{:.2},\"ttft_ms\":{:.1},\"peak_rss_bytes\":{}}}",
        128.0 / prefill,
        127.0 / decode,
        prefill * 1000.0,
        peak_rss()
    );
    Ok(())
}
