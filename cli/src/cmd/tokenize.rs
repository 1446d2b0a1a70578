//! `tinyrt tokenize MODEL (-p TEXT | --file PATH) [--json]`: the token ids of a text.
//!
//! Tokenizes exactly as `generate` tokenizes a prompt: the model's BOS/EOS rule
//! (`tokenizer.ggml.add_bos_token` / `add_eos_token`) and special tokens written in the text
//! recognised. Works on vocabulary-only GGUF files. `--file` uses the file's bytes verbatim
//! (a trailing newline is part of the text).
//!
//! Output: one line of space-separated ids, or `{"ids": [...]}` with `--json`.

use std::path::PathBuf;

use anyhow::Result;

use crate::error::{as_bad_input, bad_input};
use crate::output;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "file"])))]
pub struct Args {
    /// The GGUF model (or vocabulary-only) file.
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(short = 'p', long = "prompt", value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Tokenize the bytes of this file, verbatim.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print `{"ids": [...]}` instead of a line of ids.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.as_bytes().to_vec(),
        (None, Some(path)) => tinyrt::files::read_input(path)
            .map_err(|e| bad_input(format!("cannot read the text: {e}")))?,
        (None, None) => return Err(bad_input("give the text with -p TEXT or --file PATH")),
    };
    if args.model.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    let tok = tinyrt::load_tokenizer(&args.model).map_err(|e| {
        as_bad_input(anyhow::Error::new(e).context(args.model.display().to_string()))
    })?;
    let ids = tok.encode(&text).map_err(as_bad_input)?;
    if args.json {
        output::println(&serde_json::json!({ "ids": ids }).to_string())
    } else {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        output::println(&line.join(" "))
    }
}
