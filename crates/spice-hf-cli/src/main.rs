//! The `spice-hf` command. The only place (with the server) that installs a tracing
//! subscriber and draws on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: a command-line program talks on stdout and stderr.

mod config;
mod otel;
mod progress;
mod run;
mod serve;
mod upstream;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use spice_hf_cache::Cache;
use spice_hf_hub::{HubClient, HubConfig, ModelRef, PullOptions, Selection};

/// Run Hugging Face models locally: pull them into a verified cache, manage the cache, mirror.
#[derive(Debug, Parser)]
#[command(name = "spice-hf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download a model into the verified cache (resumes, verifies, never re-downloads).
    Pull(PullArgs),
    /// Answer a prompt with a model (pulling it first when it is a Hub reference).
    Run(run::RunArgs),
    /// Chat with a model in the terminal (multi-turn; `/reset`, `/exit`).
    Chat(run::ChatArgs),
    /// Embed texts with an embedding model (a sentence-transformers repository): one JSON
    /// line per text with its vector.
    Embed(run::EmbedArgs),
    /// Serve models over an OpenAI-compatible HTTP API (one MODEL, or --config FILE).
    Serve(serve::ServeArgs),
    /// List recent rows of the task history (completions, health probes, loads).
    Tasks(serve::TasksArgs),
    /// Show which backends this build has, which work here, and which would be chosen.
    Backends,
    /// Estimate the memory a model needs, per component, from its file headers.
    Estimate(run::EstimateArgs),
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Serve a directory of repositories over the Hub protocol (air-gapped mirrors).
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
}

/// What one client may hold on a listener (`serve` and `mirror serve`).
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Open connections at most; more wait until one closes. Keep it below `ulimit -n`.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to send a request's headers, and to stay idle between requests.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    header_timeout: u32,
}

impl ListenArgs {
    pub(crate) fn limits(&self) -> spice_hf_mirror::Limits {
        spice_hf_mirror::Limits::default()
            .with_max_connections(self.max_connections as usize)
            .with_header_timeout(std::time::Duration::from_secs(self.header_timeout.into()))
    }
}

#[derive(Debug, Args)]
pub(crate) struct CacheDirArg {
    /// Cache root [env: SPICE_MODELS_DIR] [default: ~/.spice/models].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheDirArg {
    fn cache(&self) -> anyhow::Result<Cache> {
        Ok(match &self.cache_dir {
            Some(d) => Cache::new(d),
            None => Cache::from_env()?,
        })
    }
}

/// How to reach the Hub and where the cache is (shared by `pull`, `run` and `estimate`).
#[derive(Debug, Args)]
pub(crate) struct HubArgs {
    /// Hugging Face token (prefer HF_TOKEN or a token file: a flag shows in `ps`).
    #[arg(long, alias = "hf-token")]
    token: Option<String>,
    /// Hub endpoint [env: HF_ENDPOINT] [default: https://huggingface.co].
    #[arg(long)]
    endpoint: Option<String>,
    /// No network: serve from the cache or fail [env: HF_HUB_OFFLINE].
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    cache: CacheDirArg,
}

impl HubArgs {
    /// The client: environment first, then these flags.
    pub(crate) fn client(&self, max_parallel: Option<usize>) -> anyhow::Result<HubClient> {
        self.client_with_token(None, max_parallel)
    }

    /// The client, with `token` (a model's own, from the config file) over `--token` and the
    /// environment.
    pub(crate) fn client_with_token(
        &self,
        token: Option<&str>,
        max_parallel: Option<usize>,
    ) -> anyhow::Result<HubClient> {
        let mut config = HubConfig::from_env(token.or(self.token.as_deref()))?;
        if let Some(ep) = &self.endpoint {
            config.endpoint = ep.clone();
        }
        config.offline |= self.offline;
        if let Some(n) = max_parallel {
            config.max_parallel = n.max(1);
        }
        Ok(HubClient::new(config)?)
    }

    /// The cache.
    pub(crate) fn cache(&self) -> anyhow::Result<Cache> {
        self.cache.cache()
    }
}

