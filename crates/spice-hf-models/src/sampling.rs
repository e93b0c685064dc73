//! Sampling: greedy, temperature, top-k, top-p, min-p, repetition / presence / frequency
//! penalties, and a seed (same seed, same output). Plus [`TextStream`]: streaming text that
//! never splits a UTF-8 character and never shows a stop string.

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::Result;
use crate::tokenizer::Tokenizer;

/// Sampling settings. The defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already seen (1: off).
    pub repetition_penalty: f32,
    /// Subtract from the logit of every token already seen (OpenAI semantics).
    pub presence_penalty: f32,
    /// Subtract this times its count from the logit of every token already seen.
    pub frequency_penalty: f32,
    /// Random seed; `None` picks one.
    pub seed: Option<u64>,
}

/// Sampling parameters refused by [`SamplingParams::validate`]: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSampling {
    /// The setting (`temperature`, `top_p`, ...).
    pub field: &'static str,
    /// What is wrong, and the range it must be in.
    pub message: String,
}

/// The ranges OpenAI documents (and llama.cpp and vLLM accept), inclusive.
pub const TEMPERATURE: (f32, f32) = (0.0, 2.0);
/// `top_p` and `min_p` (a `top_p` of 0 is refused on its own).
pub const PROBABILITY: (f32, f32) = (0.0, 1.0);
/// `repetition_penalty`.
pub const REPETITION_PENALTY: (f32, f32) = (0.01, 10.0);
/// `presence_penalty` and `frequency_penalty`.
pub const PENALTY: (f32, f32) = (-2.0, 2.0);

impl SamplingParams {
    /// Checks every setting against its range (NaN is out of every range). The one check the
    /// server, the config file and the command line all run.
    pub fn validate(&self) -> std::result::Result<(), InvalidSampling> {
        let checks = [
            ("temperature", self.temperature, TEMPERATURE),
            ("top_p", self.top_p, PROBABILITY),
            ("min_p", self.min_p, PROBABILITY),
            (
                "repetition_penalty",
                self.repetition_penalty,
                REPETITION_PENALTY,
            ),
            ("presence_penalty", self.presence_penalty, PENALTY),
            ("frequency_penalty", self.frequency_penalty, PENALTY),
        ];
        for (field, v, (lo, hi)) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(InvalidSampling {
                    field,
                    message: format!("{v} is out of range; it must be between {lo} and {hi}"),
                });
            }
        }
        if self.top_p == 0.0 {
            return Err(InvalidSampling {
                field: "top_p",
                message: "must be greater than 0".into(),
            });
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// Picks the next token from logits.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler with its own random stream.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token given the logits of the last position and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits = logits.to_vec();
        let penalised =
            p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if penalised && !history.is_empty() {
            let mut counts = std::collections::HashMap::<u32, f32>::new();
            for &t in history {
                *counts.entry(t).or_default() += 1.0;
            }
            for (&t, &n) in &counts {
                let Some(l) = logits.get_mut(t as usize) else {
                    continue;
                };
                if p.repetition_penalty != 1.0 {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
                *l -= p.presence_penalty + p.frequency_penalty * n;
            }
        }
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(&logits);
        }
        let cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .filter(|(_, l)| l.is_finite())
            .collect();
        if cand.is_empty() {
            return argmax(&logits);
        }
        let (cand, probs, keep) = truncate(cand, p);
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &x) in probs[..keep].iter().enumerate() {
            if r < x {
                return cand[i].0;
            }
            r -= x;
        }
        cand[keep - 1].0
    }
}

/// Most likely first, then the lower id.
fn by_likelihood(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Applies top-k, min-p and top-p to the (non-empty) candidates: returns them with their
/// probabilities (normalised over the top-k set) and how many are kept. Only as many
/// candidates as the cut needs are sorted (a partial selection that grows by doubling), so a
/// 49,152-token vocabulary is not sorted every step; the kept candidates and their order are
/// exactly those a full sort gives.
fn truncate(mut cand: Vec<(u32, f32)>, p: &SamplingParams) -> (Vec<(u32, f32)>, Vec<f32>, usize) {
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, by_likelihood);
        cand.truncate(p.top_k);
    }
    let n = cand.len();
    let max = cand.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
    // In f64, so the normaliser does not depend on the order candidates come in.
    let sum = cand
        .iter()
        .map(|(_, l)| (l - max).exp() as f64)
        .sum::<f64>() as f32;
    if p.top_p >= 1.0 && p.min_p <= 0.0 {
        // No cut: every candidate stays. Order does not change the distribution; a top-k set is
        // small, so it is sorted to draw exactly as a full sort does, and a whole vocabulary
        // is left in id order (same distribution, no sort).
        if p.top_k > 0 {
            cand.sort_by(by_likelihood);
        }
        let probs = cand.iter().map(|(_, l)| (l - max).exp() / sum).collect();
        return (cand, probs, n);
    }
    let mut k = 64.min(n);
    loop {
        if k < n {
            cand.select_nth_unstable_by(k - 1, by_likelihood);
        }
        cand[..k].sort_by(by_likelihood);
        let probs: Vec<f32> = cand[..k]
            .iter()
            .map(|(_, l)| (l - max).exp() / sum)
            .collect();
        let mut keep = k;
        let mut complete = k == n;
        if p.min_p > 0.0 {
            keep = probs
                .iter()
                .take_while(|&&x| x >= p.min_p * probs[0])
                .count()
                .max(1);
            complete |= keep < k;
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let within = probs.iter().take(keep).take_while(|&&x| {
                let before = acc;
                acc += x;
                before < p.top_p
            });
            let top = within.count().max(1);
            // The cut is known once the mass reached top_p inside the sorted prefix.
            complete |= top < keep || acc >= p.top_p;
            keep = top;
        }
        if complete {
            return (cand, probs, keep);
        }
        k = (k * 2).min(n);
    }
}

/// The index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Turns generated token ids into text deltas: waits while the text ends in an incomplete
/// UTF-8 character, holds back what could be the start of a stop string, and stops (without
/// showing it) when one appears.
#[derive(Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
    stop: Vec<String>,
    stopped: bool,
    text: String,
}

impl TextStream {
    /// A stream that stops at any of `stop`.
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Whether a stop string was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// All text shown so far.
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }

    /// Adds a token; returns the text that can be shown now (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        if self.stopped {
            return Ok(String::new());
        }
        self.ids.push(id);
        let full = tokenizer.decode(&self.ids, true)?;
        if full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        self.text = full;
        let search_from = self
            .emitted
            .saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        let search_from = floor_char(&self.text, search_from);
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| i + search_from)
            })
            .min()
        {
            self.stopped = true;
            self.text.truncate(at);
            return Ok(self.take(at));
        }
        let hold = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&n| s.is_char_boundary(n))
                    .map(move |n| &s[..n])
            })
            .filter(|prefix| self.text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let upto = self.text.len() - hold;
        Ok(self.take(upto))
    }

    /// Flushes held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        let end = self.text.len();
        self.take(end)
    }

    fn take(&mut self, upto: usize) -> String {
        if upto <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        out
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
