//! What the model layer itself answers, with no runtime, limiter or server in between: the
//! reference the runtime, server and binary tests compare served answers with (feature
//! `reference`, so the kit's other users do not build Burn for it).

use std::path::Path;

use spice_hf_models::chat::Message;
use spice_hf_models::generate::{Flow, GenerateParams, generate};
use spice_hf_models::llama::Compute;
use spice_hf_models::loaded::ModelFiles;

/// One answer of the model layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Direct {
    /// Tokens of the templated prompt.
    pub prompt_tokens: usize,
    /// The generated ids.
    pub token_ids: Vec<u32>,
    /// Their text.
    pub text: String,
}

/// Opens the model in `dir`, renders `messages` with its chat template and generates with
/// `params` on Burn's f32 graph on the CPU: an engine independent of the packed one the
/// runtime serves with, so agreeing with it means something. Panics on any failure (a test
/// helper).
pub fn direct(dir: &Path, messages: &[Message], params: &GenerateParams) -> Direct {
    let files = ModelFiles::open(dir).expect("open the model files");
    let device = spice_hf_backend::BackendKind::Cpu
        .device()
        .expect("the CPU device");
    let loaded = files
        .load(256, &Compute::Burn(device))
        .expect("load on Burn's f32 graph");
    let prompt = loaded
        .template
        .as_ref()
        .expect("the model has a chat template")
        .render(messages, true)
        .expect("render the chat template");
    let ids = loaded
        .tokenizer
        .encode_prompt(&prompt)
        .expect("tokenize the prompt");
    let out = generate(&loaded.model, &loaded.tokenizer, &ids, params, |_| {
        Flow::Continue
    })
    .expect("generate");
    Direct {
        prompt_tokens: ids.len(),
        token_ids: out.token_ids,
        text: out.text,
    }
}

/// Greedy [`direct`] of at most `max_tokens`.
pub fn direct_greedy(dir: &Path, messages: &[Message], max_tokens: usize) -> Direct {
    let params = GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    };
    direct(dir, messages, &params)
}
