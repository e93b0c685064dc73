//! End-to-end tests of `spice-hf serve`: the real binary on a free port, pulling from the fake
//! Hub or loading the real SmolLM2 GGUF, driven over HTTP: readiness before and after the load,
//! chat (JSON and SSE) with usage equal to the tokenizer's counts, metrics that add up, task
//! history rows, queue overflow, cancellation by disconnect, SIGTERM (idle and mid-stream), and
//! the config file.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use spice_hf_cache::Cache;
use spice_hf_models::chat::Message;
use spice_hf_testkit::fixtures;
use spice_hf_testkit::serving::{self, assert_api_key_guards, metric_sum as metric, sse_data};

use super::{REPO, hub_with, spice};

/// A running `spice-hf serve`, killed on drop.
pub(super) struct Served {
    child: Child,
    pub(super) base: String,
    client: reqwest::Client,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (a `spice-hf serve ... --addr 127.0.0.1:0`) and reads the address it prints.
pub(super) async fn launch(mut cmd: Command) -> Served {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Served {
        child,
        base,
        client: reqwest::Client::new(),
    }
}

impl Served {
    pub(super) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
    pub(super) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }
    pub(super) async fn wait_ready(&self) {
        for _ in 0..1200 {
            if self.get("/v1/ready").await.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server never became ready");
    }
    fn terminate(&self) {
        serving::terminate(self.child.id()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pulls_serves_and_accounts_for_every_request() {
    let files = fixtures::tiny_llama_files(3);
    let hub = hub_with(&files).await;
    // A slow weight download keeps the model loading long enough to see readiness refuse.
    hub.slow_downloads(1..=1, 32 * 1024, Duration::from_millis(40));
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("history.db");
    let mut cmd = spice(hub.url(), home.path());
    cmd.args(["serve", REPO, "--addr", "127.0.0.1:0", "--context", "256"])
        .arg("--task-history")
        .arg(&history);
    let served = launch(cmd).await;
    // Every counter series exists at 0 from the first scrape (before any request or load).
    let m = served.get("/metrics").await.text().await.unwrap();
    for series in [
        "llm_requests{",
        "llm_failures{",
        "llm_finished{",
        "llm_prompt_tokens_total{",
        "llm_completion_tokens_total{",
    ] {
        assert!(
            m.contains(series),
            "{series} missing from the first scrape:\n{m}"
        );
        assert_eq!(metric(&m, series), 0.0, "{series}");
    }
    assert!(m.contains("kind=\"context_length\""), "{m}");
    let resp = served.get("/v1/ready").await;
    assert_eq!(resp.status(), 503, "ready before the model was pulled");
    assert!(resp.headers().contains_key("retry-after"));
    let h: Value = served.get("/health").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    served.wait_ready().await;
    let models: Value = served.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], REPO);

    // The tokenizer's own count of the prompt, from the pulled files.
    let dir = Cache::new(home.path()).revision(REPO, "main").unwrap();
    let messages = [Message::new("user", "Hello there")];
    let prompt_tokens =
        spice_hf_testkit::reference::direct_greedy(dir.path(), &messages, 1).prompt_tokens;

    let body = json!({"model": REPO, "max_tokens": 6,
                      "messages": [{"role": "user", "content": "Hello there"}]});
    let mut sent = 0;
    let mut prompt_sum = 0;
    let mut completion_sum = 0;
    let v: Value = served
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    sent += 1;
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=6).contains(&completion));
    prompt_sum += prompt_tokens as u64;
    completion_sum += completion;

