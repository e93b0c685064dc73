//! `spice-hf serve` (one model from the command line, or several from a YAML file) and
//! `spice-hf tasks` (the task history). This is where the Prometheus recorder and the
//! task-history layer are installed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use spice_hf_backend::BackendKind;
use spice_hf_models::generate::GenerateParams;
use spice_hf_runtime::{Activations, KvDtype, LimiterConfig, ModelSpec, Runtime};
use spice_hf_telemetry::{TaskFilter, TaskHistory, TaskHistoryLayer};

use crate::config::{BackendChoice, Config, ModelEntry, Params, default_name};

/// `spice-hf serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A Hub reference ([hf:]org/name[@revision]), a model directory or a .gguf file.
    #[arg(required_unless_present = "config")]
    model: Option<String>,
    /// Serve the models listed in this YAML file instead.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "name", "max_concurrency", "max_queue", "quant", "context", "threads", "kv_cache", "activations"])]
    config: Option<PathBuf>,
    /// The model's id in /v1/models [default: the reference, or the file stem].
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on (port 0 picks a free one; the address is printed) [default: 127.0.0.1:8080].
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Requests generating at once [default: 1].
    #[arg(long)]
    max_concurrency: Option<NonZeroUsize>,
    /// Requests waiting beyond that; more are refused with 503 [default: 16].
    #[arg(long)]
    max_queue: Option<usize>,
    /// GGUF quantization to pull from a Hub repository (q4_1, Q8_0, ...).
    #[arg(long)]
    quant: Option<String>,
    /// Context length (prompt plus answer) [default: 2048].
    #[arg(long)]
    context: Option<usize>,
    /// Threads for the CPU kernels [default: the physical cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// How the CPU kernels store keys and values: f16 or f32 (twice the memory) [default: f16].
    #[arg(long, value_name = "f16|f32")]
    kv_cache: Option<KvDtype>,
    /// f32 (the reference's answers) or q8 (activations rounded to 8 bits: faster, logits
    /// within a few percent) [default: f32].
    #[arg(long, value_name = "f32|q8")]
    activations: Option<Activations>,
    /// Backend: cpu, wgpu or cuda [env: SPICE_HF_BACKEND] [default: best available].
    #[arg(long)]
    backend: Option<String>,
    /// Require `Authorization: Bearer KEY` (all routes but the probes, /health and /v1/ready).
    #[arg(long, env = "SPICE_HF_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Task-history database, or `off` [env: SPICE_HF_TASK_HISTORY] [default: ~/.spice/task_history.db].
    #[arg(long, value_name = "PATH")]
    task_history: Option<String>,
    /// Serve /metrics without the API key, for scrapers that cannot send one (Prometheus pod
    /// annotations, the Gateway API inference extension's endpoint picker); it holds model
    /// names and counts, never prompts.
    #[arg(long)]
    public_metrics: bool,
    /// Listen on a non-loopback address without an API key (anyone who can reach the port
    /// can then use the models and read the task history).
    #[arg(long)]
    allow_unauthenticated: bool,
    /// Do not record prompts and outputs in spans and the task history.
    #[arg(long)]
    no_capture: bool,
    /// Seconds running requests may take to finish after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Seconds between health probes of loaded models (0: only the warm-up).
    #[arg(long, default_value_t = 30)]
    health_interval: u64,
    #[command(flatten)]
    listen: crate::ListenArgs,
    #[command(flatten)]
    hub: crate::HubArgs,
}

/// What `serve` needs, prepared before the subscriber is installed (the task-history layer
/// depends on the configuration).
pub(crate) struct Prepared {
    config: Config,
    args: ServeArgs,
    /// The task history, unless switched off.
    pub(crate) history: Option<TaskHistory>,
}

fn default_history_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SPICE_HF_TASK_HISTORY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .context("cannot find the home directory; pass --task-history PATH")?;
    Ok(PathBuf::from(home).join(".spice/task_history.db"))
}

fn open_history(setting: Option<&str>, retention: usize) -> anyhow::Result<Option<TaskHistory>> {
    let path = match setting {
        Some("off") => return Ok(None),
        Some(p) => PathBuf::from(p),
        None => default_history_path()?,
    };
    Ok(Some(TaskHistory::open(&path, retention)?))
}

