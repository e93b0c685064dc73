//! A loaded model and what its load found: files opened, backend chosen, memory checked,
//! weights loaded and the chat template settled ([`Engine::load`]); a prompt turned into ids
//! ([`Engine::prompt_ids`]); and the one blocking generation that turns a panic into an error
//! ([`Engine::generate`]), which sessions and the health probe both run. A sentence-encoder
//! repository (`modules.json` beside a BERT `config.json`) loads as an encoder instead, whose
//! one blocking call is [`Engine::embed`]; each kind refuses the other's requests by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use spice_hf_backend::host::{available_memory, peak_rss};
use spice_hf_backend::{BackendKind, Skipped};
use std::sync::OnceLock;

use spice_hf_grammar::tools::{Syntax, Tool, Tools, render_response};
use spice_hf_grammar::{Constraint, Guide, Vocabulary};
use spice_hf_models::bert::Bert;
use spice_hf_models::chat::{ChatTemplate, Message};
use spice_hf_models::footprint::{Footprint, Usage, WeightStorage};
use spice_hf_models::generate::{Flow, GenerateParams, Generated};
use spice_hf_models::llama::{Compute, CpuOptions};
use spice_hf_models::loaded::{LoadedModel, ModelFiles};
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_telemetry::names;

use crate::spec::{Cause, ModelSpec};
use crate::{Error, Result};

/// What to complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Plain text, tokenized as is.
    Text(String),
}

/// A loaded model and what the load found.
pub(crate) struct Engine {
    name: String,
    network: Network,
    backend: BackendKind,
    device: String,
    skipped: Vec<Skipped>,
    footprint: Footprint,
    load_ms: f64,
    peak_rss: Option<u64>,
}

/// What was loaded: a decoder that generates, or a sentence encoder.
enum Network {
    Decoder(Box<Decoder>),
    Encoder(Box<Encoder>),
}

/// A generating model.
struct Decoder {
    loaded: LoadedModel,
    template: Option<ChatTemplate>,
    kv: KvUsage,
    /// The vocabulary compiled for constrained decoding, built at the first request that
    /// needs it (it walks the whole vocabulary); the error when it cannot be.
    vocabulary: OnceLock<std::result::Result<Vocabulary, String>>,
}

/// A sentence encoder.
struct Encoder {
    bert: Bert,
    tokenizer: Tokenizer,
    source: PathBuf,
}

/// One input of an embeddings request: text, or ids the client tokenized itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbeddingInput {
    /// Text, tokenized with the model's tokenizer (its `[CLS]`/`[SEP]` added).
    Text(String),
    /// Token ids, taken as they are.
    Tokens(Vec<u32>),
}

/// Sentence vectors and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Embeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of every input together.
    pub prompt_tokens: usize,
}

/// A request made ready to generate: its prompt ids, the constraint's state and, when tools
/// may be called, how the answer is read back.
pub(crate) struct Prepared {
    pub(crate) ids: Vec<u32>,
    pub(crate) guide: Option<Guide>,
    pub(crate) calls: Option<(Syntax, Tools)>,
}

/// Positions the running requests hold in their KV caches, published as
/// [`names::KV_CACHE_USAGE`]: their share of `capacity` (every concurrent request at the full
/// context, what the footprint reserved).
struct KvUsage {
    model: String,
    held: AtomicUsize,
    capacity: usize,
}

impl KvUsage {
    fn add(&self, n: usize) {
        let held = self.held.fetch_add(n, Ordering::Relaxed) + n;
        self.publish(held);
    }

    fn release(&self, n: usize) {
        let held = self.held.fetch_sub(n, Ordering::Relaxed) - n;
        self.publish(held);
    }

    fn publish(&self, held: usize) {
        let ratio = (held as f64 / self.capacity.max(1) as f64).min(1.0);
        metrics::gauge!(names::KV_CACHE_USAGE, names::MODEL => self.model.clone()).set(ratio);
    }
}

