//! The task history: every completed spice-hf span (completions, health probes, model loads)
//! becomes a row in an embedded SQLite database, with a bound on how many rows are kept.
//!
//! [`TaskHistoryLayer`] is a `tracing` layer that collects the span's fields and hands finished
//! rows to one writer thread, so a request never waits on the disk; [`TaskHistory`] opens the
//! database, writes rows and answers queries (the server's `/v1/task_history`, `spice-hf tasks`).

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, warn};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::names::{FIELD_ERROR, FIELD_INPUT, FIELD_OUTPUT};
use crate::{Error, Result};

/// One completed task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// 32 hex digits, shared by a span and its descendants.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The enclosing recorded span, if any.
    pub parent_id: Option<String>,
    /// The span name (`ai_completion`, `health`, `model_load`).
    pub task: String,
    /// What the task was given (absent when capture is off).
    pub input: Option<String>,
    /// What it produced (absent when capture is off).
    pub captured_output: Option<String>,
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// End, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Duration in milliseconds (monotonic clock).
    pub duration_ms: f64,
    /// The error message of a failed task.
    pub error_message: Option<String>,
    /// Every other span field (model, tokens, finish reason, `gen_ai.*` attributes).
    pub labels: serde_json::Map<String, serde_json::Value>,
}

/// Which rows to return. The default is the 100 most recent rows of every task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this task (span name).
    pub task: Option<String>,
    /// Only rows that started at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only rows that started before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only this trace.
    pub trace_id: Option<String>,
    /// Most rows (newest first).
    pub limit: usize,
}

impl Default for TaskFilter {
    fn default() -> Self {
        Self {
            task: None,
            since_ms: None,
            until_ms: None,
            trace_id: None,
            limit: 100,
        }
    }
}

/// The task-history database. Cloning shares the connection.
#[derive(Debug, Clone)]
pub struct TaskHistory {
    inner: Arc<Store>,
}

#[derive(Debug)]
struct Store {
    path: String,
    conn: Mutex<Connection>,
    retention: usize,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS task_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    task TEXT NOT NULL,
    input TEXT,
    captured_output TEXT,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    error_message TEXT,
    labels TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_history_task_start ON task_history (task, start_ms);
";

/// Most bytes of input, and of output, one row keeps; longer text is cut at a character
/// boundary and ends with a note of the full length.
pub const MAX_CAPTURED_BYTES: usize = 64 << 10;
/// Most bytes of an error message one row keeps.
pub const MAX_ERROR_BYTES: usize = 4 << 10;
/// Most bytes of a row's labels (JSON); larger label sets are replaced by their size.
pub const MAX_LABELS_BYTES: usize = 16 << 10;
/// Rows waiting for the writer thread at most; beyond that new rows are dropped (and counted
/// in a warning) rather than held in memory without bound.
pub const MAX_PENDING_ROWS: usize = 4096;

/// `text` cut to `max` bytes at a character boundary, with a note of the full length.
fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… [truncated: {} bytes in all]",
        &text[..end],
        text.len()
    ))
}

/// Creates `path` owner-only (0600) if it is missing, and makes it owner-only if it exists.
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    drop(o.open(path)?);
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