/// Loads the configuration and opens the task history.
pub(crate) fn prepare(args: ServeArgs) -> anyhow::Result<Prepared> {
    let config = match (&args.config, &args.model) {
        (Some(path), _) => Config::load(path)?,
        (None, Some(model)) => Config {
            models: vec![ModelEntry {
                from: model.clone(),
                name: args.name.clone(),
                params: Params {
                    max_concurrency: args.max_concurrency,
                    max_queue: args.max_queue,
                    quant: args.quant.clone(),
                    context_length: args.context,
                    threads: args.threads.map(usize::from),
                    kv_cache: args.kv_cache,
                    activations: args.activations,
                    ..Params::default()
                },
            }],
            ..Config::default()
        },
        (None, None) => bail!("name a model to serve, or pass --config FILE"),
    };
    let setting = args
        .task_history
        .clone()
        .or_else(|| config.telemetry.task_history.clone());
    let retention = config.telemetry.task_history_retention.unwrap_or(10_000);
    let history = open_history(setting.as_deref(), retention)?;
    Ok(Prepared {
        config,
        args,
        history,
    })
}

fn backend(
    choice: Option<BackendChoice>,
    flag: Option<&str>,
) -> anyhow::Result<Option<BackendKind>> {
    if let Some(f) = flag {
        return crate::run::forced_backend(Some(f));
    }
    Ok(match choice {
        Some(BackendChoice::Auto) => None,
        Some(BackendChoice::Cpu) => Some(BackendKind::Cpu),
        Some(BackendChoice::Wgpu) => Some(BackendKind::Wgpu),
        Some(BackendChoice::Cuda) => Some(BackendKind::Cuda),
        None => spice_hf_backend::forced_from_env()?,
    })
}

fn spec(entry: &ModelEntry, args: &ServeArgs) -> anyhow::Result<ModelSpec> {
    let p = &entry.params;
    let name = entry
        .name
        .clone()
        .unwrap_or_else(|| default_name(&entry.from));
    // A path, or a Hub reference checked now and pulled at load time with this model's token
    // (the config's, else `--token`, else the environment's).
    let client = args.hub.client_with_token(p.hf_token.as_deref(), None)?;
    let source = spice_hf::source(
        &entry.from,
        client,
        args.hub.cache()?,
        p.quant.clone(),
        crate::progress::Bars::new,
    )
    .with_context(|| {
        format!(
            "model `{name}`: `{}` is neither a path that exists nor a Hub reference",
            entry.from
        )
    })?;
    let mut spec = ModelSpec::new(&name, source)
        .with_backend(backend(p.backend, args.backend.as_deref())?)
        .with_threads(p.threads)
        .with_kv_cache(p.kv_cache.unwrap_or_default())
        .with_activations(p.activations.unwrap_or_default())
        .with_initial_load(p.initial_load.unwrap_or(true))
        .with_capture_content(p.capture_content.unwrap_or(true) && !args.no_capture)
        .with_chat_template(p.chat_template.clone());
    if let Some(c) = p.context_length {
        spec = spec.with_context_length(c);
    }
    let defaults = LimiterConfig::default();
    spec = spec.with_limits(
        LimiterConfig::default()
            .with_max_concurrency(p.max_concurrency.unwrap_or(defaults.max_concurrency))
            .with_max_queue(p.max_queue.unwrap_or(defaults.max_queue))
            .with_queue_timeout(
                p.queue_timeout_s
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.queue_timeout),
            )
            .with_requests_per_minute(p.requests_per_minute),
    );
    let d = GenerateParams::default();
    let mut sampling = d.sampling.clone();
    sampling.temperature = p.temperature.map_or(sampling.temperature, |t| t.0);
    sampling.top_p = p.top_p.map_or(sampling.top_p, |t| t.0);
    sampling.top_k = p.top_k.unwrap_or(sampling.top_k);
    sampling.min_p = p.min_p.map_or(sampling.min_p, |t| t.0);
    sampling.repetition_penalty = p
        .repetition_penalty
        .map_or(sampling.repetition_penalty, |t| t.0);
    sampling.seed = p.seed.or(sampling.seed);
    sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("model `{name}`: {e}"))?;
    Ok(spec.with_defaults(GenerateParams {
        sampling,
        max_tokens: p.max_tokens.unwrap_or(d.max_tokens),
        stop: p.stop.clone().unwrap_or_default(),
        ..d
    }))
}