#[derive(Debug, Args)]
struct PullArgs {
    /// Model reference: [hf:]org/name[@revision].
    model: String,
    /// Revision (branch, tag or commit); overrides `@revision` in MODEL.
    #[arg(long)]
    revision: Option<String>,
    /// Only files matching this glob (repeatable).
    #[arg(long = "include", value_name = "GLOB")]
    include: Vec<String>,
    /// Skip files matching this glob (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
    /// GGUF quantization to pick (q4_1, Q8_0, ...).
    #[arg(long)]
    quant: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8)]
    max_parallel: usize,
    /// Give up waiting for another process's lock after this many seconds (default: wait).
    #[arg(long, value_name = "SECS")]
    lock_timeout: Option<u64>,
    /// Fetch files of 64 MiB or more as 16 MiB ranges over N connections at once.
    #[arg(long, value_name = "N")]
    range_parallel: Option<usize>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// List cached models: revision, commit, files, size.
    Ls(CacheDirArg),
    /// Rehash every cached file; report missing, corrupt and extra files (exit 1 if any).
    Verify {
        /// Only this model ([org/name][@revision]).
        model: Option<String>,
        #[command(flatten)]
        cache: CacheDirArg,
    },
    /// Remove a model (all revisions, or the one given with @revision).
    Rm {
        /// org/name[@revision].
        model: String,
        #[command(flatten)]
        cache: CacheDirArg,
    },
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Serve DIR/<org>/<name>/... (and <name>@<branch>/ for other branches).
    Serve {
        /// Directory of repositories.
        dir: PathBuf,
        /// Hub listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// CDN listener address (large files are redirected there) [default: an ephemeral port].
        #[arg(long)]
        cdn_addr: Option<SocketAddr>,
        /// JSON access rules for private and gated repositories.
        #[arg(long, value_name = "FILE")]
        access: Option<PathBuf>,
        /// The hub's URL as clients reach it, for `Link` headers (needed on 0.0.0.0 or behind
        /// a proxy) [default: the hub listener's address].
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// The CDN listener's URL as clients reach it, for redirects (needed on 0.0.0.0 or
        /// behind a proxy) [default: the CDN listener's address].
        #[arg(long, value_name = "URL")]
        cdn_public_url: Option<String>,
        /// Pull-through mode: serve the repositories of this Hub (e.g. https://huggingface.co),
        /// fetching each file on first request into DIR/.pull-through and serving it from disk
        /// after that; each client's access is checked with the upstream using the client's
        /// own token. DIR's own repositories are not served in this mode.
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
        /// A file of at least 32 secret bytes that signs CDN links, shared by replicas that
        /// hand out each other's links [default: a random key per process].
        #[arg(long, value_name = "FILE")]
        cdn_key_file: Option<PathBuf>,
        #[command(flatten)]
        listen: ListenArgs,
    },
}

