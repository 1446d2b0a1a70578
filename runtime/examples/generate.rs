//! The README's library example: greedy completion of a prompt, streamed as text.
//!
//! `cargo run --release -p tinyrt --example generate [MODEL]`
//! (default model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched by `scripts/fetch-models.sh`).
use std::io::Write;
use tinyrt::{GenerateOptions, LoadOptions, Model, SamplerOptions, Session, SessionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let model = Model::load(&path, LoadOptions::default())?;
    let tok = model.tokenizer();
    let mut session = Session::new(&model, SessionOptions::default())?;
    let opts = GenerateOptions {
        max_tokens: 32,
        sampler: SamplerOptions::greedy(),
        ..Default::default()
    };
    let mut text = tok.stream_decoder();
    for step in session.generate(&tok.encode(b"The capital of France is")?, &opts)? {
        print!("{}", text.push(step?.id));
        std::io::stdout().flush()?;
    }
    println!("{}", text.finish());
    Ok(())
}
