//! `spice-hf run`, `backends` and `estimate`: resolve a model (path or Hub reference), pick the
//! backend, check memory, load, apply the chat template and stream the answer.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use spice_hf_backend::BackendKind;

use spice_hf_backend::host::{available_memory, peak_rss};
use spice_hf_models::chat::Message;
use spice_hf_models::footprint::{Usage, WeightStorage};
use spice_hf_models::generate::GenerateParams;
use spice_hf_models::llama::{Activations, KvDtype};
use spice_hf_models::loaded::ModelFiles;
use spice_hf_models::sampling::SamplingParams;
use spice_hf_runtime::{
    Completion, CompletionRequest, Constraint, Event, ModelSpec, Prompt, Runtime, ServedModel,
    Source,
};

/// Where a model comes from and how to fetch it.
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// A Hub reference ([hf:]org/name[@revision]), a model directory or a .gguf file.
    model: String,
    /// GGUF quantization to use from a Hub repository (q4_1, Q8_0, ...).
    #[arg(long)]
    quant: Option<String>,
    #[command(flatten)]
    hub: crate::HubArgs,
    /// Context length (prompt plus answer) to size the KV cache for.
    #[arg(long, default_value_t = 2048)]
    context: usize,
    /// Threads for the CPU kernels [default: the physical cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// How the CPU kernels store keys and values: f16 or f32 (twice the memory).
    #[arg(long, default_value = "f16", value_name = "f16|f32")]
    kv_cache: KvDtype,
    /// f32 (the reference's answers) or q8: activations rounded to 8 bits, faster on the
    /// formats that have the kernel, logits within a few percent.
    #[arg(long, default_value = "f32", value_name = "f32|q8")]
    activations: Activations,
}

/// Generation settings shared by `run` and `chat`.
#[derive(Debug, Args)]
pub(crate) struct GenArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Minimum probability relative to the best token (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed (same seed, same answer).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-turn tokens (for benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Backend: cpu, wgpu or cuda [env: SPICE_HF_BACKEND] [default: best available].
    #[arg(long)]
    backend: Option<String>,
    /// A system message (replaces the template's default).
    #[arg(long)]
    system: Option<String>,
}

impl GenArgs {
    /// The flags as generation parameters, checked as the server checks a request's.
    fn params(&self) -> anyhow::Result<GenerateParams> {
        let params = GenerateParams {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..SamplingParams::default()
            },
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            stop_token_ids: Vec::new(),
            ignore_eos: self.ignore_eos,
        };
        params
            .sampling
            .validate()
            .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
        Ok(params)
    }
}

/// `spice-hf run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    generation: GenArgs,
    /// The user's message.
    #[arg(long, short)]
    prompt: String,
    /// Send the prompt as plain text, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object with ids, usage, timings and memory on the last line.
    #[arg(long)]
    json: bool,
    /// Constrain the answer to JSON valid against the JSON Schema in this file (at most
    /// 1 MiB): the answer is guaranteed to parse and to validate.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
}

/// Most bytes of a `--json-schema` file.
const MAX_SCHEMA_BYTES: u64 = 1 << 20;

/// Reads a `--json-schema` file: bounded, JSON, named in every error.
fn read_schema(path: &std::path::Path) -> anyhow::Result<Constraint> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("--json-schema: cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SCHEMA_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SCHEMA_BYTES {
        bail!(
            "--json-schema: {} is larger than {} KiB; a JSON Schema that large is not supported",
            path.display(),
            MAX_SCHEMA_BYTES >> 10
        );
    }
    let schema: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("--json-schema: {} is not valid JSON", path.display()))?;
    Ok(Constraint::JsonSchema(schema))
}

/// `spice-hf chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    generation: GenArgs,
}

/// `spice-hf estimate`.
#[derive(Debug, Args)]
pub(crate) struct EstimateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Headroom added on top, as a fraction.
    #[arg(long, default_value_t = 0.25)]
    headroom: f64,
    /// Requests served at once, each with a KV cache of the whole context.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_concurrency: u32,
    /// How the weights are held.
    #[arg(long, value_enum, default_value_t = HeldAs::Packed)]
    weights: HeldAs,
}

/// `estimate --weights`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HeldAs {
    /// In the file's format, memory-mapped (the CPU kernels): the file's own size.
    Packed,
    /// Decoded to f16 (a GPU that computes in f16).
    F16,
    /// Decoded to f32 (other GPUs).
    F32,
}

