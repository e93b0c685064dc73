//! A downstream crate that only pulls: `cargo run -p spice-hf-hub --example pull -- org/name[@rev] [quant]`.
//! Uses `HF_ENDPOINT`, `HF_TOKEN` and `SPICE_MODELS_DIR` like the `spice-hf` command; needs no
//! Burn, no runtime, no server.
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: an example talks on the terminal.

use spice_hf_hub::{HubClient, HubConfig, ModelRef, NoProgress};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(reference) = args.next() else {
        eprintln!("usage: pull org/name[@revision] [quant]");
        std::process::exit(2);
    };
    let quant = args.next();
    let model = ModelRef::parse(&reference)?;
    let client = HubClient::new(HubConfig::from_env(None)?)?;
    let cache = spice_hf_cache::Cache::from_env()?;
    let path = client
        .pull_model(&cache, &model, quant.as_deref(), &NoProgress)
        .await?;
    println!("{model} is in {}", path.display());
    Ok(())
}
