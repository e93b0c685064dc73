//! The decode loop: prefill the prompt, then sample token by token until an end-of-turn token,
//! a stop string or the token limit, streaming text as it becomes safe to show.

use std::time::Instant;

use spice_hf_grammar::Guide;

use crate::Result;
use crate::llama::Llama;
use crate::sampling::{Sampler, SamplingParams, TextStream};
use crate::tokenizer::Tokenizer;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Strings that end generation (not shown).
    pub stop: Vec<String>,
    /// Token ids that end generation besides the tokenizer's end-of-turn tokens.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why generation ended (OpenAI's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// The token limit or the context.
    Length,
    /// The caller cancelled.
    Cancelled,
    /// The answer is one or more tool calls (set by the runtime, which reads them back).
    ToolCalls,
}

impl FinishReason {
    /// `stop`, `length`, `cancelled` or `tool_calls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
            Self::ToolCalls => "tool_calls",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Generated ids (the end-of-turn token included when produced).
    pub token_ids: Vec<u32>,
    /// The text shown.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Prefill time in milliseconds (prompt to first logits).
    pub prefill_ms: f64,
    /// Time to the first generated token in milliseconds.
    pub ttft_ms: f64,
    /// Decode time after the first token in milliseconds.
    pub decode_ms: f64,
}

impl Generated {
    /// Generated tokens.
    pub fn completion_tokens(&self) -> usize {
        self.token_ids.len()
    }
}

/// What the callback tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop now (client gone).
    Cancel,
}

/// Generates from `prompt` (token ids, already templated), calling `on_text` once per generated
/// token (end-of-turn tokens aside) with the text that became safe to show, which may be empty
/// (a partial UTF-8 character, a possible stop string). Returning [`Flow::Cancel`] stops before
/// the next decode step.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str) -> Flow,
) -> Result<Generated> {
    generate_guided(model, tokenizer, prompt, params, None, on_text)
}

/// [`generate`] under a constraint: before each token, `guide` masks the logits of every
/// token its grammar does not allow; the generation ends where the grammar is complete and
/// nothing may follow. A step the guide cannot compute ends the generation with its error.
pub fn generate_guided(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut guide: Option<&mut Guide>,
    mut on_text: impl FnMut(&str) -> Flow,
) -> Result<Generated> {
    let start = Instant::now();
    let mut cache = model.new_cache();
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut stream = TextStream::new(params.stop.clone());
    let mut logits = model.forward(prompt, &mut cache)?;
    let prefill_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut history: Vec<u32> = prompt.to_vec();
    let mut out = Vec::new();
    let mut ttft_ms = 0.0;
    let mut first_at = None;
    let mut finish = FinishReason::Length;
    let stops = |t: u32| {
        !params.ignore_eos && (tokenizer.eos.contains(&t) || params.stop_token_ids.contains(&t))
    };
    while out.len() < params.max_tokens {
        if let Some(g) = guide.as_deref_mut() {
            g.mask(&mut logits)?;
        }
        let next = sampler.sample(&logits, &history);
        if let Some(g) = guide.as_deref_mut() {
            g.accept(next)?;
        }
        if first_at.is_none() {
            ttft_ms = start.elapsed().as_secs_f64() * 1000.0;
            first_at = Some(Instant::now());
        }
        out.push(next);
        history.push(next);
        if stops(next) {
            finish = FinishReason::Stop;
            break;
        }
        let piece = stream.push(tokenizer, next)?;
        if on_text(&piece) == Flow::Cancel {
            finish = FinishReason::Cancelled;
            break;
        }
        if stream.stopped() || guide.as_deref().is_some_and(Guide::is_finished) {
            finish = FinishReason::Stop;
            break;
        }
        if out.len() >= params.max_tokens || cache.len() >= cache.capacity() {
            break;
        }
        logits = model.forward(&[next], &mut cache)?;
    }
    if finish != FinishReason::Stop || !stream.stopped() {
        let rest = stream.finish();
        if !rest.is_empty() && finish != FinishReason::Cancelled {
            on_text(&rest);
        }
    }
    let decode_ms = first_at
        .map(|t| t.elapsed().as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    Ok(Generated {
        token_ids: out,
        text: stream.text().to_string(),
        finish_reason: finish,
        prompt_tokens: prompt.len(),
        prefill_ms,
        ttft_ms,
        decode_ms,
    })
}
