//! `serve-load`: a bounded load run for `cargo xtask bench serve`. K clients send streaming chat
//! completions for T seconds, against a running `spice-hf serve` over HTTP and (with `--direct`)
//! against the runtime's session API in this process, so the server's overhead can be read off.
//! Prints one line of JSON per phase on stdout.
#![allow(clippy::print_stdout)] // Reason: the harness reports on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use spice_hf_models::chat::Message;
use spice_hf_models::generate::GenerateParams;
use spice_hf_runtime::{CompletionRequest, Event, ModelSpec, Prompt, Runtime, Source};

struct Args {
    url: Option<String>,
    model: String,
    direct: Option<PathBuf>,
    clients: usize,
    seconds: u64,
    max_tokens: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: None,
        model: "smol".into(),
        direct: None,
        clients: 4,
        seconds: 15,
        max_tokens: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = Some(value()?),
            "--model" => a.model = value()?,
            "--direct" => a.direct = Some(PathBuf::from(value()?)),
            "--clients" => a.clients = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--max-tokens" => a.max_tokens = value()?.parse()?,
            other => bail!(
                "unknown flag {other}; usage: serve-load [--url URL] [--direct GGUF] [--model NAME] [--clients K] [--seconds T] [--max-tokens N]"
            ),
        }
    }
    Ok(a)
}

/// One finished request.
#[derive(Default, Clone)]
struct Sample {
    latency_ms: f64,
    ttft_ms: f64,
    tokens: u64,
    error: Option<String>,
}

fn prompt(i: usize) -> String {
    format!("Write two sentences about the number {i}.")
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(phase: &str, clients: usize, wall: f64, samples: &[Sample]) -> Value {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let mut lat: Vec<f64> = ok.iter().map(|s| s.latency_ms).collect();
    let mut ttft: Vec<f64> = ok.iter().map(|s| s.ttft_ms).collect();
    let tokens: u64 = ok.iter().map(|s| s.tokens).sum();
    let mut errors = serde_json::Map::new();
    for s in samples {
        if let Some(e) = &s.error {
            let n = errors.entry(e.clone()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }
    json!({
        "phase": phase,
        "clients": clients,
        "requests": samples.len(),
        "ok": ok.len(),
        "requests_per_s": ok.len() as f64 / wall,
        "tokens_per_s": tokens as f64 / wall,
        "latency_p50_ms": percentile(&mut lat, 0.5),
        "latency_p99_ms": percentile(&mut lat, 0.99),
        "ttft_p50_ms": percentile(&mut ttft, 0.5),
        "ttft_p99_ms": percentile(&mut ttft, 0.99),
        "errors": errors,
    })
}

async fn http_one(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    i: usize,
    max_tokens: usize,
) -> Sample {
    let start = Instant::now();
    let body = json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                      "max_tokens": max_tokens,
                      "messages": [{"role": "user", "content": prompt(i)}]});
    let mut resp = match client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Sample {
                error: Some(format!("connect: {e}")),
                ..Sample::default()
            };
        }
    };
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let code = v["error"]["code"].as_str().unwrap_or("unknown").to_string();
        return Sample {
            error: Some(format!("{status} {code}")),
            ..Sample::default()
        };
    }
    let mut text = String::new();
    let mut ttft = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                text.push_str(&String::from_utf8_lossy(&c));
                // The first chunk carries the role and empty content; the first token is the
                // first chunk with text.
                if ttft.is_none()
                    && text
                        .split("\n\n")
                        .filter_map(|e| e.strip_prefix("data: "))
                        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                        .any(|v| {
                            v["choices"][0]["delta"]["content"]
                                .as_str()
                                .is_some_and(|t| !t.is_empty())
                        })
                {
                    ttft = Some(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Sample {
                    error: Some(format!("body: {e}")),
                    ..Sample::default()
                };
            }
        }
    }
    let usage = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v["usage"]["completion_tokens"].as_u64());
    if !text.contains("data: [DONE]") {
        return Sample {
            error: Some("stream ended without [DONE]".into()),
            ..Sample::default()
        };
    }
    let latency = start.elapsed().as_secs_f64() * 1000.0;
    Sample {
        latency_ms: latency,
        ttft_ms: ttft.unwrap_or(latency),
        tokens: usage.unwrap_or(0),
        error: None,
    }
}

async fn direct_one(
    model: &Arc<spice_hf_runtime::ServedModel>,
    i: usize,
    max_tokens: usize,
) -> Sample {
    let start = Instant::now();
    let mut request = CompletionRequest::new(Prompt::Chat(vec![Message::new("user", &prompt(i))]));
    request.params = Some(GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    });
    request.stream = true;
    let mut stream = match model.stream(request).await {
        Ok(s) => s,
        Err(e) => {
            return Sample {
                error: Some(e.kind().to_string()),
                ..Sample::default()
            };
        }
    };
    let mut ttft = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Text(_) | Event::ToolCall(..) => {
                ttft.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1000.0);
            }
            Event::Done(c) => {
                let latency = start.elapsed().as_secs_f64() * 1000.0;
                return Sample {
                    latency_ms: latency,
                    ttft_ms: ttft.unwrap_or(latency),
                    tokens: c.completion_tokens as u64,
                    error: None,
                };
            }
            Event::Error(e) => {
                return Sample {
                    error: Some(e.kind().to_string()),
                    ..Sample::default()
                };
            }
        }
    }
    Sample {
        error: Some("stream ended without a result".into()),
        ..Sample::default()
    }
}

/// Runs `clients` loops of `one` until `seconds` have passed.
async fn drive<F, Fut>(clients: usize, seconds: u64, one: F) -> (f64, Vec<Sample>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Sample> + Send,
{
    let one = Arc::new(one);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let one = one.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.push(one(i).await);
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        samples.extend(t.unwrap_or_default());
    }
    (start.elapsed().as_secs_f64(), samples)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    if let Some(url) = a.url.clone() {
        let client = reqwest::Client::new();
        let ready = format!("{url}/v1/ready");
        let mut waited = 0;
        while !client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            waited += 1;
            if waited > 1200 {
                bail!("{url} never became ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for clients in [1, a.clients] {
            let (client, url, model, max) =
                (client.clone(), url.clone(), a.model.clone(), a.max_tokens);
            let (wall, samples) = drive(clients, a.seconds, move |i| {
                let (client, url, model) = (client.clone(), url.clone(), model.clone());
                async move { http_one(&client, &url, &model, i, max).await }
            })
            .await;
            println!("{}", report("http", clients, wall, &samples));
        }
    }
    if let Some(gguf) = &a.direct {
        let mut spec = ModelSpec::new("direct", Source::Path(gguf.clone()));
        spec.context_length = 512;
        spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
        spec.limits.max_queue = 1024;
        let runtime = Runtime::new(vec![spec])?;
        runtime.load_initial().await;
        let model = runtime.model("direct")?;
        for clients in [1, a.clients] {
            let (model, max) = (model.clone(), a.max_tokens);
            let (wall, samples) = drive(clients, a.seconds, move |i| {
                let model = model.clone();
                async move { direct_one(&model, i, max).await }
            })
            .await;
            println!("{}", report("direct", clients, wall, &samples));
        }
    }
    Ok(())
}
