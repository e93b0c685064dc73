//! Writes the tiny random Llama fixture (config.json, tokenizer, safetensors) into a directory,
//! for benchmarks that need a model small enough for a software GPU: `write-tiny-llama DIR`.
#![allow(clippy::print_stderr)] // Reason: a small command-line tool.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir] = args.as_slice() else {
        eprintln!("usage: write-tiny-llama DIR");
        return std::process::ExitCode::FAILURE;
    };
    match spice_hf_testkit::fixtures::write_tiny_llama(dir.as_ref(), 4) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("write-tiny-llama: writing {dir}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