/// What one generation holds in [`KvUsage`], given back when it ends however it ends.
struct Held<'a> {
    usage: &'a KvUsage,
    positions: usize,
}

impl Held<'_> {
    fn grow(&mut self, n: usize) {
        self.positions += n;
        self.usage.add(n);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.usage.release(self.positions);
    }
}

/// A load failure of `model` that `cause` explains.
pub(crate) fn failed(model: &str, cause: Cause) -> Error {
    Error::Load {
        model: model.to_string(),
        reason: cause.to_string(),
        cause: Some(cause),
    }
}

impl Engine {
    /// Opens `path`, chooses the backend, checks the memory the host has against the
    /// footprint `spec` asks for, loads and settles the template. Blocking.
    pub(crate) fn load(spec: &ModelSpec, path: &Path) -> Result<Self> {
        let load_err = |e: spice_hf_models::Error| failed(&spec.name, Arc::new(e));
        if path.is_dir() && path.join("modules.json").is_file() {
            return Self::load_encoder(spec, path);
        }
        let files = ModelFiles::open(path).map_err(load_err)?;
        let choice =
            spice_hf_backend::choose(spec.backend).map_err(|e| failed(&spec.name, Arc::new(e)))?;
        let compute = compute(spec, choice.kind, &choice.device);
        // Every request that may run at once holds a KV cache of the whole context.
        let usage = Usage {
            context: spec.context_length,
            sequences: spec.limits.max_concurrency.get(),
            headroom: spec.headroom,
            storage: WeightStorage::of(&compute),
            kv: spec.kv_cache,
        };
        let footprint = files.footprint(&usage).map_err(load_err)?;
        for s in &choice.skipped {
            let reason = if s.kind.compiled() {
                "unavailable"
            } else {
                "not_compiled"
            };
            metrics::counter!(names::BACKEND_FALLBACK, names::MODEL => spec.name.clone(), names::BACKEND => s.kind.name(), names::REASON => reason).increment(1);
        }
        check_memory(spec, &usage, &footprint, choice.kind)?;
        let loaded = files
            .load(spec.context_length, &compute)
            .map_err(load_err)?;
        let template = template(spec, &loaded);
        let capacity = loaded
            .model
            .max_context()
            .saturating_mul(spec.limits.max_concurrency.get());
        let device = loaded
            .model
            .compute_detail()
            .unwrap_or_else(|| choice.detail.clone());
        let decoder = Decoder {
            loaded,
            template,
            kv: KvUsage {
                model: spec.name.clone(),
                held: AtomicUsize::new(0),
                capacity,
            },
            vocabulary: OnceLock::new(),
        };
        // Published at 0 from the load on, like the queue gauges.
        decoder.kv.publish(0);
        Ok(Self {
            name: spec.name.clone(),
            network: Network::Decoder(Box::new(decoder)),
            backend: choice.kind,
            device,
            skipped: choice.skipped.clone(),
            footprint,
            load_ms: 0.0,
            peak_rss: peak_rss(),
        })
    }

