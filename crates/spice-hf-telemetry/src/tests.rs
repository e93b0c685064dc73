//! Unit tests: the task-history layer and store on real SQLite files, and the Prometheus text.

use tracing_subscriber::layer::SubscriberExt as _;

use crate::names;
use crate::{TaskFilter, TaskHistory, TaskHistoryLayer, TaskRow};

fn with_layer(history: &TaskHistory, f: impl FnOnce()) {
    let layer = TaskHistoryLayer::new(history.clone());
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    tracing::subscriber::with_default(subscriber, f);
    layer.flush();
}

#[test]
fn closed_spans_become_rows_with_fields_parent_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/history.db");
    let history = TaskHistory::open(&path, 100).unwrap();
    with_layer(&history, || {
        let outer = tracing::info_span!(target: "spice_hf_server", "http_request", route = "/v1/chat/completions");
        let _o = outer.enter();
        let span = tracing::info_span!(
            target: "spice_hf_runtime",
            "ai_completion",
            model = "tiny",
            input = "hello",
            captured_output = tracing::field::Empty,
            "gen_ai.usage.output_tokens" = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let _e = span.enter();
        span.record("captured_output", "world");
        span.record("gen_ai.usage.output_tokens", 7u64);
        // Spans of other crates are not tasks.
        let _other = tracing::info_span!(target: "hyper", "conn").entered();
    });
    let rows = history.recent(&TaskFilter::default()).unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    // Newest first: the outer span closes last.
    let (outer, inner) = (&rows[0], &rows[1]);
    assert_eq!(inner.task, "ai_completion");
    assert_eq!(inner.input.as_deref(), Some("hello"));
    assert_eq!(inner.captured_output.as_deref(), Some("world"));
    assert_eq!(inner.error_message, None);
    assert_eq!(inner.labels["model"], "tiny");
    assert_eq!(inner.labels["gen_ai.usage.output_tokens"], 7);
    assert_eq!(inner.trace_id, outer.trace_id);
    assert_eq!(inner.parent_id.as_deref(), Some(outer.span_id.as_str()));
    assert_eq!(outer.parent_id, None);
    assert_eq!(inner.trace_id.len(), 32);
    assert_eq!(inner.span_id.len(), 16);
    assert!(inner.start_ms <= inner.end_ms && inner.duration_ms >= 0.0);

    // The rows are in the file: a second connection reads them.
    let reopened = TaskHistory::open(&path, 100).unwrap();
    assert_eq!(reopened.count().unwrap(), 2);
}

#[test]
fn errors_and_filters() {
    let history = TaskHistory::open_in_memory(100).unwrap();
    with_layer(&history, || {
        for i in 0..3 {
            let s = tracing::info_span!(target: "spice_hf_runtime", "health", model = "m", error = tracing::field::Empty);
            if i == 1 {
                s.record("error", "model produced no token");
            }
        }
        let _ = tracing::info_span!(target: "spice_hf_runtime", "ai_completion", model = "m");
    });
    let health = history
        .recent(&TaskFilter {
            task: Some("health".into()),
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(health.len(), 3);
    assert_eq!(
        health
            .iter()
            .filter(|r| r.error_message.as_deref() == Some("model produced no token"))
            .count(),
        1
    );
    let future = history
        .recent(&TaskFilter {
            since_ms: Some(health[0].start_ms + 60_000),
            ..TaskFilter::default()
        })
        .unwrap();
    assert!(future.is_empty());
    let limited = history
        .recent(&TaskFilter {
            limit: 2,
            ..TaskFilter::default()
        })
        .unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].task, "ai_completion", "newest first");
}

#[test]
fn retention_keeps_the_newest_rows() {
    let history = TaskHistory::open_in_memory(10).unwrap();
    for i in 0..25 {
        history
            .insert(&TaskRow {
                trace_id: format!("{i:032x}"),
                span_id: format!("{i:016x}"),
                parent_id: None,
                task: "t".into(),
                input: None,
                captured_output: None,
                start_ms: i,
                end_ms: i,
                duration_ms: 0.0,
                error_message: None,
                labels: Default::default(),
            })
            .unwrap();
    }
    assert_eq!(history.count().unwrap(), 10);
    let rows = history.recent(&TaskFilter::default()).unwrap();
    assert_eq!(rows.first().unwrap().start_ms, 24);
    assert_eq!(rows.last().unwrap().start_ms, 15);
}