/// Turns the model argument into a path, pulling from the Hub when it is a reference.
async fn resolve(args: &ModelArgs) -> anyhow::Result<PathBuf> {
    let source = spice_hf::source(
        &args.model,
        args.hub.client(None)?,
        args.hub.cache()?,
        args.quant.clone(),
        crate::progress::Bars::new,
    )?;
    match source {
        Source::Path(path) => Ok(path),
        Source::Fetch(fetch) => fetch().await.with_context(|| {
            format!(
                "pulling {} (for a GGUF repository, pass --quant / params.quant)",
                args.model
            )
        }),
    }
}

pub(crate) fn forced_backend(arg: Option<&str>) -> anyhow::Result<Option<BackendKind>> {
    match arg {
        Some(b) if !b.eq_ignore_ascii_case("auto") => Ok(Some(BackendKind::parse(b)?)),
        Some(_) => Ok(None),
        None => Ok(spice_hf_backend::forced_from_env()?),
    }
}

/// A model loaded through the runtime (the same session API the server uses), with its path.
struct Ready {
    model: std::sync::Arc<ServedModel>,
    path: PathBuf,
}

/// Resolves (pulling a Hub reference), then lets the runtime check memory, pick the backend
/// and load; no warm-up generation for a one-shot command.
async fn load(model: &ModelArgs, generation: &GenArgs) -> anyhow::Result<Ready> {
    // Bad flags are refused before anything is pulled or loaded.
    let defaults = generation.params()?;
    let path = resolve(model).await?;
    let spec = ModelSpec::new("model", Source::Path(path.clone()))
        .with_backend(forced_backend(generation.backend.as_deref())?)
        .with_context_length(model.context)
        .with_threads(model.threads.map(usize::from))
        .with_kv_cache(model.kv_cache)
        .with_activations(model.activations)
        .with_defaults(defaults)
        .with_capture_content(false)
        .with_warm_up(false);
    let runtime = Runtime::new(vec![spec])?;
    let served = runtime.model("model")?;
    let spinner = crate::progress::spinner(&format!("loading {}", path.display()));
    let loaded = served.clone().ensure_loaded().await;
    spinner.finish_and_clear();
    loaded?;
    Ok(Ready {
        model: served,
        path,
    })
}

/// `spice-hf embed`.
#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The texts, one vector each.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Backend: cpu, wgpu or cuda [env: SPICE_HF_BACKEND] [default: best available].
    #[arg(long)]
    backend: Option<String>,
    /// Cut texts longer than the model takes (keeping their start) instead of refusing them.
    #[arg(long)]
    truncate: bool,
}

