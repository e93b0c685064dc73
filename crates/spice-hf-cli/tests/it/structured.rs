//! Structured outputs and tool calls end to end: the official OpenAI Python client
//! (`tests/py/structured.py`, which checks every answer with `json.loads`, `jsonschema` and
//! pydantic) against a real `spice-hf serve` of SmolLM2, with SmolLM2's own template (tools in
//! the default format) and with Qwen2.5's template on SmolLM2's weights (tools in the
//! template's own syntax). Then the metrics and the task history name the constraint.

use std::path::Path;

use serde_json::Value;
use spice_hf_testkit::fixtures;
use spice_hf_testkit::serving::metric_sum;

use super::serve::{Served, launch, smollm2_server};
use super::{require, spice, text};

/// Runs the client script; returns its report (its last line).
async fn client(served: &Served, model: &str, scope: &str) -> Value {
    require(
        "python3",
        "install Python 3 with `pip install openai jsonschema`",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/structured.py");
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real Python client.
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script).args([served.base.as_str(), model, scope]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "the OpenAI client's checks failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report in {stdout:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_outputs_and_tool_calls_through_the_openai_client() {
    let home = tempfile::tempdir().unwrap();
    let Some(served) = smollm2_server(home.path(), &[]).await else {
        return;
    };
    let report = client(&served, "smol", "all").await;
    assert_eq!(report["json_schema_valid"], 20, "{report}");
    // Temperature 1 over twenty seeds: the constraint shapes, the sampler still samples.
    assert!(
        report["json_schema_distinct"].as_u64().unwrap() > 5,
        "{report}"
    );
    assert!(report["pydantic"]["name"].is_string(), "{report}");
    assert_eq!(report["unsupported"], "response_format", "{report}");
    assert_eq!(report["forced_calls"], 6, "{report}");
    assert_eq!(report["auto"].as_array().unwrap().len(), 4, "{report}");
    assert!(report["parallel_calls"].as_u64().unwrap() >= 1, "{report}");

    let m = served.get("/metrics").await.text().await.unwrap();
    let count = |kind: &str| {
        metric_sum(
            &m,
            &format!("llm_constrained_requests_total{{model=\"smol\",constraint=\"{kind}\"}}"),
        )
    };
    // 20 schema answers, the pydantic one, the refused one; 1 json_object; 3 x 2 x 2 forced
    // calls, 1 parallel, 4 auto (the next turn's `none` is unconstrained).
    assert_eq!(count("json_schema"), 22.0, "{m}");
    assert_eq!(count("json_object"), 1.0, "{m}");
    assert_eq!(count("tool_calls"), 17.0, "{m}");
    let rows: Value = served
        .get("/v1/task_history?task=ai_completion&limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["labels"]["constraint"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "json_schema").count(), 22);
    assert_eq!(kinds.iter().filter(|k| **k == "tool_calls").count(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_in_a_templates_own_syntax() {
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qwen2.5-instruct.jinja"),
    )
    .unwrap();
    let cfg = home.path().join("spicehf.yaml");
    // A JSON string is a YAML double-quoted scalar.
    std::fs::write(
        &cfg,
        format!(
            "models:\n  - from: {}\n    name: qwen-template\n    params:\n      context_length: 1024\n      chat_template: {}\nserver:\n  addr: 127.0.0.1:0\n",
            gguf.display(),
            serde_json::to_string(&template).unwrap()
        ),
    )
    .unwrap();
    let mut cmd = spice("http://127.0.0.1:9", home.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args(["--task-history", "off"]);
    let served = launch(cmd).await;
    served.wait_ready().await;
    let report = client(&served, "qwen-template", "tools").await;
    assert_eq!(report["forced_calls"], 2, "{report}");
    assert_eq!(report["auto"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["parallel_calls"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["after_tool"].is_string(), "{report}");
}
