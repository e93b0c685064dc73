//! Embeddings end to end: the real all-MiniLM-L6-v2, served by `spice-hf serve` from the
//! project's mirror (as a Hub repository) next to SmolLM2, against sentence-transformers'
//! vectors (the models crate's golden file): the official OpenAI Python client
//! (`tests/py/embeddings.py`: base64 and float, token ids, a refused chat), an input over the
//! model's length (400 `context_length_exceeded`, or cut when the request asks), each model
//! refusing the other's endpoint by name, `/v1/models`, the metrics and the task history; and
//! `spice-hf embed` on the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use spice_hf_mirror::Mirror;
use spice_hf_testkit::serving::metric_sum;
use spice_hf_testkit::{FakeHub, fixtures, repo_with};

use super::serve::launch;
use super::{require, spice, text};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spice-hf-models/tests/data/minilm/golden.json")
}

fn golden() -> Vec<(String, Vec<f64>)> {
    let g: Value = serde_json::from_slice(&std::fs::read(golden_path()).unwrap()).unwrap();
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// The repository's files, as the mirror serves them.
fn minilm_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "1_Pooling/config.json",
    ]
    .into_iter()
    .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
    .collect()
}

fn worst(got: &Value, want: &[f64]) -> f64 {
    got.as_array()
        .unwrap()
        .iter()
        .zip(want)
        .map(|(g, w)| (g.as_f64().unwrap() - w).abs())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_served_from_the_mirror_match_sentence_transformers() {
    let (Some(dir), Some(gguf)) = (
        fixtures::minilm_dir_or_skip(),
        fixtures::smollm2_gguf_or_skip(),
    ) else {
        return;
    };
    let mirror = Mirror::new();
    mirror.add_repo(repo_with(MINILM, &minilm_files(&dir)));
    let hub = FakeHub::start(mirror).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("spice.yaml");
    std::fs::write(
        &cfg,
        format!(
            "models:\n  - from: {MINILM}\n    name: minilm\n  - from: {}\n    name: smol\n    params:\n      context_length: 512\nserver:\n  addr: 127.0.0.1:0\n",
            gguf.display()
        ),
    )
    .unwrap();
    let mut cmd = spice(hub.url(), home.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--task-history")
        .arg(home.path().join("history.db"));
    let served = launch(cmd).await;
    served.wait_ready().await;

    // The official client: base64 (its default) and floats, ids in, a chat refused.
    require(
        "python3",
        "install Python 3 with `pip install openai jsonschema`",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/embeddings.py");
    #[allow(clippy::disallowed_methods)] // Reason: the test drives the real Python client.
    let mut py = std::process::Command::new("python3");
    py.arg(&script)
        .arg(&served.base)
        .arg("minilm")
        .arg(golden_path());
    let out = tokio::task::spawn_blocking(move || py.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "the OpenAI client's checks failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap_or_default()).unwrap();
    assert!(report["base64_worst"].as_f64().unwrap() < 1e-4, "{report}");

    // One string in, one vector out, as OpenAI shapes it.
    let cases = golden();
    let v: Value = served
        .post(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": cases[2].0, "encoding_format": "float", "dimensions": 384}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "minilm");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert!(worst(&v["data"][0]["embedding"], &cases[2].1) < 1e-4, "{v}");

    // Over the model's 256 tokens: refused with OpenAI's code, or cut when asked.
    let long = "word ".repeat(400);
    let r = served
        .post("/v1/embeddings", &json!({"model": "minilm", "input": long}))
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "context_length_exceeded", "{e}");
    let r = served
        .post(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": long, "truncate": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let cut: Value = r.json().await.unwrap();
    assert_eq!(cut["usage"]["prompt_tokens"], 256, "{cut}");

    // Each model refuses the other's endpoint, naming itself; a dimension it cannot give.
    for (path, body, name) in [
        (
            "/v1/embeddings",
            json!({"model": "smol", "input": "hi"}),
            "smol",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}),
            "minilm",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": "hi", "dimensions": 128}),
            "minilm",
        ),
        (
            "/v1/embeddings",
            json!({"model": "minilm", "input": []}),
            "input",
        ),
    ] {
        let r = served.post(path, &body).await;
        assert_eq!(r.status(), 400, "{path} {body}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(name),
            "{path} {body}: {e}"
        );
    }
    let models: Value = served.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["minilm", "smol"]);

    // Metrics and task history: the client's 3 requests and our 5 (3 answered, 2 refused).
    let m = served.get("/metrics").await.text().await.unwrap();
    let answered = metric_sum(&m, "llm_embedding_requests_total{model=\"minilm\"}");
    assert_eq!(answered, 8.0, "{m}");
    assert!(metric_sum(&m, "llm_embedding_inputs_total{model=\"minilm\"}") >= 19.0);
    let rows: Value = served
        .get("/v1/task_history?task=embeddings&limit=100")
        .await
        .json()
        .await
        .unwrap();
    let rows = rows["data"].as_array().unwrap();
    assert!(rows.len() >= 8, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["labels"]["model"] == "minilm" && r["error_message"].is_null()),
        "{rows:?}"
    );
    let refused = rows
        .iter()
        .find(|r| r["labels"]["input_bytes"] == 2000)
        .expect("the long input's row");
    assert!(
        refused["error_message"]
            .as_str()
            .unwrap()
            .contains("input 0 has 402 tokens but the model takes at most 256"),
        "{refused}"
    );
}

#[test]
fn embed_on_the_command_line_prints_one_json_line_per_text() {
    let Some(dir) = fixtures::minilm_dir_or_skip() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let cases = golden();
    let out = spice("http://127.0.0.1:9", home.path())
        .arg("embed")
        .arg(&dir)
        .args([&cases[0].0, &cases[1].0])
        .args(["--backend", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        assert_eq!(line["text"], cases[i].0);
        assert_eq!(line["dimensions"], 384);
        assert!(worst(&line["embedding"], &cases[i].1) < 1e-4, "{line}");
    }
    // A model that generates has no embeddings: refused by name.
    let Some(gguf) = fixtures::smollm2_gguf_or_skip() else {
        return;
    };
    let out = spice("http://127.0.0.1:9", home.path())
        .arg("embed")
        .arg(&gguf)
        .arg("hello")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no embeddings"),
        "{}",
        text(&out.stderr)
    );
}
