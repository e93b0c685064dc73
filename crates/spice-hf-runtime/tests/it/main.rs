//! Runtime integration tests on the tiny random Llama the test kit writes (real safetensors,
//! tokenizer and template on disk, the real CPU backend, real threads), and on the real SmolLM2 GGUF where a generation must outlast the test's actions.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spice_hf_models::chat::Message;
use spice_hf_models::generate::GenerateParams;
use spice_hf_runtime::{
    CompletionRequest, Error, Event, Health, LimiterConfig, ModelSpec, Prompt, Runtime, Source,
};
use spice_hf_telemetry::{TaskFilter, TaskHistory, TaskHistoryLayer};
use spice_hf_testkit::fixtures;
use tracing_subscriber::layer::SubscriberExt as _;

fn tiny(dir: &Path, name: &str) -> ModelSpec {
    fixtures::write_tiny_llama(dir, 7).unwrap();
    let mut spec = ModelSpec::new(name, Source::Path(dir.to_path_buf()));
    spec.context_length = 256;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    spec
}

fn long_params(tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: tokens,
        ignore_eos: true,
        ..GenerateParams::default()
    }
}

fn chat(text: &str) -> Prompt {
    Prompt::Chat(vec![Message::new("user", text)])
}

/// Installs a task-history layer for the whole test process (nextest runs one test per process).
fn history() -> (TaskHistory, TaskHistoryLayer) {
    let history = TaskHistory::open_in_memory(1000).unwrap();
    let layer = TaskHistoryLayer::new(history.clone());
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer.clone()))
        .unwrap();
    (history, layer)
}

/// The `ai_completion` rows of the task history, newest first.
fn completion_rows(history: &TaskHistory) -> Vec<spice_hf_telemetry::TaskRow> {
    history
        .recent(&TaskFilter {
            task: Some("ai_completion".into()),
            ..TaskFilter::default()
        })
        .unwrap()
}

