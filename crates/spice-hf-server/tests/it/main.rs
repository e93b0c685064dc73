//! Server tests: the real router on a loopback port, driven by a real HTTP client, over the
//! tiny fixture model (and the real SmolLM2 where a generation must outlast the test's actions).

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spice_hf_models::chat::Message;
use spice_hf_runtime::{LimiterConfig, ModelSpec, Runtime, Source};
use spice_hf_server::App;
use spice_hf_telemetry::{TaskHistory, TaskHistoryLayer};
use spice_hf_testkit::fixtures;
use spice_hf_testkit::reference::direct_greedy;
use spice_hf_testkit::serving::{assert_api_key_guards, sse_data};

struct Server {
    base: String,
    runtime: Runtime,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn tiny_spec(dir: &Path) -> ModelSpec {
    fixtures::write_tiny_llama(dir, 3).unwrap();
    let mut spec = ModelSpec::new("tiny", Source::Path(dir.to_path_buf()));
    spec.context_length = 256;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    spec
}

async fn start(specs: Vec<ModelSpec>, configure: impl FnOnce(App) -> App, load: bool) -> Server {
    let runtime = Runtime::new(specs).unwrap();
    if load {
        runtime.load_initial().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = configure(App::new(runtime.clone()));
    tokio::spawn(spice_hf_server::serve(
        listener,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Server {
        base,
        runtime,
        client: reqwest::Client::new(),
        _dir: tempfile::tempdir().unwrap(),
    }
}

async fn tiny_server(configure: impl FnOnce(App) -> App) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(vec![tiny_spec(dir.path())], configure, true).await;
    (server, dir)
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_json_and_sse_agree_with_the_model_layer() {
    let (server, dir) = tiny_server(|a| a).await;
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        "max_tokens": 9,
        "temperature": 0,
    });
    let resp = server.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let spice_hf_testkit::reference::Direct {
        prompt_tokens,
        token_ids: ids,
        text,
    } = direct_greedy(
        dir.path(),
        &[
            Message::new("system", "Be brief."),
            Message::new("user", "Hello!"),
        ],
        9,
    );
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], ids.len());
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + ids.len());
    let finish = if ids.len() == 9 { "length" } else { "stop" };
    assert_eq!(v["choices"][0]["finish_reason"], finish);

    // Streaming: role chunk, content chunks adding up to the same text, finish chunk, usage
    // chunk (asked for), [DONE].
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let resp = server.post("/v1/chat/completions", stream_body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(usage["usage"]["completion_tokens"], ids.len());
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], finish);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null() && c["object"] == "chat.completion.chunk")
    );

    // Without include_usage there is no usage chunk.
    let mut plain = body.clone();
    plain["stream"] = json!(true);
    let data = sse_data(
        &server
            .post("/v1/chat/completions", plain)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(data.iter().all(|d| !d.contains("\"usage\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_json_stream_and_echo() {
    let (server, _dir) = tiny_server(|a| a).await;
    let body = json!({"model": "tiny", "prompt": "abc", "max_tokens": 5, "echo": true});
    let v: Value = server
        .post("/v1/completions", body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(full.starts_with("abc"), "{full}");
    let mut s = body.clone();
    s["stream"] = json!(true);
    let data = sse_data(
        &server
            .post("/v1/completions", s)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_naming_the_field() {
    let (server, _dir) = tiny_server(|a| a).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"model": "tiny"}),
            400,
            "messages",
            "missing field `messages`",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "temperature": "hot"}),
            400,
            "temperature",
            "invalid type",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "temprature": 0.5}),
            400,
            "temprature",
            "unknown field",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "n": 2}),
            400,
            "n",
            "only n = 1",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "temperature": 7}),
            400,
            "temperature",
            "out of range",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "max_tokens": 0}),
            400,
            "max_tokens",
            "out of range",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "tools": [], "tool_choice": "required"}),
            400,
            "tool_choice",
            "no tools",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "tool_choice": "auto"}),
            400,
            "tool_choice",
            "needs `tools`",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "tools": [{"type": "function", "function": {"name": "rm -rf"}}]}),
            400,
            "tools[0].function.name",
            "1 to 64 characters",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            400,
            "tool_choice",
            "`g` is not among",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": true}}}}),
            400,
            "response_format",
            "uniqueItems",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            400,
            "response_format.json_schema.schema",
            "needs its `schema`",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "response_format": {"type": "xml"}}),
            400,
            "response_format.type",
            "unknown variant",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "functions": []}),
            400,
            "functions",
            "use `tools`",
        ),
        (
            json!({"model": "tiny", "messages": msgs, "stream_options": {"include_usage": true}}),
            400,
            "stream_options",
            "stream",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "function", "content": "x"}]}),
            400,
            "messages[0].role",
            "not supported",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            "messages[0].content[0]",
            "only text",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "user", "content": "x".repeat(600)}]}),
            400,
            "messages",
            "context",
        ),
        (
            json!({"model": "nope", "messages": msgs}),
            404,
            "model",
            "not served",
        ),
        (
            json!({"model": "tiny", "messages": [{"content": "hi"}]}),
            400,
            "messages[0].role",
            "missing field `role`",
        ),
        // No field to name: the whole body is wrong.
        (json!([1, 2]), 400, "body", "JSON object"),
    ];
    for (body, status, param, text) in cases {
        let resp = server.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{body}: {message}");
        assert!(v["error"]["type"].is_string() && v["error"]["code"].is_string());
        assert_eq!(v["error"]["param"], param, "{body}");
    }
    // What a web page can send to any origin without a preflight is not taken as JSON.
    let good = r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#;
    for (content_type, want) in [
        (Some("text/plain"), 415),
        (Some("application/x-www-form-urlencoded"), 415),
        (Some("multipart/form-data; boundary=x"), 415),
        (None, 415),
        (Some("application/json; charset=utf-8"), 200),
        (Some("Application/JSON"), 200),
    ] {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let body = if path == "/v1/completions" {
                r#"{"model":"tiny","prompt":"hi","max_tokens":1}"#
            } else {
                good
            };
            let mut req = server
                .client
                .post(format!("{}{path}", server.base))
                .body(body);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), want, "{path} with {content_type:?}");
            if want == 415 {
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["error"]["code"], "unsupported_media_type");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("application/json")
                );
            }
        }
    }
    let resp = server
        .client
        .post(format!("{}/v1/chat/completions", server.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let resp = server.get("/v1/nothing").await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_everything_but_the_probes() {
    let (server, _dir) = tiny_server(|a| {
        a.with_api_key("s3cret-key").with_metrics(Arc::new(|| {
            "llm_requests_waiting{model=\"tiny\"} 0\n".into()
        }))
    })
    .await;
    assert_api_key_guards(&server.base, "s3cret-key", "tiny").await;
    assert_eq!(server.get("/metrics").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_answer_without_the_key_and_nothing_else_does() {
    let (server, _dir) = tiny_server(|a| {
        a.with_api_key("s3cret-key")
            .with_public_metrics(true)
            .with_metrics(Arc::new(|| {
                "llm_requests_waiting{model=\"tiny\"} 0\n".into()
            }))
    })
    .await;
    let resp = server.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("llm_requests_waiting"));
    // Everything else keeps the key.
    assert_api_key_guards(&server.base, "s3cret-key", "tiny").await;
    for path in ["/v1/task_history", "/v1/nothing"] {
        assert_eq!(server.get(path).await.status(), 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_load_and_the_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(vec![tiny_spec(dir.path())], |a| a, false).await;
    let resp = server.get("/v1/ready").await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NotLoaded")
    );
    // Liveness answers all along.
    let h: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["ready"], false);
    server.runtime.load_initial().await;
    assert_eq!(server.get("/v1/ready").await.status(), 200);
    let h: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(h["ready"], true);
    assert_eq!(h["models"][0]["backend"], "cpu");
    assert!(
        h["models"][0]["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("cpu kernels: ")),
        "{h}"
    );
    assert_eq!(h["models"][0]["health"]["state"], "ready");
}

/// The per-minute limit over HTTP: the third request in a minute under a limit of 2 is a 429
/// in OpenAI's envelope, with `Retry-After` (whole seconds, rounded up) and `retry-after-ms`
/// telling the same wait; streaming requests are refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_minute_limit_answers_429_with_both_retry_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tiny_spec(dir.path());
    spec.limits = LimiterConfig::default().with_requests_per_minute(std::num::NonZeroU32::new(2));
    let server = start(vec![spec], |a| a, true).await;
    let body =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    for i in 0..2 {
        let resp = server.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(resp.status(), 200, "request {i} is within the limit");
    }
    let resp = server.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(resp.status(), 429);
    let header = |name: &str| -> u64 {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (secs, ms) = (header("retry-after"), header("retry-after-ms"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert!((1..=60_000).contains(&ms), "retry-after-ms {ms}");
    assert_eq!(secs, ms.div_ceil(1000), "the two headers disagree");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tiny"),
        "{v}"
    );
    // The streaming endpoint is refused the same way, before any event is sent.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = server.post("/v1/chat/completions", streamed).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after-ms").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tiny_spec(dir.path());
    spec.limits = LimiterConfig::default()
        .with_max_concurrency(NonZeroUsize::new(1).unwrap())
        .with_max_queue(1);
    let server = Arc::new(start(vec![spec], |a| a, true).await);
    let model = server.runtime.model("tiny").unwrap();
    let holder = model.limiter().try_acquire().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let resp = server
                .post(
                    "/v1/chat/completions",
                    json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
                )
                .await;
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, retry, body)
        }));
    }
    for _ in 0..1000 {
        if tasks.iter().filter(|t| t.is_finished()).count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(model.limiter().waiting(), 1);
    drop(holder);
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        if status == 503 {
            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
            assert_eq!(body["error"]["code"], "server_overloaded");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 503, 503, 503]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_the_slot_and_the_row_says_cancelled() {
    let Some(path) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    let history = TaskHistory::open_in_memory(100).unwrap();
    let layer = TaskHistoryLayer::new(history.clone());
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer.clone()))
        .unwrap();
    let (recorder, handle) = spice_hf_telemetry::prometheus_recorder().unwrap();
    metrics::set_global_recorder(recorder).unwrap();
    let mut spec = ModelSpec::new("smol", Source::Path(path));
    spec.context_length = 512;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    let server = start(
        vec![spec],
        |a| {
            a.with_task_history(history.clone())
                .with_metrics(Arc::new(move || handle.render()))
        },
        true,
    )
    .await;
    let model = server.runtime.model("smol").unwrap();
    let mut resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "stream": true, "max_tokens": 300,
                   "messages": [{"role": "user", "content": "Tell me a long story."}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
        let chunk = resp.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(model.limiter().running(), 1);
    drop(resp);
    for _ in 0..1000 {
        if model.limiter().running() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(model.limiter().running(), 0, "the permit is free again");
    layer.flush();
    let rows: Value = server
        .get("/v1/task_history?task=ai_completion")
        .await
        .json()
        .await
        .unwrap();
    let row = &rows["data"][0];
    assert_eq!(row["labels"]["finish_reason"], "cancelled", "{rows}");
    assert!(row["labels"]["completion_tokens"].as_u64().unwrap() < 300);
    assert!(row["error_message"].as_str().unwrap().contains("cancelled"));
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"llm_finished{model="smol",stream="true",finish_reason="cancelled"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_while_queued_leaves_the_queue() {
    let (server, _dir) = tiny_server(|a| a).await;
    let model = server.runtime.model("tiny").unwrap();
    let holder = model.limiter().try_acquire().unwrap();
    let result = server
        .client
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    for _ in 0..1000 {
        if model.limiter().waiting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(model.limiter().waiting(), 0);
    drop(holder);
    assert_eq!(model.limiter().running(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_running_streams_with_an_error_object_and_returns() {
    let Some(path) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let mut spec = ModelSpec::new("smol", Source::Path(path));
    spec.context_length = 512;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(spice_hf_server::serve(
        listener,
        App::new(runtime.clone()),
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(200),
    ));
    let client = reqwest::Client::new();
    let mut resp = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "smol", "stream": true, "max_tokens": 400,
                      "messages": [{"role": "user", "content": "Count to a thousand."}]}))
        .send()
        .await
        .unwrap();
    let mut body = String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()).to_string();
    stop.send(()).unwrap();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = sse_data(&body);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "shutting_down", "{body}");
    assert!(!body.contains("[DONE]"));
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(runtime.in_flight(), 0);
}
