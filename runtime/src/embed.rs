//! Sentence embeddings from encoders (BERT: all-MiniLM-L6-v2 and the like): tokenize with the
//! model's WordPiece rules (`[CLS] … [SEP]`), truncate to a maximum length the way Hugging Face
//! does (`[CLS]`, the first pieces, `[SEP]`), run the whole sequence through the encoder, pool
//! the token states (the model's `pooling_type`, or the caller's) and L2-normalise, as
//! sentence-transformers' `encode(normalize_embeddings=True)` does.

use crate::backend::PoolKind;
use crate::config::Pooling;
use crate::kv_cache::KvType;
use crate::model::Model;
use crate::session::{EncoderInput, Session, SessionError, SessionOptions};
use crate::tokenizer::TokenizerError;

/// Errors of embedding a text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("this model is a decoder and sets no pooling type: give one (--pooling last or mean) for its embeddings")]
    NotEncoder,
    #[error("the model sets no pooling type: give one (mean, cls or last)")]
    NoPooling,
    #[error("pooling {0} needs a classifier head, which this file does not have")]
    Unsupported(&'static str),
    #[error(
        "--max-length {max} must be at least 2 (and at most the model's {positions} positions)"
    )]
    MaxLength { max: usize, positions: usize },
    #[error("the batch size must be at least 1")]
    BatchSize,
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How the vector is normalised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Normalize {
    /// Unit Euclidean length (sentence-transformers' `normalize_embeddings=True`).
    #[default]
    L2,
    None,
}

/// Options of [`Embedder`].
#[derive(Clone, Debug, Default)]
pub struct EmbedOptions {
    /// `None`: the model's own pooling type.
    pub pooling: Option<Pooling>,
    pub normalize: Normalize,
    /// Longest token sequence, `[CLS]` and `[SEP]` included; longer texts are truncated.
    /// `None`: the model's position count.
    pub max_length: Option<usize>,
    /// Texts per forward pass (packed, each attending only itself); `None`: 32.
    pub batch_size: Option<usize>,
}

/// The longest text a decoder embeds by default (its cache holds this many positions).
const DECODER_MAX_LENGTH: usize = 4096;

/// Texts per forward pass by default.
pub const DEFAULT_BATCH: usize = 32;
/// Tokens per forward pass at most (more when one text needs more): bounds the activation
/// memory (about 27 KB a token for all-MiniLM-L6-v2) while keeping the products large.
const PASS_TOKENS: usize = 1024;

/// One text's embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens embedded (after truncation), special tokens included.
    pub n_tokens: usize,
    /// Whether the text was longer than the maximum length.
    pub truncated: bool,
}

/// Embeds texts with one session over an encoder.
pub struct Embedder {
    model: Model,
    session: Session,
    pooling: Pooling,
    normalize: Normalize,
    max_length: usize,
    batch_size: usize,
}