#[test]
fn a_database_path_that_is_a_directory_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = TaskHistory::open(dir.path(), 10).unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn prometheus_text_uses_our_exact_names_and_ms_buckets() {
    let (recorder, handle) = crate::prometheus_recorder().unwrap();
    metrics::with_local_recorder(&recorder, || {
        crate::describe();
        metrics::counter!(names::REQUESTS, names::MODEL => "tiny", names::STREAM => "false")
            .increment(3);
        metrics::counter!(names::PROMPT_TOKENS, names::MODEL => "tiny").increment(40);
        metrics::histogram!(names::REQUEST_DURATION_MS, names::MODEL => "tiny").record(120.0);
        metrics::histogram!(names::INTER_TOKEN_MS, names::MODEL => "tiny").record(42.0);
    });
    let text = handle.render();
    assert!(
        text.contains("llm_requests{model=\"tiny\",stream=\"false\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("llm_prompt_tokens_total{model=\"tiny\"} 40"),
        "{text}"
    );
    assert!(
        text.contains("llm_internal_request_duration_ms_bucket{model=\"tiny\",le=\"250\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("llm_internal_request_duration_ms_bucket{model=\"tiny\",le=\"100\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("llm_inter_token_latency_ms_bucket{model=\"tiny\",le=\"50\"} 1"),
        "{text}"
    );
    assert!(text.contains("# HELP llm_requests "), "{text}");
}

#[test]
fn stored_prompts_are_owner_only_capped_and_dropped_for_refused_tasks() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/history.db");
    let history = TaskHistory::open(&path, 100).unwrap();
    let huge = "é".repeat(1 << 20); // 2 MiB of two-byte characters
    with_layer(&history, || {
        let ok = tracing::info_span!(target: "spice_hf_runtime", "ai_completion", input = huge.as_str(), captured_output = tracing::field::Empty);
        ok.record("captured_output", huge.as_str());
        drop(ok);
        let refused = tracing::info_span!(target: "spice_hf_runtime", "ai_completion", input = huge.as_str(), error = tracing::field::Empty);
        refused.record(
            "error",
            "the prompt has 1000000 tokens; the context holds 2048",
        );
    });
    let rows = history.recent(&TaskFilter::default()).unwrap();
    let (refused, ok) = (&rows[0], &rows[1]);
    for text in [
        ok.input.as_deref().unwrap(),
        ok.captured_output.as_deref().unwrap(),
    ] {
        assert!(
            text.len() <= crate::MAX_CAPTURED_BYTES + 64,
            "{}",
            text.len()
        );
        assert!(text.ends_with(&format!("[truncated: {} bytes in all]", huge.len())));
    }
    assert_eq!(refused.input, None, "a refused request keeps its prompt");
    assert_eq!(refused.labels["input_bytes"], huge.len());
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap()
            .contains("context")
    );

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("new/history.db-wal");
    assert!(wal.exists(), "WAL mode keeps a -wal file while open");
    assert_eq!(mode(&wal), 0o600);

    // A database left world-readable by an older version is tightened when opened.
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(TaskHistory::open(&old, 10).unwrap());
    assert_eq!(mode(&old), 0o600);
}

#[test]
fn a_stuck_writer_drops_rows_instead_of_holding_them_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let history = TaskHistory::open(&path, 100_000).unwrap();
    // Another process holds the write lock: every insert waits for its busy timeout.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let layer = TaskHistoryLayer::new(history.clone());
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    let extra = 100;
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..crate::MAX_PENDING_ROWS + extra {
            drop(tracing::info_span!(target: "spice_hf_runtime", "ai_completion").entered());
        }
    });
    // One row is with the writer, MAX_PENDING_ROWS wait; the rest were dropped at once.
    let dropped = layer.dropped() as usize;
    assert!(
        (extra - 2..=extra).contains(&dropped),
        "{dropped} rows dropped"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    layer.flush();
}
