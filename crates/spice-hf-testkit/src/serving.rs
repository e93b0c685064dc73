//! Helpers for tests and harnesses that drive `spice-hf serve`: reading an SSE body, summing a
//! Prometheus metric, and sending SIGTERM.

/// The `data:` payloads of an SSE body, in order (`[DONE]` included).
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
        })
        .collect()
}

/// The sum of the samples of a Prometheus text exposition whose line starts with `prefix`
/// (a metric name plus `{`, or a name with some of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends SIGTERM to process `pid` through the shell's `kill` builtin (no procps needed).
pub fn terminate(pid: u32) -> std::io::Result<()> {
    #[allow(clippy::disallowed_methods)] // Reason: signalling a process under test.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -TERM {pid} failed: {status}"
        )))
    }
}

/// Checks, against a running server at `base` (`http://host:port`) whose API key is `key` and
/// which serves `model`, what every API-key test must see: the probes (`/health`, `/v1/ready`)
/// answer without the key (a kubelet cannot send one);
/// `/v1/models` refuses no key, a wrong key, the key missing its last character and the key
/// with one more with 401 and the OpenAI code `invalid_api_key`, never echoing the key; and
/// answers the right key with the model listed. Panics (a test helper) on the first miss.
pub async fn assert_api_key_guards(base: &str, key: &str, model: &str) {
    let client = reqwest::Client::new();
    let get = |path: &str, bearer: Option<String>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        request.send()
    };
    let health = get("/health", None).await.expect("GET /health");
    assert_eq!(health.status(), 200, "/health needs no API key");
    let ready = get("/v1/ready", None).await.expect("GET /v1/ready");
    assert!(
        [200, 503].contains(&ready.status().as_u16()),
        "/v1/ready needs no API key: {}",
        ready.status()
    );
    let refused = get("/v1/models", None).await.expect("GET /v1/models");
    assert_eq!(refused.status(), 401, "/v1/models without a key");
    let body = refused.text().await.expect("the 401 body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(v["error"]["code"], "invalid_api_key", "{body}");
    assert!(!body.contains(key), "the error echoes the key: {body}");
    let shorter = &key[..key.len() - 1];
    for wrong in ["wrong".to_string(), shorter.to_string(), format!("{key}2")] {
        let resp = get("/v1/models", Some(wrong.clone()))
            .await
            .expect("GET /v1/models");
        assert_eq!(resp.status(), 401, "key {wrong:?} must be refused");
    }
    let ok = get("/v1/models", Some(key.to_string()))
        .await
        .expect("GET /v1/models");
    assert_eq!(ok.status(), 200, "the right key");
    let v: serde_json::Value =
        serde_json::from_str(&ok.text().await.expect("the model list")).expect("JSON");
    assert_eq!(v["data"][0]["id"], model);
}