impl Embedder {
    pub fn new(model: &Model, opts: &EmbedOptions) -> Result<Embedder, EmbedError> {
        let arch = &model.inner.arch;
        let encoder = arch.is_encoder();
        // A decoder has embeddings only with a pooling the caller (or the file) chooses, as in
        // llama.cpp: its final hidden states after the output norm, pooled.
        let pooling = opts.pooling.or(model.config().pooling).ok_or(if encoder {
            EmbedError::NoPooling
        } else {
            EmbedError::NotEncoder
        })?;
        if pooling == Pooling::Rank {
            return Err(EmbedError::Unsupported("rank"));
        }
        let mut positions = arch.max_positions().min(model.config().n_ctx_train);
        if !encoder {
            positions = positions.min(DECODER_MAX_LENGTH);
        }
        let max_length = opts.max_length.unwrap_or(positions);
        if max_length < 2 || max_length > positions {
            return Err(EmbedError::MaxLength {
                max: max_length,
                positions,
            });
        }
        let batch_size = opts.batch_size.unwrap_or(DEFAULT_BATCH);
        if batch_size == 0 {
            return Err(EmbedError::BatchSize);
        }
        let session = if encoder {
            // An encoder session holds no cache; its context is the tokens of one pass.
            let pass = max_length.max(PASS_TOKENS.min(batch_size.saturating_mul(max_length)));
            Session::new(
                model,
                SessionOptions {
                    n_ctx: Some(pass),
                    kv_type: KvType::F32,
                    n_batch: pass,
                    batch_invariant: false,
                },
            )?
        } else {
            // One text at a time through the causal model, with llama.cpp's default cache.
            Session::new(
                model,
                SessionOptions {
                    n_ctx: Some(max_length),
                    ..SessionOptions::default()
                },
            )?
        };
        Ok(Embedder {
            model: model.clone(),
            session,
            pooling,
            normalize: opts.normalize,
            max_length,
            batch_size,
        })
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The token ids of `text` as they are embedded: the model's tokenization (`[CLS] … [SEP]`)
    /// truncated to the maximum length, keeping the last (`[SEP]`) token; and whether it was cut.
    pub fn tokens(&self, text: &[u8]) -> Result<(Vec<u32>, bool), EmbedError> {
        let mut ids = self.model.tokenizer().encode(text)?;
        let tok = self.model.tokenizer();
        let truncated = ids.len() > self.max_length;
        if truncated {
            let last = *ids.last().expect("longer than the maximum, so not empty");
            ids.truncate(self.max_length - 1);
            if tok.add_eos() && Some(last) == tok.eos() {
                ids.push(last);
            } else {
                ids.truncate(self.max_length);
            }
        }
        Ok((ids, truncated))
    }

    /// The embedding of one text.
    pub fn embed(&mut self, text: &[u8]) -> Result<Embedding, EmbedError> {
        let mut v = self.embed_batch(&[text])?;
        Ok(v.pop().expect("one embedding per text"))
    }

    /// The embeddings of `texts`, in order: packed into forward passes of up to the batch
    /// size (and the pass's token budget); the results do not depend on the packing.
    pub fn embed_batch(&mut self, texts: &[&[u8]]) -> Result<Vec<Embedding>, EmbedError> {
        let tokenized = texts
            .iter()
            .map(|t| self.tokens(t))
            .collect::<Result<Vec<_>, _>>()?;
        let budget = self.session.max_batch();
        let dim = self.model.config().n_embd;
        let kind = match self.pooling {
            Pooling::Mean => PoolKind::Mean,
            Pooling::Cls => PoolKind::First,
            Pooling::Last => PoolKind::Last,
            Pooling::Rank => unreachable!("refused in Embedder::new"),
        };
        let mut out = Vec::with_capacity(texts.len());
        if !self.model.is_encoder() {
            for (ids, truncated) in &tokenized {
                let states = self.session.hidden_states(ids)?;
                let mut row = vec![0.0f32; dim];
                kind.reduce(&states, &mut row);
                out.push(Embedding {
                    vector: self.finish(&row),
                    n_tokens: ids.len(),
                    truncated: *truncated,
                });
            }
            return Ok(out);
        }
        let lens: Vec<usize> = tokenized.iter().map(|(ids, _)| ids.len()).collect();
        for pass in passes(&lens, self.batch_size, budget) {
            let (start, end) = (pass.start, pass.end);
            let seqs: Vec<EncoderInput> = tokenized[start..end]
                .iter()
                .map(|(ids, _)| EncoderInput {
                    tokens: ids,
                    types: &[],
                })
                .collect();
            let pooled = self.session.encode_packed(&seqs, Some(kind))?;
            for (row, (ids, truncated)) in pooled.chunks_exact(dim).zip(&tokenized[start..end]) {
                out.push(Embedding {
                    vector: self.finish(row),
                    n_tokens: ids.len(),
                    truncated: *truncated,
                });
            }
        }
        Ok(out)
    }

    /// A pooled row, normalised as asked.
    fn finish(&self, row: &[f32]) -> Vec<f32> {
        match self.normalize {
            Normalize::None => row.to_vec(),
            Normalize::L2 => {
                // torch.nn.functional.normalize: x / max(|x|, 1e-12), the norm in f64.
                let norm = row
                    .iter()
                    .map(|&a| (a as f64) * (a as f64))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                row.iter().map(|&a| (a as f64 / norm) as f32).collect()
            }
        }
    }
}

/// The forward passes of a packed batch: consecutive inputs of `lens` tokens, at most `batch`
/// of them and `budget` tokens a pass (an input alone may take a pass of its own).
fn passes(lens: &[usize], batch: usize, budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let (mut end, mut tokens) = (start, 0);
        while end < lens.len()
            && end - start < batch
            && (end == start || tokens + lens[end] <= budget)
        {
            tokens += lens[end];
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

impl Model {
    /// Whether the model is an encoder (embeddings, no generation).
    pub fn is_encoder(&self) -> bool {
        self.inner.arch.is_encoder()
    }

    /// The embeddings of `texts` with the model's pooling and L2 normalisation (see
    /// [`Embedder`] for other options).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut e = Embedder::new(self, &EmbedOptions::default())?;
        let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        Ok(e.embed_batch(&texts)?
            .into_iter()
            .map(|x| x.vector)
            .collect())
    }

    /// The classification of each of `texts` by the model's head (see [`Classifier`] for
    /// pairs and a maximum length).
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifyError> {
        let mut c = Classifier::new(self, None)?;
        let inputs: Vec<(&[u8], Option<&[u8]>)> =
            texts.iter().map(|t| (t.as_bytes(), None)).collect();
        c.classify_batch(&inputs)
    }
}

/// One input's classification.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    pub logits: Vec<f32>,
    /// Softmax of the logits.
    pub scores: Vec<f32>,
    /// The label of the largest logit, when the file names its labels.
    pub label: Option<String>,
    pub n_tokens: usize,
    pub truncated: bool,
}

/// Errors of classifying.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("this model has no classification head (cls.output)")]
    NoHead,
    #[error("{0}")]
    IncompleteHead(String),
    /// Even the pair's special tokens (`tokens` of them) do not fit in the maximum length.
    #[error("a pair needs at least {tokens} tokens, more than the maximum length {max}")]
    PairTooLong { tokens: usize, max: usize },
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// Classifies texts (or text pairs, cross-encoder style) with an encoder's head on `[CLS]`.
pub struct Classifier {
    inner: Embedder,
}

impl Classifier {
    pub fn new(model: &Model, max_length: Option<usize>) -> Result<Classifier, ClassifyError> {
        match model.inner.arch.classifier() {
            None => return Err(ClassifyError::NoHead),
            Some(Err(why)) => return Err(ClassifyError::IncompleteHead(why.to_string())),
            Some(Ok(_)) => {}
        }
        let opts = EmbedOptions {
            pooling: Some(Pooling::Cls),
            normalize: Normalize::None,
            max_length,
            batch_size: None,
        };
        Ok(Classifier {
            inner: Embedder::new(model, &opts)?,
        })
    }

