//! `tinyrt bench` on an encoder (or with `--embed`): the embeddings test. Embeds a set of
//! texts (`--texts FILE`, one per line, or a built-in mix of short and long sentences) at each
//! batch size of `--embed-batches` (texts per forward pass; default 1 and 32), one untimed
//! warm-up pass over the set, then `-r` timed passes; reports sentences/s and tokens/s (median,
//! min, max over the passes). The tokens are the embedded ones, `[CLS]`/`[SEP]` included.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tinyrt::embed::{EmbedOptions, Embedder};
use tinyrt::Model;

use crate::error::bad_input;
use crate::measure::{peak_rss_bytes, Speed};
use crate::output;

/// The built-in texts: the kinds an embedding index sees (titles, questions, sentences, a
/// paragraph), 4 to ~120 tokens.
const TEXTS: &[&str] = &[
    "How do I reset my password?",
    "Quarterly revenue grew 12% year over year, driven by cloud services.",
    "The quick brown fox jumps over the lazy dog.",
    "Best hiking trails near Zurich",
    "A transformer encoder maps a sequence of tokens to contextual vectors; mean pooling of \
     those vectors gives a sentence embedding that can be compared with cosine similarity.",
    "Error: connection refused (ECONNREFUSED) when calling the payments API from the worker.",
    "Paris is the capital and most populous city of France.",
    "What is the difference between a list and a tuple in Python?",
    "The museum's collection spans five centuries of European painting, from early Renaissance \
     altarpieces to the Impressionists, and includes a small but important group of drawings \
     that were acquired in the nineteenth century from a private collector in Vienna, whose \
     heirs had kept them out of public view for decades.",
    "Return policy: items can be returned within 30 days with the receipt.",
    "ok",
    "Install the package with pip, then import it and call encode() on a list of strings.",
];

pub struct EmbedBench<'a> {
    pub model: &'a Model,
    pub name: &'a str,
    pub texts: Option<Vec<Vec<u8>>>,
    pub batches: &'a [usize],
    pub reps: usize,
    pub json: bool,
}

pub fn run(b: EmbedBench<'_>) -> Result<()> {
    let texts: Vec<Vec<u8>> = match b.texts {
        Some(t) if t.is_empty() => return Err(bad_input("the texts file holds no text")),
        Some(t) => t,
        None => TEXTS.iter().map(|t| t.as_bytes().to_vec()).collect(),
    };
    let inputs: Vec<&[u8]> = texts.iter().map(|t| t.as_slice()).collect();
    if b.batches.contains(&0) {
        return Err(bad_input(
            "--embed-batches: a batch size must be at least 1",
        ));
    }
    let mut results = Vec::new();
    for &batch in b.batches {
        let opts = EmbedOptions {
            batch_size: Some(batch),
            ..EmbedOptions::default()
        };
        let mut e = Embedder::new(b.model, &opts).map_err(bad_input)?;
        let warm = e.embed_batch(&inputs).map_err(bad_input)?;
        let tokens: usize = warm.iter().map(|x| x.n_tokens).sum();
        let (mut sent, mut tok) = (Vec::new(), Vec::new());
        for _ in 0..b.reps {
            let t0 = Instant::now();
            let out = e.embed_batch(&inputs).map_err(bad_input)?;
            let s = t0.elapsed().as_secs_f64();
            std::hint::black_box(out);
            sent.push(inputs.len() as f64 / s);
            tok.push(tokens as f64 / s);
        }
        results.push((
            batch,
            Speed { tokens, runs: sent },
            Speed { tokens, runs: tok },
        ));
    }
    let rss = peak_rss_bytes();
    if b.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(batch, s, t)| {
                json!({
                    "batch": batch,
                    "texts": inputs.len(),
                    "tokens": s.tokens,
                    "sentences_per_s": {"median": s.median(), "min": s.min(), "max": s.max()},
                    "tokens_per_s": {"median": t.median(), "min": t.min(), "max": t.max()},
                })
            })
            .collect();
        let obj = json!({
            "model": b.name,
            "threads": b.model.threads(),
            "embed": rows,
            "rss_bytes": rss,
        });
        return output::println(&obj.to_string());
    }
    let mut text = String::new();
    text.push_str(
        "| model | threads | batch | texts | tokens | sentences/s (median) | min | max | tokens/s (median) |\n",
    );
    text.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (batch, s, t) in &results {
        text.push_str(&format!(
            "| {} | {} | {batch} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
            b.name,
            b.model.threads(),
            inputs.len(),
            s.tokens,
            s.median(),
            s.min(),
            s.max(),
            t.median()
        ));
    }
    if let Some(rss) = rss {
        text.push_str(&format!(
            "\npeak RSS {:.1} MiB\n",
            rss as f64 / (1024.0 * 1024.0)
        ));
    }
    output::print(&text)
}
