//! Fuzz target: arbitrary bytes as a GGUF file. Parsing must return `Ok` or an error naming the
//! problem, never panic, over-read or allocate without bound; a file that parses is then read
//! as a Llama configuration (and sized, as `spice-hf estimate` does), a tokenizer and a chat
//! template (rendered once, within its fuel), which must not panic either.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spice_hf_models::chat::{ChatTemplate, Message};
use spice_hf_models::footprint::{Footprint, Usage};
use spice_hf_models::gguf::GgufFile;
use spice_hf_models::tokenizer::Tokenizer;
use spice_hf_models::weights::LlamaConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = GgufFile::parse(
        std::io::Cursor::new(data),
        data.len() as u64,
        Path::new("fuzz.gguf"),
    ) else {
        return;
    };
    if let Ok(cfg) = LlamaConfig::from_gguf(&gguf) {
        for context in [1, 2048, usize::MAX] {
            let _ = Footprint::estimate(&cfg, u64::MAX, data.len() as u64, &Usage::new(context));
        }
    }
    let _ = Tokenizer::from_gguf(&gguf);
    if let Some(t) = ChatTemplate::from_gguf(&gguf) {
        let _ = t.render(&[Message::new("user", "hi")], true);
    }
});