    /// The head's labels (empty when the file has none).
    pub fn labels(&self) -> Vec<String> {
        match self.inner.model.inner.arch.classifier() {
            Some(Ok(h)) => h.labels.clone(),
            _ => Vec::new(),
        }
    }

    /// The logits of `text`, or of the pair `[CLS] text [SEP] pair [SEP]` (token type 1 for
    /// the second part where the model has token types; llama.cpp gives every token type 0).
    pub fn classify(
        &mut self,
        text: &[u8],
        pair: Option<&[u8]>,
    ) -> Result<Classification, ClassifyError> {
        let mut v = self.classify_batch(&[(text, pair)])?;
        Ok(v.pop().expect("one result per input"))
    }

    /// [`Classifier::classify`] of many inputs, packed into forward passes (the results do
    /// not depend on the packing).
    pub fn classify_batch(
        &mut self,
        inputs: &[(&[u8], Option<&[u8]>)],
    ) -> Result<Vec<Classification>, ClassifyError> {
        let prepared = inputs
            .iter()
            .map(|&(text, pair)| self.prepare(text, pair))
            .collect::<Result<Vec<_>, _>>()?;
        let e = &mut self.inner;
        let dim = e.model.config().n_embd;
        let head = match e.model.inner.arch.classifier() {
            Some(Ok(h)) => h.clone(),
            _ => unreachable!("checked in Classifier::new"),
        };
        let budget = e.session.max_batch();
        let mut out = Vec::with_capacity(inputs.len());
        let lens: Vec<usize> = prepared.iter().map(|(ids, ..)| ids.len()).collect();
        for pass in passes(&lens, e.batch_size, budget) {
            let (start, end) = (pass.start, pass.end);
            let seqs: Vec<EncoderInput> = prepared[start..end]
                .iter()
                .map(|(ids, types, _)| EncoderInput { tokens: ids, types })
                .collect();
            let cls = e
                .session
                .encode_packed(&seqs, Some(PoolKind::First))
                .map_err(EmbedError::from)?;
            for (row, (ids, _, truncated)) in cls.chunks_exact(dim).zip(&prepared[start..end]) {
                let logits = head.logits(row);
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
                let sum: f64 = exps.iter().sum();
                let scores = exps.iter().map(|&x| (x / sum) as f32).collect();
                let best = crate::sampler::argmax(&logits) as usize;
                out.push(Classification {
                    label: head.labels.get(best).cloned(),
                    logits,
                    scores,
                    n_tokens: ids.len(),
                    truncated: *truncated,
                });
            }
        }
        Ok(out)
    }

