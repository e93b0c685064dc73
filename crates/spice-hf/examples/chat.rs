//! Chat through the facade: `cargo run -p spice-hf --example chat -- MODEL "question" [quant]`.
//! MODEL is a Hub reference, a model directory or a .gguf file; the answer is streamed.
#![allow(clippy::print_stdout, clippy::print_stderr)] // Reason: an example talks on the terminal.

use std::io::Write as _;

use spice_hf::models::chat::Message;
use spice_hf::runtime::Event;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(question)) = (args.next(), args.next()) else {
        eprintln!("usage: chat MODEL \"question\" [quant]");
        std::process::exit(2);
    };
    let mut builder = spice_hf::Model::builder(&model).context_length(1024);
    if let Some(q) = args.next() {
        builder = builder.quant(&q);
    }
    let model = builder.load().await?;
    let mut stream = model.stream(&[Message::new("user", &question)]).await?;
    let mut out = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event {
            Event::Text(t) => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            // No tools are offered here.
            Event::ToolCall(..) => {}
            Event::Done(c) => {
                println!(
                    "\n[{} prompt + {} generated tokens, {}, on {}]",
                    c.prompt_tokens,
                    c.completion_tokens,
                    c.finish_reason,
                    model.info().backend.map_or("no backend", |b| b.name())
                );
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    Ok(())
}
