//! `tinyrt classify MODEL (-p TEXT | -f FILE) [--pair TEXT] [--json] [--max-length N]`: an
//! encoder's sequence-classification logits (and, when the file names its labels, the label and
//! softmax scores) per input; `-f` reads one text per line; `--pair` classifies the pair
//! `[CLS] TEXT [SEP] PAIR [SEP]` (cross-encoders). `--json`: `{"model", "labels", "data":
//! [{"index", "logits", "scores", "label"}]}`. A file that lacks part of its head (a BERT
//! classifier converted without its pooler) is refused, exit 2.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tinyrt::embed::Classifier;

use crate::args::LoadArgs;
use crate::error::bad_input;
use crate::output;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "file"])))]
pub struct Args {
    /// The GGUF model file (an encoder with a classification head).
    pub model: PathBuf,
    /// One text to classify.
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// A file of texts, one per line.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// The second text of a pair (with -p).
    #[arg(long, requires = "prompt")]
    pub pair: Option<String>,
    /// Longest token sequence (default: the model's positions).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn run(args: Args) -> Result<()> {
    let load = args.load.options()?;
    let texts = crate::args::read_texts(args.prompt.as_deref(), args.file.as_deref())?;
    let model = crate::args::load_model(&args.model, load)?;
    let mut classifier = Classifier::new(&model, args.max_length).map_err(bad_input)?;
    let labels = classifier.labels();
    let mut data = Vec::with_capacity(texts.len());
    let mut text_out = String::new();
    let pair = args.pair.as_deref().map(str::as_bytes);
    let inputs: Vec<(&[u8], Option<&[u8]>)> = texts.iter().map(|t| (t.as_slice(), pair)).collect();
    let classified = classifier.classify_batch(&inputs).map_err(bad_input)?;
    for (i, c) in classified.into_iter().enumerate() {
        if c.truncated {
            eprintln!("warning: input {i} was truncated to {} tokens", c.n_tokens);
        }
        let logits: Vec<String> = c.logits.iter().map(|v| format!("{v}")).collect();
        match &c.label {
            Some(l) => text_out.push_str(&format!("{l}\t{}\n", logits.join(" "))),
            None => text_out.push_str(&format!("{}\n", logits.join(" "))),
        }
        data.push(json!({"index": i, "logits": c.logits, "scores": c.scores, "label": c.label}));
    }
    if args.json {
        let name = crate::args::file_label(&args.model);
        output::println(&json!({"model": name, "labels": labels, "data": data}).to_string())
    } else {
        output::print(&text_out)
    }
}
