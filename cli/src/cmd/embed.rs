//! `tinyrt embed MODEL (-p TEXT | -f FILE) [--json] [--pooling P] [--normalize l2|none]
//! [--max-length N] [-b BATCH]`: sentence embeddings from an encoder (BERT), one per input. `-f` reads one
//! text per line. `--json` prints the OpenAI embeddings shape: `{"model", "dim", "data":
//! [{"index", "embedding"}], "usage": {"prompt_tokens"}}`; without it, one line of numbers per
//! input. A text longer than the maximum length is truncated, with a warning on stderr.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tinyrt::config::Pooling;
use tinyrt::embed::{EmbedOptions, Embedder, Normalize};

use crate::args::LoadArgs;
use crate::error::bad_input;
use crate::output;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "file"])))]
pub struct Args {
    /// The GGUF model file (an encoder).
    pub model: PathBuf,
    /// One text to embed.
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// A file of texts, one per line.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Pooling: mean, cls, last (default: the model's pooling_type).
    #[arg(long)]
    pub pooling: Option<String>,
    /// l2 (unit length, the default) or none.
    #[arg(long, default_value = "l2")]
    pub normalize: String,
    /// Longest token sequence, [CLS] and [SEP] included (default: the model's positions).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Texts per forward pass (packed without padding; the results do not depend on it).
    #[arg(short = 'b', long, default_value_t = tinyrt::embed::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Print one JSON object (OpenAI's embeddings shape).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn run(args: Args) -> Result<()> {
    let pooling = match &args.pooling {
        Some(p) => Pooling::parse(p).map_err(bad_input)?,
        None => None,
    };
    if args.pooling.is_some() && pooling.is_none() {
        return Err(bad_input("--pooling none gives no sentence embedding"));
    }
    let normalize = match args.normalize.to_ascii_lowercase().as_str() {
        "l2" => Normalize::L2,
        "none" => Normalize::None,
        other => {
            return Err(bad_input(format!(
                "--normalize {other:?}: expected l2 or none"
            )))
        }
    };
    let load = args.load.options()?;
    let texts = crate::args::read_texts(args.prompt.as_deref(), args.file.as_deref())?;
    let model = crate::args::load_model(&args.model, load)?;
    crate::args::requant::report(&model);
    let opts = EmbedOptions {
        pooling,
        normalize,
        max_length: args.max_length,
        batch_size: Some(args.batch_size),
    };
    let mut embedder = Embedder::new(&model, &opts).map_err(bad_input)?;
    let mut data = Vec::with_capacity(texts.len());
    let mut prompt_tokens = 0usize;
    let mut text_out = String::new();
    let inputs: Vec<&[u8]> = texts.iter().map(|t| t.as_slice()).collect();
    let embeddings = embedder.embed_batch(&inputs).map_err(bad_input)?;
    for (i, e) in embeddings.into_iter().enumerate() {
        if e.truncated {
            eprintln!(
                "warning: input {i} is longer than {} tokens and was truncated",
                e.n_tokens
            );
        }
        prompt_tokens += e.n_tokens;
        if args.json {
            data.push(json!({"object": "embedding", "index": i, "embedding": e.vector}));
        } else {
            let line: Vec<String> = e.vector.iter().map(|v| format!("{v}")).collect();
            text_out.push_str(&line.join(" "));
            text_out.push('\n');
        }
    }
    if args.json {
        let name = crate::args::file_label(&args.model);
        let obj = json!({
            "object": "list",
            "model": name,
            "dim": model.config().n_embd,
            "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        });
        output::println(&obj.to_string())
    } else {
        output::print(&text_out)
    }
}