    /// Loads a sentence encoder (a Burn graph on the chosen backend's device, whichever it is:
    /// the CPU's is Burn's too). Its footprint is its weights in f32 and the headroom: it
    /// keeps no cache between requests.
    fn load_encoder(spec: &ModelSpec, path: &Path) -> Result<Self> {
        let load_err = |e: spice_hf_models::Error| failed(&spec.name, Arc::new(e));
        let choice =
            spice_hf_backend::choose(spec.backend).map_err(|e| failed(&spec.name, Arc::new(e)))?;
        let tensors = spice_hf_models::tensors::TensorSet::from_safetensors_dir(path);
        let parameters: u64 = tensors
            .as_ref()
            .map(|t| t.iter().map(|t| t.elements() as u64).sum())
            .unwrap_or(0);
        let weights_bytes = parameters.saturating_mul(4);
        let footprint = Footprint {
            parameters,
            weights_bytes,
            file_bytes: weights_bytes,
            kv_cache_bytes: 0,
            headroom_bytes: (weights_bytes as f64 * spec.headroom) as u64,
        };
        let usage = Usage {
            context: 0,
            sequences: spec.limits.max_concurrency.get(),
            headroom: spec.headroom,
            storage: WeightStorage::F32,
            kv: spec.kv_cache,
        };
        check_memory(spec, &usage, &footprint, choice.kind)?;
        let bert = Bert::load(path, &choice.device).map_err(load_err)?;
        let tokenizer = Tokenizer::from_dir(path).map_err(load_err)?;
        Ok(Self {
            name: spec.name.clone(),
            network: Network::Encoder(Box::new(Encoder {
                bert,
                tokenizer,
                source: path.to_path_buf(),
            })),
            backend: choice.kind,
            device: choice.detail.clone(),
            skipped: choice.skipped.clone(),
            footprint,
            load_ms: 0.0,
            peak_rss: peak_rss(),
        })
    }

    /// The decoder, or an error naming the model when it is an encoder.
    fn decoder(&self) -> Result<&Decoder> {
        match &self.network {
            Network::Decoder(d) => Ok(d),
            Network::Encoder(_) => Err(Error::Invalid {
                field: "model".into(),
                message: format!(
                    "`{}` is an embedding model: it answers POST /v1/embeddings, not completions",
                    self.name
                ),
            }),
        }
    }

    /// The encoder, or an error naming the model when it generates.
    fn encoder(&self) -> Result<&Encoder> {
        match &self.network {
            Network::Encoder(e) => Ok(e),
            Network::Decoder(_) => Err(Error::Invalid {
                field: "model".into(),
                message: format!(
                    "`{}` is a chat and completion model: it has no embeddings (serve an embedding model, e.g. a sentence-transformers repository)",
                    self.name
                ),
            }),
        }
    }

    /// Whether it is a sentence encoder.
    pub(crate) fn is_encoder(&self) -> bool {
        matches!(self.network, Network::Encoder(_))
    }