    let mut s = body.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let data = sse_data(
        &served
            .post("/v1/chat/completions", &s)
            .await
            .text()
            .await
            .unwrap(),
    );
    sent += 1;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(
        usage["usage"]["completion_tokens"], completion,
        "greedy: same answer"
    );
    prompt_sum += prompt_tokens as u64;
    completion_sum += completion;
    let text_resp: Value = served
        .post(
            "/v1/completions",
            &json!({"model": REPO, "prompt": "abc", "max_tokens": 3}),
        )
        .await
        .json()
        .await
        .unwrap();
    sent += 1;
    prompt_sum += text_resp["usage"]["prompt_tokens"].as_u64().unwrap();
    completion_sum += text_resp["usage"]["completion_tokens"].as_u64().unwrap();
    // One refused request: counted as a request and a validation failure.
    let bad = served
        .post(
            "/v1/chat/completions",
            &json!({"model": REPO, "messages": [], "n": 3}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    sent += 1;

    let m = served.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric(&m, "llm_requests{"), sent as f64, "{m}");
    assert_eq!(metric(&m, "llm_failures{"), 1.0, "{m}");
    assert_eq!(metric(&m, "llm_finished{"), (sent - 1) as f64, "{m}");
    assert_eq!(
        metric(&m, "llm_prompt_tokens_total{"),
        prompt_sum as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "llm_completion_tokens_total{"),
        completion_sum as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, "llm_internal_request_duration_ms_count{"),
        (sent - 1) as f64,
        "{m}"
    );
    assert_eq!(metric(&m, "llm_model_load_duration_ms_count{"), 1.0, "{m}");
    // Health probes are not requests: the warm-up ran, yet the counts above hold.

    let rows: Value = served
        .get("/v1/task_history?task=ai_completion")
        .await
        .json()
        .await
        .unwrap();
    let rows = rows["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        for field in [
            "trace_id",
            "span_id",
            "task",
            "input",
            "captured_output",
            "start_ms",
            "end_ms",
            "duration_ms",
            "labels",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert_eq!(r["labels"]["model"], REPO);
    }
    assert!(rows[2]["input"].as_str().unwrap().contains("Hello there"));
    assert_eq!(
        rows[2]["captured_output"],
        v["choices"][0]["message"]["content"]
    );

    // SIGTERM: a clean exit, and the history file holds the rows for `spice-hf tasks`.
    served.terminate();
    let mut served = served;
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let out = super::output({
        let mut c = spice(hub.url(), home.path());
        c.args(["tasks", "--task", "health", "--task-history"])
            .arg(&history);
        c
    })
    .await;
    assert!(out.status.success(), "{}", super::text(&out.stderr));
    assert!(
        super::text(&out.stdout).contains("health"),
        "{}",
        super::text(&out.stdout)
    );
}

fn smollm2() -> Option<std::path::PathBuf> {
    fixtures::smollm2_gguf_or_skip()
}

