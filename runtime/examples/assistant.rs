//! A three-turn conversation with SmolLM2-135M-Instruct through the `Assistant` API.
//!
//! `cargo run --release -p tinyrt --example assistant [MODEL.gguf]`
//! (default model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by
//! `scripts/fetch-models.sh`).

use std::io::Write;
use std::ops::ControlFlow;

use tinyrt::chat::{Assistant, AssistantOptions};
use tinyrt::{LoadOptions, SamplerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        .to_string()
    });
    let mut assistant = Assistant::load(
        &path,
        LoadOptions::default(),
        AssistantOptions {
            system_prompt: Some("You are a helpful assistant. Keep answers short.".into()),
            sampler: SamplerOptions::greedy(),
            max_tokens: 96,
            ..AssistantOptions::default()
        },
    )?;
    eprintln!("chat template: {}", assistant.template_description());

    // The simple form: one call, the whole reply.
    let answer = assistant.respond("What is the capital of France?", 64)?;
    println!("> What is the capital of France?\n{answer}\n");

    // Streaming: pieces arrive as they are generated; the KV cache of the first turn is reused.
    for question in ["And of Italy?", "Name one famous dish from each."] {
        println!("> {question}");
        let reply = assistant.respond_streaming(question, |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
            ControlFlow::Continue(())
        })?;
        println!();
        eprintln!(
            "[{} prompt tokens, {} reused from the cache; first token after {:.0} ms; {} generated; stop: {}]",
            reply.prompt_tokens,
            reply.reused_tokens,
            reply.time_to_first_token.as_secs_f64() * 1e3,
            reply.generated_tokens,
            reply.stop_reason.as_str()
        );
        println!();
    }
    println!("({} messages in the history)", assistant.history().len());
    Ok(())
}