    /// Sentence vectors of `inputs` in one forward pass, on this (blocking) thread. Text is
    /// tokenized here; an input over the model's length is an error naming it unless
    /// `truncate`, which keeps its first tokens and its last (the closing `[SEP]`). Panics
    /// become errors.
    pub(crate) fn embed(&self, inputs: &[EmbeddingInput], truncate: bool) -> Result<Embeddings> {
        let enc = self.encoder()?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let max = enc.bert.spec().max_tokens;
            let mut batch = Vec::with_capacity(inputs.len());
            for (i, input) in inputs.iter().enumerate() {
                let mut ids = match input {
                    EmbeddingInput::Text(t) => enc.tokenizer.encode_with_special_tokens(t)?,
                    EmbeddingInput::Tokens(ids) => ids.clone(),
                };
                if ids.is_empty() {
                    return Err(Error::Invalid {
                        field: "input".into(),
                        message: format!("input {i} is empty"),
                    });
                }
                if ids.len() > max {
                    if !truncate {
                        return Err(Error::InputLength {
                            index: i,
                            tokens: ids.len(),
                            capacity: max,
                        });
                    }
                    let last = ids[ids.len() - 1];
                    ids.truncate(max - 1);
                    ids.push(last);
                }
                batch.push(ids);
            }
            let prompt_tokens = batch.iter().map(Vec::len).sum();
            let vectors = enc.bert.embed(&batch)?;
            Ok(Embeddings {
                vectors,
                prompt_tokens,
            })
        }))
        .unwrap_or_else(|p| {
            Err(Error::Internal(format!(
                "embedding panicked: {}",
                crate::panic_message(&*p)
            )))
        })
    }

    /// Dimensions of an encoder's vectors.
    pub(crate) fn dimensions(&self) -> Option<usize> {
        match &self.network {
            Network::Encoder(e) => Some(e.bert.dimensions()),
            Network::Decoder(_) => None,
        }
    }

    /// With the load time the caller measured (fetch included).
    pub(crate) fn with_load_ms(self, load_ms: f64) -> Self {
        Self { load_ms, ..self }
    }

    /// The backend it runs on.
    pub(crate) fn backend(&self) -> BackendKind {
        self.backend
    }

    /// What the backend runs on.
    pub(crate) fn device(&self) -> &str {
        &self.device
    }

    /// Backends passed over.
    pub(crate) fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The footprint estimate.
    pub(crate) fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// Load time, ms.
    pub(crate) fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Peak RSS of the process after the load.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        self.peak_rss
    }

    /// The file or directory loaded.
    pub(crate) fn source(&self) -> &PathBuf {
        match &self.network {
            Network::Decoder(d) => &d.loaded.source,
            Network::Encoder(e) => &e.source,
        }
    }

    /// Whether it has a chat template.
    pub(crate) fn has_template(&self) -> bool {
        self.decoder().is_ok_and(|d| d.template.is_some())
    }

    /// The ids of `prompt` (rendered with the template when a chat), checked against the
    /// context; `field` names the request field an error points at. Blocking; a panic in the
    /// template or the tokenizer is returned as an error, as in [`Engine::generate`].
    pub(crate) fn prompt_ids(&self, prompt: &Prompt, field: &str) -> Result<Vec<u32>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.prompt_ids_unguarded(prompt, field)
        }))
        .unwrap_or_else(|p| {
            Err(Error::Internal(format!(
                "preparing the prompt panicked: {}",
                crate::panic_message(&*p)
            )))
        })
    }

    /// Prepares a request: renders and tokenizes the prompt (with the tools, in the
    /// template's own syntax or the default one) and compiles its constraint. Panics become
    /// errors. A constraint that cannot be compiled is an [`Error::Invalid`] naming
    /// `response_format`, or `tools` for the calls' schemas.
    pub(crate) fn prepare(
        &self,
        prompt: &Prompt,
        constraint: Option<&Constraint>,
        tools: Option<&Tools>,
    ) -> Result<Prepared> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.prepare_unguarded(prompt, constraint, tools)
        }))
        .unwrap_or_else(|p| {
            Err(Error::Internal(format!(
                "preparing the prompt panicked: {}",
                crate::panic_message(&*p)
            )))
        })
    }

    fn prepare_unguarded(
        &self,
        prompt: &Prompt,
        constraint: Option<&Constraint>,
        tools: Option<&Tools>,
    ) -> Result<Prepared> {
        let tools = tools.filter(|t| t.active());
        if let (Some(_), Prompt::Text(_)) = (tools, prompt) {
            return Err(Error::Invalid {
                field: "tools".into(),
                message: "tools need a chat prompt".into(),
            });
        }
        // The template's own syntax when it renders tools, else the default format's.
        let own = self
            .decoder()?
            .template
            .as_ref()
            .and_then(|t| t.tool_syntax().map(|syntax| (t, syntax)));
        let syntax = tools.map(|_| own.map_or(Syntax::Hermes, |(_, s)| s));
        let ids = match (prompt, tools, own) {
            (Prompt::Chat(messages), Some(tools), Some((template, _))) => {
                let declared: Vec<serde_json::Value> =
                    tools.tools.iter().map(Tool::openai).collect();
                // The client's tool descriptions are text too: where a template prints them
                // as they are, a control token's text in them stays plain characters.
                let described: Vec<&str> = tools
                    .tools
                    .iter()
                    .filter_map(|t| t.description.as_deref())
                    .collect();
                self.chat_ids(messages, &described, |m| {
                    template.render_with_tools(m, &declared, true)
                })?
            }
            (Prompt::Chat(messages), Some(tools), None) => self.prompt_ids_unguarded(
                &Prompt::Chat(default_tool_format(messages, tools)),
                "messages",
            )?,
            _ => self.prompt_ids_unguarded(prompt, "messages")?,
        };
        let (field, constraint) = match (tools, syntax) {
            (Some(tools), Some(syntax)) => (
                "tools",
                tools
                    .constraint(syntax, constraint)
                    .map_err(|e| Error::Invalid {
                        field: "tools".into(),
                        message: e.to_string(),
                    })?,
            ),
            _ => ("response_format", constraint.cloned()),
        };
        let guide = match &constraint {
            None => None,
            Some(c) => Some(self.vocabulary()?.guide(c).map_err(|e| Error::Invalid {
                field: field.into(),
                message: e.to_string(),
            })?),
        };
        Ok(Prepared {
            ids,
            guide,
            calls: syntax.zip(tools.cloned()),
        })
    }

    /// The model's vocabulary for the grammar engine, built once.
    fn vocabulary(&self) -> Result<&Vocabulary> {
        let d = self.decoder()?;
        d.vocabulary
            .get_or_init(|| {
                let n = d.loaded.model.config().vocab;
                d.loaded.tokenizer.vocabulary(n).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Invalid {
                field: "response_format".into(),
                message: format!("this model cannot constrain its output: {e}"),
            })
    }

    /// Renders `messages` with `render` and tokenizes the result, the client's text (`before`,
    /// which the template renders ahead of the messages, then the messages' text) encoded as
    /// plain text (never control tokens).
    fn chat_ids(
        &self,
        messages: &[Message],
        before: &[&str],
        render: impl FnOnce(&[Message]) -> spice_hf_models::Result<String>,
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::Invalid {
                field: "messages".into(),
                message: "at least one message is required".into(),
            });
        }
        let rendered = render(messages)?;
        let typed: Vec<&str> = before
            .iter()
            .copied()
            .chain(messages.iter().map(|m| m.content.as_str()))
            .collect();
        let ids = self
            .decoder()?
            .loaded
            .tokenizer
            .encode_chat_prompt(&rendered, &typed)?;
        self.check_length(ids, "messages")
    }

    fn check_length(&self, ids: Vec<u32>, field: &str) -> Result<Vec<u32>> {
        if ids.is_empty() {
            return Err(Error::Invalid {
                field: field.to_string(),
                message: "the prompt is empty".into(),
            });
        }
        let capacity = self.decoder()?.loaded.model.max_context();
        if ids.len() >= capacity {
            return Err(Error::ContextLength {
                prompt_tokens: ids.len(),
                capacity,
            });
        }
        Ok(ids)
    }

    fn prompt_ids_unguarded(&self, prompt: &Prompt, field: &str) -> Result<Vec<u32>> {
        let d = self.decoder()?;
        let tokenizer = &d.loaded.tokenizer;
        let ids = match prompt {
            Prompt::Text(text) => tokenizer.encode_prompt(text)?,
            Prompt::Chat(messages) => {
                let Some(template) = &d.template else {
                    return Err(Error::Template(
                        "this model has no chat template; use /v1/completions, or set chat_template in the model's params".into(),
                    ));
                };
                if messages.is_empty() {
                    return Err(Error::Invalid {
                        field: field.to_string(),
                        message: "at least one message is required".into(),
                    });
                }
                return self.chat_ids(messages, &[], |m| template.render(m, true));
            }
        };
        self.check_length(ids, field)
    }

    /// Generates after `ids` on this thread (a blocking one), calling `on_piece` with each
    /// piece of text. A panic in the model code is a failure of ours, returned as an error
    /// that starts with `what` (`generation`, `the probe`), never a cancellation.
    pub(crate) fn generate(
        &self,
        ids: &[u32],
        params: &GenerateParams,
        guide: Option<&mut Guide>,
        mut on_piece: impl FnMut(&str) -> Flow,
        what: &str,
    ) -> Result<Generated> {
        let d = self.decoder()?;
        let mut held = Held {
            usage: &d.kv,
            positions: 0,
        };
        held.grow(ids.len());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            spice_hf_models::generate::generate_guided(
                &d.loaded.model,
                &d.loaded.tokenizer,
                ids,
                params,
                guide,
                // Called once per generated token: each one takes a position of the cache.
                |piece| {
                    held.grow(1);
                    on_piece(piece)
                },
            )
        }))
        .map_err(|p| Error::Internal(format!("{what} panicked: {}", crate::panic_message(&*p))))?
        .map_err(Error::from)
    }
}

