//! `tinyrt rerank MODEL -q QUERY -f DOCS [--json] [--top N] [--max-length N]`: scores every
//! document (one per line of DOCS) against the query with a cross-encoder, in the pair form
//! `[CLS] query [SEP] document [SEP]` (a pair longer than the maximum length is cut as Hugging
//! Face's `truncation=True` cuts it), and prints them best first. `--json` prints the shape of
//! the Cohere / Jina rerank APIs: `{"model", "query", "results": [{"index", "relevance_score",
//! "document"}], "usage": {"prompt_tokens"}}`; without it, one line per document:
//! `rank<TAB>score<TAB>index<TAB>document`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use tinyrt::embed::{Classification, Classifier};

use crate::args::LoadArgs;
use crate::error::bad_input;
use crate::output;

#[derive(clap::Args)]
#[command(after_help = "\
Score: for a head with one output (sentence-transformers' CrossEncoder convention, e.g. the \
ms-marco cross-encoders) the raw logit, unbounded, higher is more relevant; for a head with \
several labels the softmax probability of the label named \"relevant\" or \"entailment\" \
(case-insensitive) if the file names one, otherwise of the last label.")]
pub struct Args {
    /// The GGUF model file (a cross-encoder: an encoder with a classification head).
    pub model: PathBuf,
    /// The query every document is scored against.
    #[arg(short = 'q', long)]
    pub query: String,
    /// A file of documents, one per line.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Print only the N best documents.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Longest token sequence of a pair, special tokens included (default: the model's
    /// positions).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Print one JSON object (the Cohere / Jina rerank shape).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Which output of the head is the relevance score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Score {
    /// The only logit, raw.
    Logit,
    /// The softmax probability of this label.
    Label(usize),
}

impl Score {
    fn choose(n_outputs: usize, labels: &[String]) -> Score {
        if n_outputs == 1 {
            return Score::Logit;
        }
        let named = labels.iter().position(|l| {
            let l = l.to_ascii_lowercase();
            l == "relevant" || l == "entailment"
        });
        Score::Label(named.unwrap_or(n_outputs - 1))
    }

    fn of(self, c: &Classification) -> f32 {
        match self {
            Score::Logit => c.logits[0],
            Score::Label(i) => c.scores[i],
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.query.trim().is_empty() {
        return Err(bad_input("the query (-q) is empty"));
    }
    if args.top == Some(0) {
        return Err(bad_input("--top must be at least 1"));
    }
    let load = args.load.options()?;
    let docs = crate::args::read_texts(None, Some(&args.file))?;
    // `read_texts` reads an empty file as one empty line.
    if docs.iter().all(|d| d.is_empty()) {
        return Err(bad_input(format!(
            "{}: no documents (one per line, not all empty)",
            args.file.display()
        )));
    }
    let model = crate::args::load_model(&args.model, load)?;
    if !model.is_encoder() {
        return Err(bad_input(format!(
            "{}: not an encoder; rerank needs a cross-encoder (an encoder with a classification head)",
            args.model.display()
        )));
    }
    let mut classifier = Classifier::new(&model, args.max_length).map_err(bad_input)?;
    let labels = classifier.labels();
    let mut score = None;
    let mut results = Vec::with_capacity(docs.len());
    let mut prompt_tokens = 0usize;
    let pairs: Vec<(&[u8], Option<&[u8]>)> = docs
        .iter()
        .map(|d| (args.query.as_bytes(), Some(d.as_slice())))
        .collect();
    let classified = classifier.classify_batch(&pairs).map_err(bad_input)?;
    for (i, c) in classified.into_iter().enumerate() {
        if c.truncated {
            eprintln!(
                "warning: the pair of document {i} was truncated to {} tokens",
                c.n_tokens
            );
        }
        prompt_tokens += c.n_tokens;
        let s = *score.get_or_insert_with(|| Score::choose(c.logits.len(), &labels));
        results.push((i, s.of(&c)));
    }
    sort_best_first(&mut results);
    results.truncate(args.top.unwrap_or(usize::MAX));
    if args.json {
        let name = crate::args::file_label(&args.model);
        let results: Vec<_> = results
            .iter()
            .map(|&(i, s)| {
                json!({
                    "index": i,
                    "relevance_score": s,
                    "document": String::from_utf8_lossy(&docs[i]),
                })
            })
            .collect();
        let obj = json!({
            "model": name,
            "query": args.query,
            "results": results,
            "usage": {"prompt_tokens": prompt_tokens},
        });
        output::println(&obj.to_string())
    } else {
        let mut out = String::new();
        for (rank, &(i, s)) in results.iter().enumerate() {
            let doc = output::escape_controls(&String::from_utf8_lossy(&docs[i]));
            out.push_str(&format!("{}\t{s}\t{i}\t{doc}\n", rank + 1));
        }
        output::print(&out)
    }
}

/// Highest score first; equal scores keep the file's order; a NaN score (a broken model) last.
fn sort_best_first(results: &mut [(usize, f32)]) {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    results.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_the_logit_or_a_named_or_the_last_label() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Score::choose(1, &[]), Score::Logit);
        assert_eq!(Score::choose(2, &[]), Score::Label(1));
        assert_eq!(
            Score::choose(3, &names(&["negative", "neutral", "positive"])),
            Score::Label(2)
        );
        assert_eq!(
            Score::choose(3, &names(&["contradiction", "Entailment", "neutral"])),
            Score::Label(1)
        );
        assert_eq!(
            Score::choose(2, &names(&["relevant", "irrelevant"])),
            Score::Label(0)
        );
    }

    #[test]
    fn results_sort_best_first_with_ties_in_file_order_and_nan_last() {
        let mut r = vec![(0, 0.5), (1, f32::NAN), (2, 2.0), (3, 0.5), (4, -1.0)];
        sort_best_first(&mut r);
        let order: Vec<usize> = r.iter().map(|&(i, _)| i).collect();
        assert_eq!(order, [2, 0, 3, 4, 1]);
    }
}