    /// The token ids and types of one input, and whether it was cut.
    fn prepare(
        &self,
        text: &[u8],
        pair: Option<&[u8]>,
    ) -> Result<(Vec<u32>, Vec<u32>, bool), ClassifyError> {
        let e = &self.inner;
        Ok(match pair {
            None => {
                let (ids, truncated) = e.tokens(text)?;
                (ids, Vec::new(), truncated)
            }
            Some(second) => {
                let tok = e.model.tokenizer();
                let (cls, mut a, sep) =
                    split_specials(tok, tok.encode(text).map_err(EmbedError::from)?);
                let (_, mut b, sep_b) =
                    split_specials(tok, tok.encode(second).map_err(EmbedError::from)?);
                let specials = usize::from(cls.is_some())
                    + usize::from(sep.is_some())
                    + usize::from(sep_b.is_some());
                let Some(budget) = e.max_length.checked_sub(specials) else {
                    return Err(ClassifyError::PairTooLong {
                        tokens: specials,
                        max: e.max_length,
                    });
                };
                let (na, nb) = longest_first(a.len(), b.len(), budget);
                let truncated = (na, nb) != (a.len(), b.len());
                a.truncate(na);
                b.truncate(nb);
                let mut ids: Vec<u32> = cls.into_iter().collect();
                ids.extend_from_slice(&a);
                ids.extend(sep);
                let first = ids.len();
                ids.extend_from_slice(&b);
                ids.extend(sep_b);
                let types = if e.model.inner.arch.n_token_types() >= 2 {
                    (0..ids.len()).map(|i| u32::from(i >= first)).collect()
                } else {
                    Vec::new()
                };
                (ids, types, truncated)
            }
        })
    }
}

/// `ids` (one text's tokenization) split into the model's leading special token (`[CLS]`),
/// the text's own tokens and the trailing one (`[SEP]`).
fn split_specials(
    tok: &crate::tokenizer::Tokenizer,
    mut ids: Vec<u32>,
) -> (Option<u32>, Vec<u32>, Option<u32>) {
    let first = (tok.add_bos() && !ids.is_empty() && ids.first().copied() == tok.bos())
        .then(|| ids.remove(0));
    let last = (tok.add_eos() && !ids.is_empty() && ids.last().copied() == tok.eos())
        .then(|| ids.pop())
        .flatten();
    (first, ids, last)
}

/// The lengths two texts of `a` and `b` tokens are cut to so that they fit in `budget`, as
/// Hugging Face's tokenizers do with `truncation=True` (`TruncationStrategy::LongestFirst` in
/// the `tokenizers` crate's `truncate_encodings`): the longer text loses tokens until both are
/// equally long, then both lose in turn; when both are cut, the longer (the second on a tie)
/// keeps the odd token.
fn longest_first(a: usize, b: usize, budget: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    let short = a.min(b);
    let (short, long) = if short >= budget / 2 {
        (budget / 2, budget - budget / 2)
    } else {
        (short, budget - short)
    };
    if a > b {
        (long, short)
    } else {
        (short, long)
    }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    #[test]
    fn longest_first_cuts_the_longer_text_first() {
        // Fits: untouched.
        assert_eq!(longest_first(3, 4, 7), (3, 4));
        // Only the longer one is cut: 3 + 10 into 8 leaves 3 + 5.
        assert_eq!(longest_first(3, 10, 8), (3, 5));
        assert_eq!(longest_first(10, 3, 8), (5, 3));
        // Both cut: 6 + 5 into 9 → half each, the odd token to the longer text: 5 + 4.
        assert_eq!(longest_first(6, 5, 9), (5, 4));
        // A tie: the second text keeps the odd token.
        assert_eq!(longest_first(5, 5, 9), (4, 5));
        assert_eq!(longest_first(20, 30, 10), (5, 5));
        // Nothing fits but the special tokens.
        assert_eq!(longest_first(4, 2, 0), (0, 0));
    }
}