/// Serves until SIGTERM / Ctrl-C.
pub(crate) async fn run(
    prepared: Prepared,
    layer: Option<TaskHistoryLayer>,
    otel: Option<crate::otel::Otel>,
) -> anyhow::Result<ExitCode> {
    let Prepared {
        config,
        args,
        history,
    } = prepared;
    let (recorder, handle) = spice_hf_telemetry::prometheus_recorder()?;
    let installed = match &otel {
        // Both: /metrics and OTLP see the same instruments.
        Some(o) => metrics::set_global_recorder(
            metrics_util::layers::FanoutBuilder::default()
                .add_recorder(recorder)
                .add_recorder(o.recorder())
                .build(),
        )
        .map_err(|e| e.to_string()),
        None => metrics::set_global_recorder(recorder).map_err(|e| e.to_string()),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // Descriptions are registered with whichever recorder is installed now.
    spice_hf_telemetry::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let specs = config
        .models
        .iter()
        .map(|m| spec(m, &args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let runtime = Runtime::new(specs)?;
    let addr = args
        .addr
        .or(config.server.addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let api_key = args.api_key.clone().or(config.server.api_key.clone());
    if !addr.ip().is_loopback() && api_key.is_none() && !args.allow_unauthenticated {
        bail!(
            "refusing to listen on {addr} without an API key: anyone who reaches it could use the models and read the task history (prompts included); set --api-key or SPICE_HF_API_KEY (or `api_key` in the config file), or pass --allow-unauthenticated if the network is trusted"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick another --addr"))?;
    let local = listener.local_addr()?;
    let mut app =
        spice_hf_server::App::new(runtime.clone()).with_metrics(Arc::new(move || handle.render()));
    if let Some(h) = &history {
        app = app.with_task_history(h.clone());
    }
    if let Some(l) = &layer {
        app = app.with_task_history_writer(l.clone());
    }
    if let Some(key) = api_key {
        if key.trim().is_empty() {
            bail!("the API key is empty; set a non-empty --api-key or leave it out");
        }
        app = app.with_api_key(key.trim());
    }
    app = app
        .with_public_metrics(args.public_metrics || config.server.public_metrics.unwrap_or(false));
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on http://{local}");
    let _ = out.flush();
    tracing::info!(addr = %local, models = runtime.models().count(), "serving; /v1/ready answers 200 once the models are loaded");

    let loader = runtime.clone();
    tokio::spawn(async move {
        loader.load_initial().await;
        if loader.ready() {
            tracing::info!("all models ready");
        }
    });
    let interval = config
        .server
        .health_interval_s
        .unwrap_or(args.health_interval);
    if interval > 0 {
        let prober = runtime.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(interval)).await;
                for m in prober.models() {
                    if m.info().backend.is_some() {
                        m.health_check().await;
                    }
                }
            }
        });
    }
    let grace = Duration::from_secs(
        config
            .server
            .shutdown_grace_s
            .unwrap_or(args.shutdown_grace),
    );
    let app = app.with_limits(args.listen.limits());
    spice_hf_server::serve(listener, app, crate::shutdown_signal(), grace).await?;
    if let Some(layer) = layer {
        layer.flush();
    }
    if let Some(o) = otel {
        o.shutdown();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `spice-hf tasks`.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Task-history database [env: SPICE_HF_TASK_HISTORY] [default: ~/.spice/task_history.db].
    #[arg(long, value_name = "PATH")]
    task_history: Option<PathBuf>,
    /// Only this task (ai_completion, health, model_load).
    #[arg(long)]
    task: Option<String>,
    /// Only tasks that started within this many seconds.
    #[arg(long, value_name = "SECS")]
    since: Option<u64>,
    /// Most rows.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn tasks(args: TasksArgs) -> anyhow::Result<ExitCode> {
    let path = match args.task_history {
        Some(p) => p,
        None => default_history_path()?,
    };
    if !path.exists() {
        bail!(
            "no task history at {}; `spice-hf serve` writes it (or pass --task-history PATH)",
            path.display()
        );
    }
    let history = TaskHistory::open(&path, usize::MAX)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let rows = history.recent(&TaskFilter {
        task: args.task,
        since_ms: args.since.map(|s| now_ms - s as i64 * 1000),
        limit: args.limit,
        ..TaskFilter::default()
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<29} {:<13} {:>10}  {:<24} {:<32} OUTCOME",
        "START", "TASK", "MS", "MODEL", "TRACE"
    )?;
    for r in &rows {
        let start = std::time::UNIX_EPOCH + Duration::from_millis(r.start_ms.max(0) as u64);
        let model = r.labels.get("model").and_then(|m| m.as_str()).unwrap_or("");
        let outcome = match (&r.error_message, r.labels.get("finish_reason")) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(f)) => format!(
                "{} ({} + {} tokens)",
                f.as_str().unwrap_or(""),
                r.labels
                    .get("prompt_tokens")
                    .unwrap_or(&serde_json::Value::Null),
                r.labels
                    .get("completion_tokens")
                    .unwrap_or(&serde_json::Value::Null)
            ),
            (None, None) => "ok".to_string(),
        };
        writeln!(
            out,
            "{:<29} {:<13} {:>10.1}  {:<24} {:<32} {}",
            httpdate::fmt_http_date(start),
            r.task,
            r.duration_ms,
            model,
            r.trace_id,
            outcome
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
