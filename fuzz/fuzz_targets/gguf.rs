//! Fuzz target: arbitrary bytes as a GGUF file. Parsing must return `Ok` or an error naming the
//! problem, never panic, over-read or allocate without bound; a file that parses is then read
//! as a Llama configuration, a tokenizer and a chat template, which must not panic either.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spice_hf_models::chat::ChatTemplate;
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
    let _ = LlamaConfig::from_gguf(&gguf);
    let _ = Tokenizer::from_gguf(&gguf);
    let _ = ChatTemplate::from_gguf(&gguf);
});
