//! The facade against the fake Hub (pull, load, answer, offline, typed errors) and its backend
//! features, each on its own.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_pulls_loads_and_answers_then_works_offline() {
    use spice_hf_models::chat::Message;
    let mirror = spice_hf_mirror::Mirror::new();
    mirror.add_repo(spice_hf_testkit::repo_with(
        "org/tiny",
        &spice_hf_testkit::fixtures::tiny_llama_files(4),
    ));
    let hub = spice_hf_testkit::FakeHub::start(mirror).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let build = || {
        crate::Model::builder("org/tiny")
            .endpoint(hub.url())
            .cache_dir(cache.path())
            .backend(crate::backend::BackendKind::Cpu)
            .context_length(256)
            .max_concurrency(1)
    };
    let model = build().load().await.unwrap();
    assert_eq!(model.info().backend, Some(crate::backend::BackendKind::Cpu));
    let answer = model.chat(&[Message::new("user", "hello")]).await.unwrap();
    assert!(answer.completion_tokens >= 1);
    assert!(answer.prompt_tokens > 1);
    let requests = hub.requests().len();
    // Offline, from the cache: the same answer without a single request.
    let again = build().offline(true).load().await.unwrap();
    let second = again.chat(&[Message::new("user", "hello")]).await.unwrap();
    assert_eq!(second.token_ids, answer.token_ids);
    assert_eq!(hub.requests().len(), requests);

    // Bad input is the layer's own error, named.
    let err = build().max_concurrency(0).load().await.unwrap_err();
    assert!(err.to_string().contains("max_concurrency 0"), "{err}");
    let err = crate::Model::builder("org/tiny@bad..rev")
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, crate::Error::Hub(_)), "{err}");
    let err = crate::Model::builder("org/missing")
        .endpoint(hub.url())
        .cache_dir(cache.path())
        .load()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("org/missing"), "{err}");
    // The hub's error stays typed under the runtime's: a caller can tell a missing repository
    // (or a gated one) from any other failure without reading the message.
    let crate::Error::Runtime(e) = &err else {
        panic!("{err:?}")
    };
    let hub_error = e
        .cause()
        .and_then(|c| c.downcast_ref::<spice_hf_hub::Error>());
    assert!(
        matches!(hub_error, Some(spice_hf_hub::Error::RepoNotFound { repo, .. }) if repo == "org/missing"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_json_and_chat_with_tools_give_answers_that_validate() {
    use crate::runtime::{FinishReason, Tool, ToolChoice, Tools};
    use spice_hf_models::chat::Message;
    let dir = tempfile::tempdir().unwrap();
    // The default tool format's system message alone is 600 of the tiny byte-level
    // tokenizer's tokens: the tiny model gets a longer context than its usual 256.
    for (name, bytes) in spice_hf_testkit::fixtures::tiny_llama_files(6) {
        let bytes = match name.as_str() {
            "config.json" => String::from_utf8(bytes)
                .unwrap()
                .replace(
                    "\"max_position_embeddings\": 256",
                    "\"max_position_embeddings\": 1024",
                )
                .into_bytes(),
            _ => bytes,
        };
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let model = crate::Model::builder(dir.path().to_str().unwrap())
        .backend(crate::backend::BackendKind::Cpu)
        .context_length(1024)
        .load()
        .await
        .unwrap();
    let ask = [Message::new("user", "hello")];
    // A random-weight model: only the constraint makes its answer JSON.
    let schema = serde_json::json!({"type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"], "additionalProperties": false});
    let answer = model.chat_json(&ask, schema).await.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let v: serde_json::Value = serde_json::from_str(&answer.text).unwrap();
    assert!(
        v["ok"].is_boolean() && [1, 2, 3].contains(&v["n"].as_i64().unwrap()),
        "{v}"
    );
    let err = model
        .chat_json(
            &ask,
            serde_json::json!({"type": "array", "uniqueItems": true}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("uniqueItems"), "{err}");

    let tools = Tools {
        tools: vec![Tool::new(
            "pick",
            Some("Picks a colour"),
            Some(serde_json::json!({"type": "object",
                "properties": {"colour": {"enum": ["red", "blue"]}},
                "required": ["colour"], "additionalProperties": false})),
        )],
        choice: ToolChoice::Required,
        parallel: false,
    };
    let answer = model.chat_with_tools(&ask, tools).await.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls, "{answer:?}");
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].name, "pick");
    let args: serde_json::Value = serde_json::from_str(&answer.tool_calls[0].arguments).unwrap();
    assert!(
        ["red", "blue"].contains(&args["colour"].as_str().unwrap()),
        "{args}"
    );
}