/// The completion rows once there are `n`: a request's span closes on its blocking thread just
/// after the caller got its last event, so the row can land a moment after the answer.
async fn rows_once(
    history: &TaskHistory,
    layer: &spice_hf_telemetry::TaskHistoryLayer,
    n: usize,
) -> Vec<spice_hf_telemetry::TaskRow> {
    wait_for("the task-history rows", || {
        layer.flush();
        completion_rows(history).len() >= n
    })
    .await;
    completion_rows(history)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_matches_the_model_layer_and_the_stream_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny(dir.path(), "tiny");
    let runtime = Runtime::new(vec![spec]).unwrap();
    assert!(!runtime.ready());
    runtime.load_initial().await;
    assert!(runtime.ready());
    let model = runtime.model("tiny").unwrap();
    assert_eq!(model.health(), Health::Ready);
    let info = model.info();
    assert_eq!(info.backend, Some(spice_hf_runtime::BackendKind::Cpu));
    assert!(info.estimated_bytes.unwrap() > 0 && info.load_ms.unwrap() > 0.0);

    let mut request = CompletionRequest::new(chat("hello"));
    request.params = Some(long_params(12));
    let done = model.generate(request.clone()).await.unwrap();
    assert_eq!(done.completion_tokens, 12);
    assert_eq!(done.finish_reason, spice_hf_runtime::FinishReason::Length);

    // The same prompt through the model layer directly gives the same ids.
    let direct = spice_hf_testkit::reference::direct(
        dir.path(),
        &[Message::new("user", "hello")],
        &long_params(12),
    );
    assert_eq!(done.prompt_tokens, direct.prompt_tokens);
    assert_eq!(done.token_ids, direct.token_ids);

    // Streaming yields the same text in pieces, then Done.
    let mut stream = model.stream(request).await.unwrap();
    let mut text = String::new();
    let mut last = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::ToolCall(..) => panic!("no tools were given"),
            Event::Done(c) => last = Some(c),
            Event::Error(e) => panic!("{e}"),
        }
    }
    let last = last.unwrap();
    assert_eq!(text, last.text);
    assert_eq!(last.token_ids, done.token_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_it_frees_the_permit_and_is_recorded() {
    let Some(spec) = smollm2("smol") else { return };
    let (history, layer) = history();
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("smol").unwrap();
    let mut request = CompletionRequest::new(chat("go on"));
    request.params = Some(long_params(240));
    let mut stream = model.stream(request.clone()).await.unwrap();
    assert!(matches!(stream.next().await, Some(Event::Text(_))));
    assert_eq!(model.limiter().running(), 1);
    drop(stream);
    wait_for("the permit to be freed", || model.limiter().running() == 0).await;
    // The slot serves the next request.
    request.params = Some(long_params(3));
    assert_eq!(model.generate(request).await.unwrap().completion_tokens, 3);
    let rows = rows_once(&history, &layer, 2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let cancelled = &rows[1];
    assert_eq!(cancelled.labels["finish_reason"], "cancelled");
    assert!(cancelled.labels["completion_tokens"].as_u64().unwrap() < 240);
    assert!(
        cancelled
            .error_message
            .as_deref()
            .unwrap()
            .contains("cancelled")
    );
    assert_eq!(rows[0].labels["finish_reason"], "length");
    assert_eq!(rows[0].labels["gen_ai.usage.output_tokens"], 3);
    assert_eq!(rows[0].labels["gen_ai.operation.name"], "chat");
    assert!(rows[0].input.as_deref().unwrap().contains("go on"));
    // The load and the warm-up probe are tasks too.
    let loads = history
        .recent(&TaskFilter {
            task: Some("model_load".into()),
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].labels["backend"], "cpu");
}

/// The real SmolLM2 (about 40 ms a token here), so that a long generation is surely still
/// running when the test acts on it. Missing, it fails the test (see `fixtures::missing`).
fn smollm2(name: &str) -> Option<ModelSpec> {
    let path = fixtures::smollm2_gguf_or_skip()?;
    let mut spec = ModelSpec::new(name, Source::Path(path));
    spec.context_length = 512;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    Some(spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_exactly_the_overflow_and_metrics_count_it() {
    let (recorder, handle) = spice_hf_telemetry::prometheus_recorder().unwrap();
    metrics::set_global_recorder(recorder).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tiny(dir.path(), "tiny");
    spec.limits = LimiterConfig::default()
        .with_max_concurrency(NonZeroUsize::new(1).unwrap())
        .with_max_queue(2);
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("tiny").unwrap();
    // The slot is taken (as a running request would hold it) until the queue is full.
    let holder = model.limiter().try_acquire().unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let model = model.clone();
        let mut r = CompletionRequest::new(chat(&format!("request {i}")));
        r.params = Some(long_params(2));
        tasks.push(tokio::spawn(async move { model.generate(r).await }));
    }
    wait_for("queue full and the rest refused", || {
        model.limiter().waiting() == 2 && tasks.iter().filter(|t| t.is_finished()).count() == 4
    })
    .await;
    drop(holder);
    let mut ok = 0;
    let mut overloaded = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => {
                assert_eq!(c.completion_tokens, 2);
                ok += 1;
            }
            Err(Error::Overloaded { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1));
                overloaded += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, overloaded), (2, 4));
    let text = handle.render();
    assert!(
        text.contains(r#"llm_requests{model="tiny",stream="false"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"llm_failures{model="tiny",stream="false",kind="overloaded"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"llm_finished{model="tiny",stream="false",finish_reason="length"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"llm_completion_tokens_total{model="tiny"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"llm_requests_waiting{model="tiny"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_marks_the_model_unhealthy_and_a_success_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(vec![tiny(dir.path(), "tiny")]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("tiny").unwrap();
    assert!(runtime.ready());
    // A prompt longer than the context makes the generation fail for real.
    let long = "x".repeat(400);
    match model.probe(&long).await {
        Health::Unhealthy(reason) => assert!(reason.contains("context"), "{reason}"),
        other => panic!("expected unhealthy, got {other:?}"),
    }
    assert!(!runtime.ready());
    assert_eq!(model.health_check().await, Health::Ready);
    assert!(runtime.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_models_load_on_first_request_and_failed_loads_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut lazy = tiny(&dir.path().join("a"), "lazy");
    lazy.initial_load = false;
    let mut broken = ModelSpec::new(
        "broken",
        Source::Path(dir.path().join("missing/model.gguf")),
    );
    broken.initial_load = false;
    let runtime = Runtime::new(vec![lazy, broken]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("lazy").unwrap();
    assert_eq!(model.health(), Health::NotLoaded);
    let done = model
        .generate(CompletionRequest::new(Prompt::Text("abc".into())))
        .await
        .unwrap();
    assert!(done.completion_tokens >= 1);
    assert_eq!(model.health(), Health::Ready);

    let broken = runtime.model("broken").unwrap();
    let err = broken
        .generate(CompletionRequest::new(Prompt::Text("abc".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    // The model layer's own error is kept, typed, under the runtime's.
    let cause = err.cause().expect("a load error keeps its cause");
    assert!(
        cause.downcast_ref::<spice_hf_models::Error>().is_some(),
        "{cause:?}"
    );
    assert!(matches!(broken.health(), Health::Failed(_)));
    assert!(matches!(runtime.model("nope"), Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_with_named_errors_and_free_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let with = tiny(&dir.path().join("with"), "with");
    let without_dir = dir.path().join("without");
    let mut without = tiny(&without_dir, "without");
    // The same model without a chat template.
    let cfg_path = without_dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    without.initial_load = true;
    let runtime = Runtime::new(vec![with, without]).unwrap();
    runtime.load_initial().await;

    let without = runtime.model("without").unwrap();
    let err = without
        .generate(CompletionRequest::new(chat("hi")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err}");
    assert!(err.to_string().contains("no chat template"), "{err}");
    // Plain completion still works, and so did the warm-up probe.
    assert_eq!(without.health(), Health::Ready);
    without
        .generate(CompletionRequest::new(Prompt::Text("hi".into())))
        .await
        .unwrap();

    let with = runtime.model("with").unwrap();
    let err = with
        .generate(CompletionRequest::new(Prompt::Text("y".repeat(300))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ContextLength { capacity: 256, .. }),
        "{err}"
    );
    let err = with
        .generate(CompletionRequest::new(Prompt::Chat(vec![])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let mut zero = CompletionRequest::new(chat("hi"));
    zero.params = Some(long_params(0));
    let err = with.generate(zero).await.unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
    assert_eq!(with.limiter().running() + with.limiter().waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_work_and_cancels_running_generations() {
    let Some(spec) = smollm2("smol") else { return };
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("smol").unwrap();
    let mut request = CompletionRequest::new(chat("long"));
    request.params = Some(long_params(240));
    let running = tokio::spawn({
        let model = Arc::clone(&model);
        let request = request.clone();
        async move { model.generate(request).await }
    });
    wait_for("the generation to start", || model.limiter().running() == 1).await;
    runtime.stop_admitting();
    assert!(matches!(
        model.generate(request).await,
        Err(Error::ShuttingDown)
    ));
    runtime.cancel_all();
    let done = running.await.unwrap().unwrap();
    assert_eq!(
        done.finish_reason,
        spice_hf_runtime::FinishReason::Cancelled
    );
    assert!(done.completion_tokens < 240);
    assert_eq!(runtime.in_flight(), 0);
}

#[test]
fn invalid_specs_are_refused() {
    let spec = |name: &str| ModelSpec::new(name, Source::Path("x".into()));
    let err = Runtime::new(vec![spec("a"), spec("a")]).unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
    let err = Runtime::new(vec![spec("has space")]).unwrap_err();
    assert!(err.to_string().contains("has space"), "{err}");
    let mut small = spec("s");
    small.context_length = 2;
    assert!(Runtime::new(vec![small]).is_err());
}

/// `dir`'s tiny model with its chat template replaced by `template`.
fn with_template(dir: &Path, name: &str, template: &str) -> ModelSpec {
    let spec = tiny(dir, name);
    let cfg_path = dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = template.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_only_on_a_granted_slot_and_a_runaway_one_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let runaway =
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let mut spec = with_template(dir.path(), "loops", runaway);
    spec.limits = LimiterConfig::default()
        .with_max_concurrency(NonZeroUsize::new(1).unwrap())
        .with_max_queue(1);
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("loops").unwrap();
    assert_eq!(
        model.health(),
        Health::Ready,
        "the warm-up is a plain prompt"
    );
    // The slot is busy. The first chat request queues; the second is refused at once, before
    // its template runs (rendered first, it would fail as a template error, or never end).
    let holder = model.limiter().try_acquire().unwrap();
    let spawn = || {
        let model = model.clone();
        tokio::spawn(async move { model.generate(CompletionRequest::new(chat("hi"))).await })
    };
    let first = spawn();
    wait_for("the first request to queue", || {
        model.limiter().waiting() == 1
    })
    .await;
    let second = spawn().await.unwrap().unwrap_err();
    assert!(matches!(second, Error::Overloaded { .. }), "{second}");
    assert!(!first.is_finished());
    // With the slot, the runaway template is stopped by its fuel and named.
    drop(holder);
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Template(_)), "{err}");
    assert!(err.to_string().contains("steps"), "{err}");
    assert_eq!(model.limiter().running() + model.limiter().waiting(), 0);
    assert_eq!(model.health(), Health::Ready);
}

/// A real panic inside generation: a `tokenizer.json` whose decoder chain ends in a `Strip`
/// that the `tokenizers` crate (0.23) cannot apply to a token made only of its character (it
/// subtracts past the token's start: tokenizers PR #2154). Every generated token is first
/// mapped to `a`, so the first one decoded panics. The request fails as an internal error
/// naming the panic (not as cancelled), the slot is free again, the row says so, and the
/// model keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_generation_is_an_internal_failure_not_a_cancellation() {
    let (history, layer) = history();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = tiny(dir.path(), "crashy");
    spec.warm_up = false;
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    tokenizer["decoder"] = serde_json::json!({"type": "Sequence", "decoders": [
        tokenizer["decoder"].clone(),
        {"type": "Replace", "pattern": {"Regex": "(?s)."}, "content": "a"},
        {"type": "Strip", "content": "a", "start": 0, "stop": 64}
    ]});
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("crashy").unwrap();
    let mut request = CompletionRequest::new(chat("hi"));
    request.params = Some(long_params(4));
    let err = model.generate(request.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_eq!(err.kind(), "internal");
    // The blocking task releases the slot right after it reports.
    wait_for("the slot to be freed", || {
        model.limiter().running() + model.limiter().waiting() == 0
    })
    .await;
    // The stream says the same, as its last event.
    let mut stream = model.stream(request.clone()).await.unwrap();
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event);
    }
    assert!(
        matches!(&last, Some(Event::Error(e)) if matches!(e, Error::Internal(_))),
        "{last:?}"
    );
    let rows = rows_once(&history, &layer, 2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_ne!(
            row.labels.get("finish_reason").and_then(|v| v.as_str()),
            Some("cancelled"),
            "{row:#?}"
        );
        assert!(
            row.error_message
                .as_deref()
                .unwrap_or("")
                .contains("panicked"),
            "{row:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_lazy_load_count_against_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    fixtures::write_tiny_llama(&path, 7).unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    // A fetch that finishes when the test says (a slow download).
    let fetch_path = path.clone();
    let source = Source::Fetch(Arc::new(move || {
        let path = fetch_path.clone();
        let mut released = released.clone();
        Box::pin(async move {
            let _ = released.wait_for(|r| *r).await;
            Ok(path)
        })
    }));
    let mut spec = ModelSpec::new("lazy", source);
    spec.context_length = 256;
    spec.backend = Some(spice_hf_backend::BackendKind::Cpu);
    spec.initial_load = false;
    spec.limits = LimiterConfig::default()
        .with_max_concurrency(NonZeroUsize::new(1).unwrap())
        .with_max_queue(1);
    let runtime = Runtime::new(vec![spec]).unwrap();
    let model = runtime.model("lazy").unwrap();
    let spawn = || {
        let model = model.clone();
        let mut r = CompletionRequest::new(Prompt::Text("abc".into()));
        r.params = Some(long_params(2));
        tokio::spawn(async move { model.generate(r).await })
    };
    let loading = spawn();
    wait_for("the first request to hold the slot", || {
        model.limiter().running() == 1
    })
    .await;
    let queued = spawn();
    wait_for("the second to queue", || model.limiter().waiting() == 1).await;
    // The load has not finished, and the third is already refused.
    let third = spawn().await.unwrap().unwrap_err();
    assert!(matches!(third, Error::Overloaded { .. }), "{third}");
    assert_ne!(model.health(), Health::Ready);
    release.send(true).unwrap();
    assert_eq!(loading.await.unwrap().unwrap().completion_tokens, 2);
    assert_eq!(queued.await.unwrap().unwrap().completion_tokens, 2);
    assert_eq!(model.health(), Health::Ready);
}

/// The value of the sample of `name` for model `model` in a Prometheus text exposition.
fn gauge(text: &str, name: &str, model: &str) -> f64 {
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_cache_gauge_counts_the_positions_running_requests_hold() {
    let (recorder, handle) = spice_hf_telemetry::prometheus_recorder().unwrap();
    metrics::set_global_recorder(recorder).unwrap();
    let Some(mut spec) = smollm2("smol") else {
        return;
    };
    spec.limits = LimiterConfig::default().with_max_concurrency(NonZeroUsize::new(2).unwrap());
    spec.warm_up = false;
    let runtime = Runtime::new(vec![spec]).unwrap();
    runtime.load_initial().await;
    let model = runtime.model("smol").unwrap();
    // Sized for 2 requests x 512 positions.
    let capacity = 2.0 * 512.0;
    let mut request = CompletionRequest::new(chat("Count to a hundred."));
    request.params = Some(long_params(48));
    let mut stream = model.stream(request).await.unwrap();
    let mut pieces = 0;
    let mut during = 0.0;
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Text(_) => {
                pieces += 1;
                if pieces == 8 {
                    // Generation runs on (about 40 ms a token): the request holds its prompt
                    // and at least the 8 tokens sent so far.
                    during = gauge(&handle.render(), "llm_kv_cache_usage_ratio", "smol");
                }
            }
            Event::ToolCall(..) => panic!("no tools were given"),
            Event::Done(c) => done = Some(c),
            Event::Error(e) => panic!("{e}"),
        }
    }
    let done = done.unwrap();
    assert!(
        during >= (done.prompt_tokens + 8) as f64 / capacity
            && during <= (done.prompt_tokens + 49) as f64 / capacity,
        "{during} with {} prompt tokens",
        done.prompt_tokens
    );
    // Finished, it holds nothing.
    assert_eq!(
        gauge(&handle.render(), "llm_kv_cache_usage_ratio", "smol"),
        0.0
    );
}