/// `spice-hf embed`: one JSON line per text, `{"index", "text", "dimensions", "embedding"}`,
/// then nothing else on stdout.
pub(crate) async fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let backend = forced_backend(args.backend.as_deref())?;
    let path = resolve(&args.model).await?;
    let spec = ModelSpec::new("model", Source::Path(path.clone()))
        .with_backend(backend)
        .with_capture_content(false)
        .with_warm_up(false);
    let runtime = Runtime::new(vec![spec])?;
    let served = runtime.model("model")?;
    let inputs = args
        .texts
        .iter()
        .cloned()
        .map(spice_hf_runtime::EmbeddingInput::Text)
        .collect();
    let request = spice_hf_runtime::EmbeddingRequest::new(inputs).with_truncate(args.truncate);
    let out = served
        .embed(request)
        .await
        .with_context(|| format!("embedding with {}", path.display()))?;
    let mut stdout = std::io::stdout();
    for (index, (text, v)) in args.texts.iter().zip(&out.vectors).enumerate() {
        let line = serde_json::json!({"index": index, "text": text, "dimensions": v.len(), "embedding": v});
        let _ = writeln!(stdout, "{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses chat for a model without a template, saying what to do on the command line.
fn check_template(ready: &Ready) -> anyhow::Result<()> {
    if !ready.model.info().chat_template {
        bail!(
            "{} has no chat template; pass --raw to send the prompt as plain text",
            ready.path.display()
        );
    }
    Ok(())
}

/// Generates through the session, writing the answer to stdout as it comes, then a newline.
async fn stream_answer(ready: &Ready, request: CompletionRequest) -> anyhow::Result<Completion> {
    let mut stream = ready.model.stream(request).await?;
    let mut stdout = std::io::stdout();
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Text(piece) => {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
            // `run` and `chat` send no tools.
            Event::ToolCall(..) => {}
            Event::Done(c) => done = Some(c),
            Event::Error(e) => return Err(e.into()),
        }
    }
    let _ = writeln!(stdout);
    done.context("generation ended without a result")
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // A bad schema file is refused before anything is pulled or loaded.
    let constraint = args.json_schema.as_deref().map(read_schema).transpose()?;
    let ready = load(&args.model, &args.generation).await?;
    let prompt = if args.raw {
        Prompt::Text(args.prompt.clone())
    } else {
        check_template(&ready)?;
        let mut messages = Vec::new();
        if let Some(system) = &args.generation.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", &args.prompt));
        Prompt::Chat(messages)
    };
    let mut request = CompletionRequest::new(prompt);
    request.constraint = constraint;
    let out = stream_answer(&ready, request).await?;
    let mut stdout = std::io::stdout();
    if args.json {
        let info = ready.model.info();
        let decoded = out.completion_tokens.saturating_sub(1);
        let json = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "finish_reason": out.finish_reason.as_str(),
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens},
            "timings": {
                "load_ms": info.load_ms,
                "ttft_ms": out.ttft_ms,
                "prefill_tokens_per_s": out.prompt_tokens as f64 / (out.prefill_ms / 1000.0),
                "decode_tokens_per_s": if out.decode_ms > 0.0 { decoded as f64 / (out.decode_ms / 1000.0) } else { 0.0 },
            },
            "backend": info.backend.map(|b| b.name()),
            "device": info.device,
            "memory": {"estimated_bytes": info.estimated_bytes, "peak_rss_bytes": peak_rss()},
        });
        let _ = writeln!(stdout, "{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `spice-hf chat`: a multi-turn conversation on stdin/stdout. `/reset` starts over, `/exit`
/// (or end of input) quits.
pub(crate) async fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead as _, IsTerminal as _};
    let ready = load(&args.model, &args.generation).await?;
    if !ready.model.info().chat_template {
        bail!(
            "{} has no chat template, so it cannot chat; use `spice-hf run --raw`",
            ready.path.display()
        );
    }
    let system: Vec<Message> = args
        .generation
        .system
        .iter()
        .map(|s| Message::new("system", s))
        .collect();
    let mut history = system.clone();
    let interactive = std::io::stdin().is_terminal();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = system.clone();
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line.trim()));
        let out = stream_answer(
            &ready,
            CompletionRequest::new(Prompt::Chat(history.clone())),
        )
        .await?;
        history.push(Message::new("assistant", &out.text));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn backends() -> anyhow::Result<ExitCode> {
    let forced = spice_hf_backend::forced_from_env()?;
    println!("{:<7} {:<9} STATUS", "BACKEND", "COMPILED");
    for probe in spice_hf_backend::probe_all() {
        let status = match (&probe.status, &probe.detail) {
            (Ok(()), Some(detail)) => format!("available: {detail}"),
            (Ok(()), None) => "available".to_string(),
            (Err(reason), _) => format!("unavailable: {reason}"),
        };
        println!(
            "{:<7} {:<9} {status}",
            probe.kind.name(),
            if probe.kind.compiled() { "yes" } else { "no" }
        );
    }
    #[cfg(feature = "wgpu")]
    match spice_hf_backend::wgpu_adapters() {
        Ok(adapters) if adapters.is_empty() => println!("\nwgpu adapters: none"),
        Ok(adapters) => {
            println!("\nwgpu adapters:");
            for a in adapters {
                println!("  {a}  [driver: {}]", a.driver);
            }
        }
        Err(e) => println!("\nwgpu adapters: {e}"),
    }
    let choice = spice_hf_backend::choose(forced)?;
    let how = if choice.forced {
        "forced by SPICE_HF_BACKEND"
    } else {
        "best available"
    };
    println!("\nwould use: {} on {} ({how})", choice.kind, choice.detail);
    for s in &choice.skipped {
        println!("  skipped {}: {}", s.kind, s.reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// `estimate` of a sentence encoder: its weights in f32 on a Burn device, no KV cache.
fn estimate_encoder(path: &std::path::Path, args: &EstimateArgs) -> anyhow::Result<ExitCode> {
    let cfg = spice_hf_models::bert::BertConfig::from_hf_config(&path.join("config.json"))?;
    let spec = spice_hf_models::bert::SentenceSpec::from_dir(path, &cfg)?;
    let tensors = spice_hf_models::tensors::TensorSet::from_safetensors_dir(path)?;
    let parameters: u64 = tensors.iter().map(|t| t.elements() as u64).sum();
    let weights = parameters.saturating_mul(4);
    let headroom = (weights as f64 * args.headroom) as u64;
    println!("model       {}", path.display());
    println!(
        "parameters  {:.1} M (bert sentence encoder: {} layers, {} dimensions, {} pooling{}, at most {} tokens)",
        parameters as f64 / 1e6,
        cfg.layers,
        cfg.hidden,
        spec.pooling.name(),
        if spec.normalize { ", normalized" } else { "" },
        spec.max_tokens
    );
    println!(
        "weights     {} (f32 on the Burn device)",
        crate::human(weights)
    );
    println!("KV cache    none (an encoder keeps nothing between requests)");
    println!(
        "headroom    {} ({:.0}%)",
        crate::human(headroom),
        args.headroom * 100.0
    );
    println!(
        "total       {}",
        crate::human(weights.saturating_add(headroom))
    );
    if let Some(avail) = available_memory() {
        println!("available   {}", crate::human(avail));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn estimate(args: EstimateArgs) -> anyhow::Result<ExitCode> {
    let path = resolve(&args.model).await?;
    if path.is_dir() && path.join("modules.json").is_file() {
        return estimate_encoder(&path, &args);
    }
    let files = ModelFiles::open(&path)?;
    let cfg = files.config()?;
    let usage = Usage {
        context: args.model.context,
        sequences: args.max_concurrency as usize,
        headroom: args.headroom,
        storage: match args.weights {
            HeldAs::Packed => WeightStorage::Packed,
            HeldAs::F16 => WeightStorage::F16,
            HeldAs::F32 => WeightStorage::F32,
        },
        kv: args.model.kv_cache,
    };
    let f = files.footprint(&usage)?;
    println!("model       {}", path.display());
    println!(
        "parameters  {:.1} M ({}: {} layers, hidden {}, vocab {})",
        f.parameters as f64 / 1e6,
        cfg.arch,
        cfg.layers,
        cfg.hidden,
        cfg.vocab
    );
    println!("on disk     {}", crate::human(f.file_bytes));
    println!(
        "weights     {} ({})",
        crate::human(f.weights_bytes),
        match args.weights {
            HeldAs::Packed => "kept as stored, memory-mapped",
            HeldAs::F16 => "decoded to f16 for a GPU that computes in f16",
            HeldAs::F32 => "decoded to f32 for the GPU path",
        }
    );
    let windowed = (0..cfg.layers.min(1 << 12))
        .filter(|&l| cfg.window(l).is_some())
        .count();
    println!(
        "KV cache    {} ({} x {} positions, {}; {} KV heads of {}{})",
        crate::human(f.kv_cache_bytes),
        usage.sequences,
        args.model.context,
        match args.weights {
            HeldAs::Packed => usage.kv.name(),
            HeldAs::F16 | HeldAs::F32 => "f32",
        },
        cfg.kv_heads,
        cfg.head_dim(),
        match (cfg.sliding_window, args.weights) {
            (Some(w), HeldAs::Packed) if windowed > 0 => format!(
                "; {windowed} of {} layers hold at most 2 x {w}-position windows",
                cfg.layers
            ),
            (Some(w), _) if windowed > 0 => {
                format!(
                    "; {windowed} of {} layers see {w}-position windows",
                    cfg.layers
                )
            }
            _ => String::new(),
        }
    );
    println!(
        "headroom    {} ({:.0}%)",
        crate::human(f.headroom_bytes),
        args.headroom * 100.0
    );
    println!("total       {}", crate::human(f.total()));
    if let Some(avail) = available_memory() {
        println!("available   {}", crate::human(avail));
    }
    use spice_hf_models::gguf::GgmlType;
    let stored = |ty: GgmlType| {
        let (values, bytes) = ty.block().unwrap_or((1, 4));
        crate::human(f.parameters.saturating_mul(bytes) / values)
    };
    println!(
        "\nstored as (per {:.1} M parameters): f16 {}  q8_0 {}  q5_0 {}  q4_0 {}",
        f.parameters as f64 / 1e6,
        stored(GgmlType::F16),
        stored(GgmlType::Q8_0),
        stored(GgmlType::Q5_0),
        stored(GgmlType::Q4_0)
    );
    Ok(ExitCode::SUCCESS)
}
