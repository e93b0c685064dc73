//! `cargo xtask integration [--backend cpu|wgpu]`: builds the `spice-hf` binary and the
//! `integration` harness (tests/integration.rs), then runs the end-to-end scenario against real
//! processes: a mirror serving the SmolLM2 fixture, pull, cache verify, run, serve with
//! OpenAI-style requests, metrics, task history, SIGTERM. The summary table is printed; the
//! logs of every process, the metrics text and `summary.json` stay in `target/integration/`.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let backend = match args {
        [] => "cpu".to_string(),
        [flag, b] if flag == "--backend" && (b == "cpu" || b == "wgpu") => b.clone(),
        _ => bail!("usage: cargo xtask integration [--backend cpu|wgpu]"),
    };
    let gguf = crate::fixtures::fetch(sh)?;
    // The wgpu run needs the backend compiled in, and a Vulkan driver (Mesa's software one
    // where there is no GPU, which `--backend wgpu` then uses because it is forced).
    let features: &[&str] = if backend == "wgpu" {
        crate::ensure_vulkan(sh)?;
        &["--features", "spice-hf-cli/wgpu"]
    } else {
        &[]
    };
    cmd!(
        sh,
        "cargo build --release --locked -p spice-hf-cli -p spice-hf-e2e --bins {features...}"
    )
    .run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let bin = target.join("release/spice-hf");
    let harness = target.join("release/integration");
    let logs = crate::workspace_root().join("target/integration");
    cmd!(sh, "{harness} {bin} {gguf} {logs} {backend}").run()?;
    Ok(())
}