fn main() -> ExitCode {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let mut cli = Cli::parse();
    // `serve` opens its task history before the subscriber exists, so the layer can be added.
    let mut prepared = None;
    if matches!(cli.command, Command::Serve(_))
        && let Command::Serve(args) = std::mem::replace(&mut cli.command, Command::Backends)
    {
        match serve::prepare(args) {
            Ok(p) => prepared = Some(p),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPICE_HF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // wgpu probes OpenGL too while settling on a graphics API and logs an EGL failure at
        // error level on hosts without a display driver; Burn computes on Vulkan/Metal/DX12.
        .add_directive(
            "wgpu_hal::gles=off"
                .parse()
                .expect("a valid directive literal"),
        );
    let history = prepared
        .as_ref()
        .and_then(|p| p.history.clone())
        .map(spice_hf_telemetry::TaskHistoryLayer::new);
    let otel = match prepared
        .as_ref()
        .map(|_| otel::Otel::from_env())
        .transpose()
    {
        Ok(o) => o.flatten(),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Task rows are kept whatever the log level: the layer has its own filter.
    let history_filter =
        tracing_subscriber::filter::Targets::new().with_target("spice_hf", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .with_filter(filter),
        )
        .with(history.clone().map(|l| l.with_filter(history_filter)))
        .with(otel.as_ref().map(otel::Otel::layer))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match prepared {
        Some(p) => runtime.block_on(serve::run(p, history, otel)),
        None => runtime.block_on(run(cli)),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A driver that hung its probe can also hang the exit handlers (the Vulkan loader's).
    spice_hf_backend::exit_now_if_a_driver_is_stuck(if code == ExitCode::SUCCESS { 0 } else { 1 });
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pull(args) => pull(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Chat(args) => run::chat(args).await,
        Command::Embed(args) => run::embed(args).await,
        Command::Backends => run::backends(),
        Command::Serve(_) => anyhow::bail!("internal error: serve was not prepared"),
        Command::Tasks(args) => serve::tasks(args),
        Command::Estimate(args) => run::estimate(args).await,
        Command::Cache { command } => cache(command),
        Command::Mirror {
            command:
                MirrorCommand::Serve {
                    dir,
                    addr,
                    cdn_addr,
                    access,
                    public_url,
                    cdn_public_url,
                    cdn_key_file,
                    upstream,
                    listen,
                },
        } => {
            let mirror = match &upstream {
                Some(url) => {
                    if access.is_some() {
                        anyhow::bail!(
                            "--access and --upstream do not go together: in pull-through mode the upstream decides who reads what"
                        );
                    }
                    let mirror = spice_hf_mirror::Mirror::new();
                    let root = dir.join(".pull-through");
                    mirror
                        .pull_through(std::sync::Arc::new(upstream::HubUpstream::new(url, &root)?));
                    mirror
                }
                None => {
                    let access = match access {
                        Some(p) => spice_hf_mirror::AccessConfig::load(&p)?,
                        None => spice_hf_mirror::AccessConfig::default(),
                    };
                    spice_hf_mirror::Mirror::from_dir(&dir, &access)?
                }
            };
            if let Some(url) = &public_url {
                mirror.set_public_url(url);
            }
            if let Some(url) = &cdn_public_url {
                mirror.set_cdn_base(url);
            }
            mirror.set_limits(listen.limits());
            if let Some(path) = &cdn_key_file {
                let key = std::fs::read(path).with_context(|| {
                    format!("could not read the CDN key file {}", path.display())
                })?;
                mirror.set_cdn_key(&key)?;
            }
            let running = mirror.spawn(addr, cdn_addr).await?;
            // A closed stdout must not stop the server: write, and ignore failures.
            let mut out = std::io::stdout();
            let what = match &upstream {
                Some(url) => format!(
                    "{url} (pull-through, cached in {})",
                    dir.join(".pull-through").display()
                ),
                None => dir.display().to_string(),
            };
            let _ = writeln!(
                out,
                "serving {} at {} (CDN {}); use it with HF_ENDPOINT={}",
                what,
                running.hub_url(),
                running.cdn_url(),
                running.hub_url()
            );
            let _ = out.flush();
            running.run_until(shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let mut model = ModelRef::parse(&args.model)?;
    if let Some(rev) = &args.revision {
        model = ModelRef::new(model.repo(), rev)?;
    }
    let client = args.hub.client(Some(args.max_parallel))?;
    let cache = args.hub.cache()?;
    let opts = PullOptions {
        selection: Selection {
            include: args.include,
            exclude: args.exclude,
            quant: args.quant,
        },
        lock_timeout: args.lock_timeout.map(Duration::from_secs),
        range_parallel: args.range_parallel.map(|n| spice_hf_hub::RangeParallel {
            connections: n.max(1),
            ..Default::default()
        }),
    };
    let bars = progress::Bars::new();
    let report = client.pull(&cache, &model, &opts, &bars).await;
    drop(bars);
    let report = report.with_context(|| format!("pulling {model}"))?;
    if args.json {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "size": f.size, "state": format!("{:?}", f.state).to_lowercase()}))
            .collect();
        let out = serde_json::json!({
            "model": report.model.to_string(), "commit": report.commit, "dir": report.dir,
            "downloaded_bytes": report.downloaded_bytes, "used_network": report.used_network, "files": files,
        });
        println!("{out}");
    } else {
        let downloaded = report
            .files
            .iter()
            .filter(|f| f.state == spice_hf_hub::PulledState::Downloaded)
            .count();
        println!(
            "{} files ({} downloaded, {} bytes)",
            report.files.len(),
            downloaded,
            report.downloaded_bytes
        );
        println!("commit {}", report.commit);
        println!("{}", report.dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn cache(command: CacheCommand) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Ls(dir) => {
            let cache = dir.cache()?;
            let list = cache.list()?;
            if list.is_empty() {
                println!("no models in {}", cache.root().display());
            }
            println!(
                "{:<48} {:<16} {:<12} {:>6} {:>12}",
                "MODEL", "REVISION", "COMMIT", "FILES", "SIZE"
            );
            for r in list {
                println!(
                    "{:<48} {:<16} {:<12} {:>6} {:>12}",
                    r.manifest.repo,
                    r.manifest.revision,
                    // A hand-edited manifest may hold anything: cut by characters, not bytes.
                    &r.manifest.commit.chars().take(12).collect::<String>(),
                    r.manifest.files.len(),
                    human(r.size)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify { model, cache } => {
            let cache = cache.cache()?;
            let filter = model
                .as_deref()
                .map(cache_pattern)
                .transpose()?
                .map(|(r, v)| (r.repo().to_string(), v.then(|| r.revision().to_string())));
            let mut bad = 0;
            for r in cache.list()? {
                if let Some((repo, rev)) = &filter
                    && (&r.manifest.repo != repo
                        || rev.as_ref().is_some_and(|v| v != &r.manifest.revision))
                {
                    continue;
                }
                let dir = cache.revision(&r.manifest.repo, &r.manifest.revision)?;
                let report = dir.verify()?;
                let status = if report.is_clean() { "ok" } else { "FAILED" };
                println!(
                    "{}@{}: {} ({} ok)",
                    r.manifest.repo,
                    r.manifest.revision,
                    status,
                    report.ok.len()
                );
                for (kind, files) in [
                    ("missing", &report.missing),
                    ("corrupt", &report.corrupt),
                    ("extra", &report.extra),
                ] {
                    for f in files {
                        println!("  {kind}: {f}");
                    }
                }
                if !report.is_clean() {
                    bad += 1;
                }
            }
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        CacheCommand::Rm { model, cache } => {
            let cache = cache.cache()?;
            let (reference, given) = cache_pattern(&model)?;
            let freed = cache.remove(reference.repo(), given.then(|| reference.revision()))?;
            if freed == 0 {
                println!("{model} is not in the cache");
            } else {
                println!("removed {model} ({})", human(freed));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `org/name` (every cached revision) or `org/name@rev` (that one), validated as a reference.
fn cache_pattern(model: &str) -> anyhow::Result<(spice_hf_hub::ModelRef, bool)> {
    Ok(spice_hf_hub::ModelRef::parse_noting_revision(model)?)
}

/// Bytes for people (`94.3 MiB`).
pub(crate) fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