/// The CPU backend runs our kernels over the packed weights; GPU devices run Burn, with f16
/// matrices where the device computes in f16.
/// The conversation in the default tool format, for a template that cannot render tools: the
/// tools described in the system message (after the caller's own, or as one of their own),
/// past calls written into the assistant turns, tool results as user turns.
fn default_tool_format(messages: &[Message], tools: &Tools) -> Vec<Message> {
    let described = tools.system_prompt();
    let mut out = Vec::with_capacity(messages.len() + 1);
    let rest = match messages.split_first() {
        Some((first, rest)) if first.role == "system" => {
            let text = format!("{}\n\n{described}", first.content);
            out.push(Message::new("system", &text));
            rest
        }
        _ => {
            out.push(Message::new("system", &described));
            messages
        }
    };
    for m in rest {
        match m.role.as_str() {
            "assistant" if !m.tool_calls.is_empty() => {
                let mut text = m.content.clone();
                for call in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&Syntax::Hermes.render_call(call));
                }
                out.push(Message::new("assistant", &text));
            }
            "tool" => out.push(Message::new("user", &render_response(&m.content))),
            _ => out.push(m.clone()),
        }
    }
    out
}

fn compute(spec: &ModelSpec, kind: BackendKind, device: &spice_hf_backend::Device) -> Compute {
    if kind == BackendKind::Cpu {
        let mut cpu = CpuOptions::default()
            .with_kv(spec.kv_cache)
            .with_activations(spec.activations);
        if let Some(threads) = spec.threads {
            cpu = cpu.with_threads(threads);
        }
        Compute::Cpu(cpu)
    } else {
        Compute::gpu(device.clone())
    }
}