impl TaskHistory {
    /// Opens (creating it and its directory if needed) the database at `path`, keeping at most
    /// `retention` rows (the oldest go first).
    pub fn open(path: &Path, retention: usize) -> Result<Self> {
        let name = path.display().to_string();
        let err = |reason: String| Error::History {
            path: name.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Stored prompts are private: the database (and so its WAL and shared-memory files,
        // which SQLite creates with the database's mode) is readable by its owner only.
        private_file(path).map_err(|e| err(format!("cannot create it owner-only: {e}")))?;
        let conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err(e.to_string()))?;
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| err(e.to_string()))?;
        for side in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(side);
            let p = std::path::PathBuf::from(p);
            if p.exists() {
                private_file(&p)
                    .map_err(|e| err(format!("cannot make {} owner-only: {e}", p.display())))?;
            }
        }
        Self::with_connection(conn, name, retention)
    }

    /// A database in memory (tests, or when history is switched off but queries must work).
    pub fn open_in_memory(retention: usize) -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|e| Error::History {
            path: ":memory:".into(),
            reason: e.to_string(),
        })?;
        Self::with_connection(conn, ":memory:".into(), retention)
    }

    fn with_connection(conn: Connection, path: String, retention: usize) -> Result<Self> {
        conn.execute_batch(SCHEMA).map_err(|e| Error::History {
            path: path.clone(),
            reason: format!("cannot create the table: {e}"),
        })?;
        Ok(Self {
            inner: Arc::new(Store {
                path,
                conn: Mutex::new(conn),
                retention: retention.max(1),
            }),
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::History {
            path: self.inner.path.clone(),
            reason: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each call is one
        // statement or transaction), so a poisoned lock is still usable.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one row, then drops the oldest rows beyond the retention bound.
    /// Input and output are cut to [`MAX_CAPTURED_BYTES`] each, the error to
    /// [`MAX_ERROR_BYTES`], and the labels to [`MAX_LABELS_BYTES`] of JSON.
    pub fn insert(&self, row: &TaskRow) -> Result<()> {
        let mut labels = serde_json::Value::Object(row.labels.clone()).to_string();
        if labels.len() > MAX_LABELS_BYTES {
            labels = serde_json::json!({ "labels_truncated_bytes": labels.len() }).to_string();
        }
        let input = row.input.as_deref().map(|t| capped(t, MAX_CAPTURED_BYTES));
        let output = row
            .captured_output
            .as_deref()
            .map(|t| capped(t, MAX_CAPTURED_BYTES));
        let error = row
            .error_message
            .as_deref()
            .map(|t| capped(t, MAX_ERROR_BYTES));
        let conn = self.conn();
        conn.execute(
            "INSERT INTO task_history (trace_id, span_id, parent_id, task, input, captured_output,
                start_ms, end_ms, duration_ms, error_message, labels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                row.trace_id,
                row.span_id,
                row.parent_id,
                row.task,
                input,
                output,
                row.start_ms,
                row.end_ms,
                row.duration_ms,
                error,
                labels
            ],
        )
        .map_err(|e| self.err(e))?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "DELETE FROM task_history WHERE id <= ?1",
            params![id - self.inner.retention as i64],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Rows matching `filter`, newest first.
    pub fn recent(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT trace_id, span_id, parent_id, task, input, captured_output, start_ms,
                        end_ms, duration_ms, error_message, labels
                 FROM task_history
                 WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR start_ms >= ?2)
                   AND (?3 IS NULL OR start_ms < ?3) AND (?4 IS NULL OR trace_id = ?4)
                 ORDER BY id DESC LIMIT ?5",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    filter.task,
                    filter.since_ms,
                    filter.until_ms,
                    filter.trace_id,
                    filter.limit as i64
                ],
                |r| {
                    let labels: String = r.get(10)?;
                    Ok(TaskRow {
                        trace_id: r.get(0)?,
                        span_id: r.get(1)?,
                        parent_id: r.get(2)?,
                        task: r.get(3)?,
                        input: r.get(4)?,
                        captured_output: r.get(5)?,
                        start_ms: r.get(6)?,
                        end_ms: r.get(7)?,
                        duration_ms: r.get(8)?,
                        error_message: r.get(9)?,
                        labels: serde_json::from_str(&labels).unwrap_or_default(),
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// How many rows the database holds.
    pub fn count(&self) -> Result<u64> {
        let n: Option<i64> = self
            .conn()
            .query_row("SELECT COUNT(*) FROM task_history", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(n.unwrap_or(0) as u64)
    }
}

/// What the layer keeps per open span.
struct SpanData {
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    start: SystemTime,
    started: Instant,
    input: Option<String>,
    output: Option<String>,
    error: Option<String>,
    labels: serde_json::Map<String, serde_json::Value>,
}

impl Visit for SpanData {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
}

impl SpanData {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let text = || match &value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match field.name() {
            FIELD_INPUT => self.input = Some(text()),
            FIELD_OUTPUT => self.output = Some(text()),
            FIELD_ERROR => self.error = Some(text()),
            name => {
                self.labels.insert(name.to_string(), value);
            }
        }
    }
}

enum Msg {
    Row(Box<TaskRow>),
    Flush(mpsc::Sender<()>),
}

/// A `tracing` layer that turns every closed span whose target starts with `spice_hf` into a
/// [`TaskRow`]. Rows are written by one background thread; [`TaskHistoryLayer::flush`] waits
/// for everything sent so far. Cloning shares the writer.
#[derive(Clone)]
pub struct TaskHistoryLayer {
    tx: Arc<Mutex<mpsc::SyncSender<Msg>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    prefix: &'static str,
}

impl std::fmt::Debug for TaskHistoryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHistoryLayer")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TaskHistoryLayer {
    /// A layer writing into `history`.
    pub fn new(history: TaskHistory) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Msg>(MAX_PENDING_ROWS);
        std::thread::Builder::new()
            .name("spice-hf-task-history".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Row(row) => {
                            if let Err(e) = history.insert(&row) {
                                warn!(error = %e, task = %row.task, "task history row dropped");
                            }
                        }
                        Msg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            })
            .ok();
        Self {
            tx: Arc::new(Mutex::new(tx)),
            dropped: Arc::default(),
            prefix: "spice_hf",
        }
    }

    /// Waits for room (flushes only).
    fn send(&self, msg: Msg) -> bool {
        let tx = self.tx.lock().map(|tx| tx.clone());
        tx.map(|tx| tx.send(msg).is_ok()).unwrap_or(false)
    }

    /// Never waits: a row that finds the queue full is dropped and counted.
    fn offer(&self, msg: Msg) {
        let full = self
            .tx
            .lock()
            .map(|tx| matches!(tx.try_send(msg), Err(mpsc::TrySendError::Full(_))))
            .unwrap_or(false);
        if full {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_power_of_two() {
                warn!(dropped = n, "task history writer is behind; rows dropped");
            }
        }
    }

    /// Rows dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until every row of a span closed before this call is in the database.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        if self.send(Msg::Flush(ack)) {
            let _ = done.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<S> Layer<S> for TaskHistoryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !span.metadata().target().starts_with(self.prefix) {
            return;
        }
        let parent = span.scope().skip(1).find_map(|p| {
            p.extensions()
                .get::<SpanData>()
                .map(|d| (d.trace_id, d.span_id))
        });
        let mut data = SpanData {
            trace_id: parent.map(|p| p.0).unwrap_or_else(rand::random),
            span_id: rand::random(),
            parent: parent.map(|p| p.1),
            start: SystemTime::now(),
            started: Instant::now(),
            input: None,
            output: None,
            error: None,
            labels: serde_json::Map::new(),
        };
        attrs.record(&mut data);
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(data) = span.extensions_mut().get_mut::<SpanData>()
        {
            values.record(data);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        let end = SystemTime::now();
        let mut data = data;
        // A task refused before it produced anything keeps no content: only the input's size.
        if data.error.is_some()
            && data.output.is_none()
            && let Some(input) = data.input.take()
        {
            data.labels
                .insert("input_bytes".into(), (input.len() as u64).into());
        }
        let row = TaskRow {
            trace_id: format!("{:032x}", data.trace_id),
            span_id: format!("{:016x}", data.span_id),
            parent_id: data.parent.map(|p| format!("{p:016x}")),
            task: span.name().to_string(),
            input: data.input,
            captured_output: data.output,
            start_ms: unix_ms(data.start),
            end_ms: unix_ms(end),
            duration_ms: data.started.elapsed().as_secs_f64() * 1000.0,
            error_message: data.error,
            labels: data.labels,
        };
        self.offer(Msg::Row(Box::new(row)));
    }
}