#[test]
fn each_facade_feature_alone_enables_its_backend_and_no_other() {
    const BACKENDS: [&str; 4] = ["wgpu", "vulkan", "metal", "cuda"];
    let enabled = |facade: &str, package: &str| -> Vec<String> {
        #[allow(clippy::disallowed_methods)] // Reason: asks cargo itself to resolve features.
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "tree",
                "-p",
                "spice-hf",
                "--no-default-features",
                "--features",
            ])
            .arg(facade)
            .args([
                "-e",
                "features",
                "--prefix",
                "none",
                "--locked",
                "--offline",
                "-i",
            ])
            .arg(package)
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{package} feature \"");
        let mut features: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split('"').next())
            .filter(|f| BACKENDS.contains(f))
            .map(str::to_string)
            .collect();
        features.sort();
        features.dedup();
        features
    };
    // (facade feature, backend features, Burn features) among the GPU backends.
    let table: [(&str, &[&str], &[&str]); 5] = [
        ("cpu", &[], &[]),
        ("wgpu", &["wgpu"], &["wgpu"]),
        ("vulkan", &["vulkan", "wgpu"], &["vulkan", "wgpu"]),
        ("metal", &["metal", "wgpu"], &["metal", "wgpu"]),
        ("cuda", &["cuda"], &["cuda"]),
    ];
    for (facade, backend, burn) in table {
        assert_eq!(
            enabled(facade, "spice-hf-backend"),
            backend,
            "--features {facade}"
        );
        assert_eq!(enabled(facade, "burn"), burn, "--features {facade}: Burn");
    }
}

/// Swapping the backend at run time through the builder: the same model on the CPU and on a
/// forced wgpu (Mesa's software Vulkan in CI) gives the same greedy answer.
#[cfg(feature = "wgpu")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_swaps_backends_at_run_time() {
    use crate::backend::BackendKind;
    use spice_hf_models::chat::Message;
    let dir = tempfile::tempdir().unwrap();
    spice_hf_testkit::fixtures::write_tiny_llama(dir.path(), 4).unwrap();
    let mut answers = Vec::new();
    for kind in [BackendKind::Cpu, BackendKind::Wgpu] {
        let model = crate::Model::builder(dir.path().to_str().unwrap())
            .backend(kind)
            .context_length(128)
            .load()
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let info = model.info();
        assert_eq!(info.backend, Some(kind));
        assert!(info.skipped_backends.is_empty(), "forced: nothing skipped");
        let answer = model.chat(&[Message::new("user", "hello")]).await.unwrap();
        answers.push((answer.token_ids, info.device.unwrap()));
    }
    assert_eq!(answers[0].0, answers[1].0);
    assert!(
        answers[0].1.starts_with("cpu kernels: "),
        "{}",
        answers[0].1
    );
    assert!(!answers[1].1.starts_with("cpu kernels"), "{}", answers[1].1);
}

/// `Model::embed` on the real all-MiniLM-L6-v2 directory: the vectors of sentence-transformers
/// (the models crate's golden file), and a chat model refusing to embed by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_gives_the_vectors_of_sentence_transformers() {
    use crate::Model;
    use crate::backend::BackendKind;
    use spice_hf_models::chat::Message;
    let Some(dir) = spice_hf_testkit::fixtures::minilm_dir_or_skip() else {
        return;
    };
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../spice-hf-models/tests/data/minilm/golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let model = Model::builder(dir.to_str().unwrap())
        .backend(BackendKind::Cpu)
        .load()
        .await
        .unwrap();
    let vectors = model.embed(&texts).await.unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (v, c) in vectors.iter().zip(cases) {
        let worst = v
            .iter()
            .zip(c["embedding"].as_array().unwrap())
            .map(|(g, w)| (f64::from(*g) - w.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{}: {worst:e}", c["text"]);
    }
    let err = model
        .chat(&[Message::new("user", "hi")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("embedding model"), "{err}");
}
