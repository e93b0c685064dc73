//! `cargo run --release -p spice-hf-kernels --example kernels [THREADS]`: times the products of
//! one decode step of a SmolLM2-135M-shaped model (30 layers of q/k/v/o, gate/up/down, and the
//! 49,152-row head, every matrix its own memory so the weights stream from RAM as in a real
//! model) in each format, on the f32 and the 8-bit activation paths, and prints the median over
//! 20 steps. A kernel-only view; `cargo xtask bench engines` is the end-to-end one.

#![allow(clippy::print_stdout)] // Reason: an example that reports on stdout.

use std::time::Instant;

use spice_hf_kernels::format::{ALL, Format};
use spice_hf_kernels::matrix::{Bytes, Pool, QMatrix};
use spice_hf_kernels::q8::Q8Acts;
use spice_hf_kernels::quantize::quantize_matrix;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::env::args()
        .nth(1)
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(2);
    let pool = Pool::new(threads)?;
    println!(
        "{} threads, kernels: {} ({})",
        threads,
        spice_hf_kernels::isa::current().isa,
        spice_hf_kernels::isa::current().reason
    );
    // (rows, cols, how many per step)
    let shapes = [
        (576, 576, 60),
        (192, 576, 60),
        (1536, 576, 60),
        (576, 1536, 30),
        (49152, 576, 1),
    ];
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for fmt in ALL {
        // SmolLM2's 576 columns are not whole 256-value K-quant blocks (llama.cpp falls back to
        // other formats for those tensors too).
        if matches!(fmt, Format::F32 | Format::BF16) || fmt.row_bytes(576).is_none() {
            continue;
        }
        // One quantized matrix per shape, copied once per use: as many bytes as a real step.
        let mut mats: Vec<QMatrix> = Vec::new();
        for &(r, c, n) in &shapes {
            let w: Vec<f32> = (0..r * c).map(|_| rand()).collect();
            let q = quantize_matrix(fmt, &w, c);
            for _ in 0..n {
                mats.push(QMatrix::new(fmt, r, c, Bytes::from_vec(q.clone()))?);
            }
        }
        let bytes: usize = mats.iter().map(|m| m.byte_len()).sum();
        let x: Vec<f32> = (0..1536).map(|_| rand()).collect();
        let mut y = vec![0f32; 49152];
        let mut time = |q8: bool| -> Result<f64, spice_hf_kernels::Error> {
            let mut acts = Q8Acts::new();
            let mut steps = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                pool.install(|| -> Result<(), spice_hf_kernels::Error> {
                    for m in &mats {
                        let (xs, ys) = (&x[..m.cols()], &mut y[..m.rows()]);
                        if q8 {
                            acts.quantize(xs, m.cols())?;
                            m.matmul_q8(&pool, &acts, ys)?;
                        } else {
                            m.matvec(&pool, xs, ys)?;
                        }
                    }
                    Ok(())
                })?;
                steps.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            steps.sort_by(f64::total_cmp);
            Ok(steps[steps.len() / 2])
        };
        let f32_ms = time(false)?;
        let line = format!(
            "{fmt:<5} {:>7.1} MiB/step  f32 activations {f32_ms:6.2} ms ({:5.1} GB/s)",
            bytes as f64 / 1048576.0,
            bytes as f64 / f32_ms / 1e6
        );
        if mats[0].has_q8_path() {
            let q8_ms = time(true)?;
            println!(
                "{line}   8-bit activations {q8_ms:6.2} ms ({:5.1} GB/s)",
                bytes as f64 / q8_ms / 1e6
            );
        } else {
            println!("{line}");
        }
    }
    Ok(())
}