/// Refuses a load whose footprint passes the memory available now, with the numbers and what
/// to change.
fn check_memory(
    spec: &ModelSpec,
    usage: &Usage,
    footprint: &Footprint,
    kind: BackendKind,
) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if footprint.total() <= available {
        return Ok(());
    }
    Err(Error::Load {
        model: spec.name.clone(),
        reason: format!(
            "it needs about {} MiB ({} MiB of weights, {} MiB of KV cache for {} x {} positions, {:.0} % headroom) \
             but {} MiB are available on the {} device; use a smaller quantization, a shorter context_length, \
             a lower max_concurrency, or the CPU backend",
            footprint.total() >> 20,
            footprint.weights_bytes >> 20,
            footprint.kv_cache_bytes >> 20,
            usage.sequences,
            spec.context_length,
            spec.headroom * 100.0,
            available >> 20,
            kind
        ),
        cause: None,
    })
}

/// The spec's chat template (its special tokens from the model's tokenizer), else the model's.
fn template(spec: &ModelSpec, loaded: &LoadedModel) -> Option<ChatTemplate> {
    match &spec.chat_template {
        Some(source) => {
            let text = |id: Option<u32>| {
                id.and_then(|i| loaded.tokenizer.id_to_token(i))
                    .unwrap_or_default()
            };
            Some(ChatTemplate::new(
                source,
                &text(loaded.tokenizer.bos),
                &text(loaded.tokenizer.eos.first().copied()),
            ))
        }
        None => loaded.template.clone(),
    }
}
