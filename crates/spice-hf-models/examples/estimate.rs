//! Estimating memory from file headers only: `cargo run -p spice-hf-models --example estimate -- MODEL.gguf [context]`.
//! Reads the GGUF tensor table (or the safetensors headers of a directory); loads no weights
//! and builds no device.
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: an example talks on the terminal.

use spice_hf_models::footprint::Usage;
use spice_hf_models::loaded::ModelFiles;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: estimate MODEL.gguf|DIR [context]");
        std::process::exit(2);
    };
    let context: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(2048);
    let files = ModelFiles::open(path.as_ref())?;
    let f = files.footprint(&Usage::new(context))?;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("parameters {:.1} M", f.parameters as f64 / 1e6);
    println!("on disk    {:.1} MiB", mib(f.file_bytes));
    println!(
        "weights    {:.1} MiB (kept as stored, memory-mapped)",
        mib(f.weights_bytes)
    );
    println!(
        "KV cache   {:.1} MiB ({context} positions)",
        mib(f.kv_cache_bytes)
    );
    println!("total      {:.1} MiB with 25% headroom", mib(f.total()));
    Ok(())
}
