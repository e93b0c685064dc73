//! Choosing the backend at run time: `cargo run -p spice-hf --example swap_backend -- MODEL [cpu|wgpu|cuda]...`.
//! Loads the model on each backend named, in turn; one this build or host lacks is reported
//! with the reason (a forced backend never falls back silently).
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: an example talks on the terminal.

use spice_hf::backend::BackendKind;
use spice_hf::models::chat::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(model) = args.next() else {
        eprintln!("usage: swap_backend MODEL [cpu|wgpu|cuda]...");
        std::process::exit(2);
    };
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = vec!["cuda".into(), "wgpu".into(), "cpu".into()];
    }
    for name in names {
        let kind = BackendKind::parse(&name)?;
        let loaded = spice_hf::Model::builder(&model)
            .backend(kind)
            .context_length(512)
            .load()
            .await;
        match loaded {
            Ok(m) => {
                let answer = m.chat(&[Message::new("user", "Say hi.")]).await?;
                let info = m.info();
                println!(
                    "{kind}: {:?} in {:.0} ms load, {} tokens",
                    answer.text,
                    info.load_ms.unwrap_or(0.0),
                    answer.completion_tokens
                );
            }
            Err(e) => println!("{kind}: unavailable: {e}"),
        }
    }
    Ok(())
}