pub(super) async fn smollm2_server(home: &Path, extra: &[&str]) -> Option<Served> {
    let gguf = smollm2()?;
    let mut cmd = spice("http://127.0.0.1:9", home);
    cmd.arg("serve")
        .arg(&gguf)
        .args([
            "--name",
            "smol",
            "--addr",
            "127.0.0.1:0",
            "--context",
            "512",
        ])
        .arg("--task-history")
        .arg(home.join("history.db"))
        .args(extra);
    let served = launch(cmd).await;
    served.wait_ready().await;
    Some(served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_gets_503_with_retry_after_and_a_disconnect_cancels() {
    let home = tempfile::tempdir().unwrap();
    let Some(served) =
        smollm2_server(home.path(), &["--max-concurrency", "1", "--max-queue", "2"]).await
    else {
        return;
    };
    let served = std::sync::Arc::new(served);
    // The golden answer through the server.
    let v: Value = served
        .post(
            "/v1/chat/completions",
            &json!({"model": "smol", "messages": [
                {"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
                {"role": "user", "content": "What is the capital of France?"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );

    // N = 6 at once, max_concurrency 1, max_queue 2: exactly 6 - 1 - 2 = 3 refused.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let served = served.clone();
        tasks.push(tokio::spawn(async move {
            let r = served
                .post(
                    "/v1/chat/completions",
                    &json!({"model": "smol", "max_tokens": 48,
                            "messages": [{"role": "user", "content": format!("Write a long poem about the sea, number {i}.")}]}),
                )
                .await;
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry)
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        if status == 503 {
            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 503, 503, 503]);

    // A client that disconnects mid-stream: the slot is free again and the row says so.
    let mut resp = served
        .post(
            "/v1/chat/completions",
            &json!({"model": "smol", "stream": true, "max_tokens": 400,
                    "messages": [{"role": "user", "content": "Tell me a long story."}]}),
        )
        .await;
    let mut seen = String::new();
    while seen.matches("data:").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    drop(resp);
    let mut running = u64::MAX;
    for _ in 0..400 {
        let h: Value = served.get("/health").await.json().await.unwrap();
        running = h["models"][0]["running"].as_u64().unwrap();
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(running, 0, "the permit is released after a disconnect");
    let mut row = Value::Null;
    for _ in 0..100 {
        let rows: Value = served
            .get("/v1/task_history?task=ai_completion&limit=1")
            .await
            .json()
            .await
            .unwrap();
        row = rows["data"][0].clone();
        if row["labels"]["stream"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(row["labels"]["finish_reason"], "cancelled", "{row}");
    assert!(row["labels"]["completion_tokens"].as_u64().unwrap() < 400);
    let m = served.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &m,
            "llm_failures{model=\"smol\",stream=\"false\",kind=\"overloaded\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "llm_finished{model=\"smol\",stream=\"true\",finish_reason=\"cancelled\"}"
        ),
        1.0,
        "{m}"
    );
}

/// SIGTERM sent to the binary while a stream is running: after the grace period
/// (`--shutdown-grace 1`) the stream ends with an OpenAI error object (`shutting_down`) and no
/// `[DONE]`, the process exits 0, and the task history on disk has the request's row, marked
/// as cancelled, with what it produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_ends_the_stream_with_an_error_and_keeps_the_row() {
    let home = tempfile::tempdir().unwrap();
    let Some(served) = smollm2_server(home.path(), &["--shutdown-grace", "1"]).await else {
        return;
    };
    let mut resp = served
        .post(
            "/v1/chat/completions",
            &json!({"model": "smol", "stream": true, "max_tokens": 400,
                    "messages": [{"role": "user", "content": "Count from one to a thousand, in words."}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    while body.matches("data:").count() < 3 {
        body.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().expect("the stream ended early"),
        ));
    }
    served.terminate();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{body}");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{last}"
    );
    assert!(!body.contains("[DONE]"), "{body}");
    let streamed: usize = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(streamed >= 2, "{body}");

    let mut served = served;
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let out = super::output({
        let mut c = spice("http://127.0.0.1:9", home.path());
        c.args([
            "tasks",
            "--task",
            "ai_completion",
            "--json",
            "--task-history",
        ])
        .arg(home.path().join("history.db"));
        c
    })
    .await;
    assert!(out.status.success(), "{}", super::text(&out.stderr));
    let rows: Vec<Value> = super::text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["labels"]["stream"], true, "{row}");
    assert_eq!(row["labels"]["finish_reason"], "cancelled", "{row}");
    let tokens = row["labels"]["completion_tokens"].as_u64().unwrap();
    assert!((2..400).contains(&tokens), "{row}");
    assert!(
        row["input"].as_str().unwrap().contains("Count from one"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_is_checked_strictly_and_takes_secrets_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let model_dir = home.path().join("tiny");
    fixtures::write_tiny_llama(&model_dir, 5).unwrap();
    let cfg = home.path().join("spicehf.yaml");
    let run = |yaml: String| {
        std::fs::write(&cfg, yaml).unwrap();
        let mut c = spice("http://127.0.0.1:9", home.path());
        c.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .args(["--task-history", "off"]);
        c
    };
    // An unknown key: the error names it and its line.
    let out = super::output(run(format!(
        "models:\n  - from: {}\n    name: tiny\n    params:\n      max_concurency: 2\n",
        model_dir.display()
    )))
    .await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("max_concurency") && err.contains("line 5"),
        "{err}"
    );
    // An invalid value.
    let out = super::output(run(format!(
        "models:\n  - from: {}\n    params:\n      max_concurrency: 0\n",
        model_dir.display()
    )))
    .await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("`max_concurrency`") && err.contains("line 4"),
        "{err}"
    );
    // A sampling default out of range, with its line.
    let out = super::output(run(format!(
        "models:\n  - from: {}\n    params:\n      temperature: 7\n",
        model_dir.display()
    )))
    .await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("temperature 7 is out of range") && err.contains("line 4"),
        "{err}"
    );
    // A CPU kernel option the engine does not have, with its line.
    let out = super::output(run(format!(
        "models:\n  - from: {}\n    params:\n      kv_cache: f16\n      activations: q4\n",
        model_dir.display()
    )))
    .await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("activations \"q4\" are not f32 or q8") && err.contains("line 5"),
        "{err}"
    );
    // A mistake next to secrets: the error names the line and the key, never the neighbours.
    for (yaml, key) in [
        (
            "server:\n  api_key: sk-live-NEIGHBOURSECRET\n  adr: 127.0.0.1:1\nmodels: []\n"
                .to_string(),
            "adr",
        ),
        (
            format!(
                "# token: hf_NEIGHBOURSECRET\nmodels:\n  - from: {}\n    parms: {{}}\n",
                model_dir.display()
            ),
            "parms",
        ),
        (
            format!(
                "models:\n  - from: {}\n    params:\n      hf_token: hf_NEIGHBOURSECRET\n      max_tokens: many\n",
                model_dir.display()
            ),
            "max_tokens",
        ),
    ] {
        let out = super::output(run(yaml.clone())).await;
        assert!(!out.status.success(), "{yaml}");
        let err = super::text(&out.stderr);
        assert!(err.contains(key) && err.contains("line"), "{yaml}: {err}");
        assert!(!err.contains("NEIGHBOURSECRET"), "{yaml}: {err}");
    }
    // A token in clear is refused without echoing it.
    let out = super::output(run(format!(
        "models:\n  - from: {}\n    params:\n      hf_token: hf_plaintextsecret\n",
        model_dir.display()
    )))
    .await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("${env:VAR}") && !err.contains("plaintextsecret"),
        "{err}"
    );
    // A valid file: the API key from the environment guards the server.
    std::fs::write(&cfg, format!(
        "models:\n  - from: {}\n    name: tiny\n    params:\n      max_concurrency: 2\n      context_length: 256\n      hf_token: ${{env:MY_HF_TOKEN}}\nserver:\n  addr: 127.0.0.1:0\n  api_key: ${{env:MY_API_KEY}}\n",
        model_dir.display()
    )).unwrap();
    let mut c = spice("http://127.0.0.1:9", home.path());
    c.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args(["--task-history", "off"])
        .env("MY_HF_TOKEN", "hf_from_env")
        .env("MY_API_KEY", "k-123");
    let served = launch(c).await;
    assert_api_key_guards(&served.base, "k-123", "tiny").await;
}

/// A stand-in OpenTelemetry collector: records the body of every OTLP/HTTP export it gets.
async fn collector() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>,
) {
    use axum::extract::State;
    type Got = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;
    let got: Got = Default::default();
    let app = axum::Router::new()
        .fallback(
            |State(got): State<Got>, uri: axum::http::Uri, body: axum::body::Bytes| async move {
                got.lock()
                    .unwrap()
                    .push((uri.path().to_string(), body.to_vec()));
                ""
            },
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_are_exported_over_otlp_when_an_endpoint_is_set() {
    let (endpoint, got) = collector().await;
    let home = tempfile::tempdir().unwrap();
    let model_dir = home.path().join("tiny");
    fixtures::write_tiny_llama(&model_dir, 5).unwrap();
    let mut cmd = spice("http://127.0.0.1:9", home.path());
    cmd.arg("serve")
        .arg(&model_dir)
        .args([
            "--name",
            "tiny",
            "--addr",
            "127.0.0.1:0",
            "--context",
            "256",
            "--task-history",
            "off",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200");
    let served = launch(cmd).await;
    served.wait_ready().await;
    let resp = served
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let has = |path: &str, needle: &[u8]| {
        got.lock()
            .unwrap()
            .iter()
            .any(|(p, body)| p == path && body.windows(needle.len()).any(|w| w == needle))
    };
    for _ in 0..200 {
        if has("/v1/traces", b"gen_ai.usage.output_tokens") && has("/v1/metrics", b"llm_requests") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        has("/v1/traces", b"chat tiny"),
        "the ai_completion span, named `chat tiny`"
    );
    assert!(has("/v1/traces", b"gen_ai.usage.output_tokens"));
    assert!(has("/v1/metrics", b"llm_requests"));
    assert!(has("/v1/metrics", b"llm_completion_tokens_total"));
    // Prometheus text still works beside OTLP.
    let m = served.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("llm_requests{model=\"tiny\",stream=\"false\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pulls_a_private_model_with_the_token_flag() {
    let files = fixtures::tiny_llama_files(3);
    let mirror = spice_hf_mirror::Mirror::new();
    let mut repo = spice_hf_testkit::repo_with(REPO, &files);
    repo.visibility = spice_hf_mirror::Visibility::Private;
    repo.tokens.insert("hf_owner_token".into());
    mirror.add_repo(repo);
    let hub = spice_hf_testkit::FakeHub::start(mirror).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = spice(hub.url(), home.path());
    cmd.args(["serve", REPO, "--addr", "127.0.0.1:0", "--context", "256"])
        .args(["--task-history", "off", "--token", "hf_owner_token"]);
    let served = launch(cmd).await;
    served.wait_ready().await;
    let models: Value = served.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], REPO);
    // And without it, the load fails as the Hub says (the repository is not visible).
    drop(served);
    let other = tempfile::tempdir().unwrap();
    let mut cmd = spice(hub.url(), other.path());
    cmd.args(["serve", REPO, "--addr", "127.0.0.1:0", "--context", "256"])
        .args(["--task-history", "off"]);
    let served = launch(cmd).await;
    let mut health = Value::Null;
    for _ in 0..200 {
        health = served.get("/health").await.json().await.unwrap();
        if health.to_string().contains("not found") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.to_string().contains("not found"), "{health}");
    assert!(!health.to_string().contains("hf_owner_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_address_without_an_api_key_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("tiny");
    fixtures::write_tiny_llama(&model, 5).unwrap();
    let serve = |extra: &[&str]| {
        let mut c = spice("http://127.0.0.1:9", home.path());
        c.arg("serve")
            .arg(&model)
            .args(["--addr", "0.0.0.0:0", "--task-history", "off"])
            .args(extra);
        c
    };
    let out = super::output(serve(&[])).await;
    assert!(!out.status.success());
    let err = super::text(&out.stderr);
    assert!(
        err.contains("0.0.0.0")
            && err.contains("--api-key")
            && err.contains("--allow-unauthenticated"),
        "{err}"
    );
    // With a key, or when the operator says the network is trusted, it serves.
    for extra in [&["--api-key", "k3y"][..], &["--allow-unauthenticated"][..]] {
        let served = launch(serve(extra)).await;
        assert!(
            served.base.starts_with("http://0.0.0.0:"),
            "{}",
            served.base
        );
        let local = served.base.replace("0.0.0.0", "127.0.0.1");
        let status = reqwest::get(format!("{local}/health"))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
}
