//! Perplexity with llama.cpp's method (`tools/perplexity/perplexity.cpp`, `perplexity()`,
//! build 11434), so that `tinyrt perplexity` and `llama-perplexity` give comparable numbers:
//!
//! - the whole text is tokenized once, with the model's BOS/EOS rule and special tokens *not*
//!   parsed (`common_tokenize(ctx, text, add_special = true)`); `llama-perplexity -f` drops one
//!   trailing newline of the file first (the caller does that);
//! - the tokens are cut into `n_chunk = n_tokens / n_ctx` chunks of `n_ctx` tokens (the rest
//!   is dropped), each evaluated from an empty cache; when the vocabulary adds BOS, the first
//!   token of every chunk is replaced by BOS;
//! - in each chunk, the logits at positions `n_ctx/2 .. n_ctx-2` score the next token:
//!   `n_ctx - 1 - n_ctx/2` tokens per chunk; the negative log-likelihood uses a float
//!   max-subtracted softmax summed in f64, as llama.cpp does;
//! - `PPL = exp(mean nll)`, and its uncertainty `PPL * sqrt((mean nll² - mean²) / (count - 1))`.

/// Errors of [`perplexity`]; `E` is the error of the logits callback.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError<E: std::error::Error + 'static> {
    #[error("the context size must be at least 4, not {0}")]
    ContextTooSmall(usize),
    #[error("the text tokenizes to only {n_tokens} tokens; a context of {n_ctx} needs at least {needed}")]
    TooFewTokens {
        n_tokens: usize,
        n_ctx: usize,
        needed: usize,
    },
    #[error(
        "the model returned {got} logits for a chunk of {n_ctx} tokens (vocabulary {n_vocab})"
    )]
    BadLogits {
        got: usize,
        n_ctx: usize,
        n_vocab: usize,
    },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error(transparent)]
    Eval(E),
}

/// Options of [`perplexity`].
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// Score at most this many chunks (`--chunks`); `None` = all.
    pub max_chunks: Option<usize>,
    /// The BOS id when the vocabulary adds BOS (it then replaces each chunk's first token).
    pub bos: Option<u32>,
    pub n_vocab: usize,
}

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// llama.cpp's "+/-" value; `None` when the variance is not positive (llama.cpp prints an
    /// error instead of a number then).
    pub ppl_stderr: Option<f64>,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// The running perplexity after each chunk (llama.cpp's `[i]x.xxxx` progress values).
    pub running: Vec<f64>,
}

/// `-log p(tok)` from one row of logits, as llama.cpp's `log_softmax` computes it.
pub fn negative_log_likelihood(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    -(f64::from(logits[tok] - max) - sum_exp.ln())
}

/// Perplexity of `tokens` (see the module documentation). `eval` is called once per chunk
/// with the chunk's tokens, from an empty cache, and returns the logits of every position
/// (`n_ctx × n_vocab`, row-major). `progress` gets (chunk index, chunks, running perplexity)
/// after each chunk.
pub fn perplexity<E: std::error::Error + 'static>(
    tokens: &[u32],
    options: &PerplexityOptions,
    mut eval: impl FnMut(&[u32]) -> Result<Vec<f32>, E>,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<PerplexityResult, PerplexityError<E>> {
    let (n_ctx, n_vocab) = (options.n_ctx, options.n_vocab);
    if n_ctx < 4 {
        return Err(PerplexityError::ContextTooSmall(n_ctx));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooFewTokens {
            n_tokens: tokens.len(),
            n_ctx,
            needed: 2 * n_ctx,
        });
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
        return Err(PerplexityError::BadToken { id, n_vocab });
    }
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(max) = options.max_chunks {
        n_chunk = n_chunk.min(max.max(1));
    }
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    let mut chunk = vec![0u32; n_ctx];
    for i in 0..n_chunk {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(bos) = options.bos {
            chunk[0] = bos;
        }
        let logits = eval(&chunk).map_err(PerplexityError::Eval)?;
        if logits.len() != n_ctx * n_vocab {
            return Err(PerplexityError::BadLogits {
                got: logits.len(),
                n_ctx,
                n_vocab,
            });
        }
        // Position j predicts the original token j + 1 (BOS only ever replaces position 0).
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let v = negative_log_likelihood(row, tokens[i * n_ctx + j + 1] as usize);
            nll += v;
            nll2 += v * v;
        }
        count += n_ctx - 1 - first;
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        progress(i, n_chunk, ppl);
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_stderr = (var > 0.0 && count > 1).then(|| (var / (count - 1) as f64).sqrt() * ppl);
    Ok(PerplexityResult {
        ppl,
        ppl_stderr,
        chunks: n_chunk,
        tokens_scored: count,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    fn options(n_ctx: usize, n_vocab: usize, bos: Option<u32>) -> PerplexityOptions {
        PerplexityOptions {
            n_ctx,
            max_chunks: None,
            bos,
            n_vocab,
        }
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let tokens: Vec<u32> = (0..100).map(|i| i % 7).collect();
        let r = perplexity(
            &tokens,
            &options(16, 7, None),
            |c| Ok::<_, Never>(vec![0.5; c.len() * 7]),
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(r.chunks, 6);
        assert_eq!(r.tokens_scored, 6 * 7);
        assert!((r.ppl - 7.0).abs() < 1e-9);
        assert!(r.ppl_stderr.unwrap_or(0.0) < 1e-6);
    }

    /// A model that puts logit `a` on the true next token (known to the test) and 0 elsewhere:
    /// every scored token has nll = ln(e^a + V - 1) - a; first halves and BOS are not scored.
    #[test]
    fn scores_second_halves_with_bos_replacement() {
        let (n_ctx, v) = (8usize, 5usize);
        let tokens: Vec<u32> = (0..40u32).map(|i| (i * 3 + 1) % 5).collect();
        let mut calls = Vec::new();
        let a = 2.0f32;
        let r = perplexity(
            &tokens,
            &options(n_ctx, v, Some(4)),
            |c| {
                calls.push(c.to_vec());
                let start = calls.len() - 1;
                let mut logits = vec![0f32; n_ctx * v];
                for j in 0..n_ctx - 1 {
                    let next = tokens[start * n_ctx + j + 1] as usize;
                    logits[j * v + next] = a;
                }
                Ok::<_, Never>(logits)
            },
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(calls.len(), 5);
        assert!(calls.iter().all(|c| c[0] == 4));
        assert_eq!(calls[1][1..], tokens[9..16]);
        assert_eq!(r.tokens_scored, 5 * 3);
        let expect = ((a.exp() + (v - 1) as f32).ln() - a) as f64;
        assert!((r.ppl.ln() - expect).abs() < 1e-6);
    }

    #[test]
    fn rejects_short_texts_and_bad_logits() {
        let tokens = vec![1u32; 20];
        let opts = options(16, 4, None);
        let r = perplexity(&tokens, &opts, |_| Ok::<_, Never>(vec![]), |_, _, _| {});
        assert!(matches!(r, Err(PerplexityError::TooFewTokens { .. })));
        let tokens = vec![1u32; 40];
        let r = perplexity(
            &tokens,
            &opts,
            |_| Ok::<_, Never>(vec![0.0; 3]),
            |_, _, _| {},
        );
        assert!(matches!(r, Err(PerplexityError::BadLogits { .. })));
        let r = perplexity(&[9u32; 40], &opts, |_| Ok::<_, Never>(vec![]), |_, _, _| {});
        assert!(matches!(r, Err(PerplexityError::BadToken { id: 9, .. })));
    }
}
