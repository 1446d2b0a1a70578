//! The sampling options shared by `generate` and `chat` (llama.cpp's defaults).

use std::path::PathBuf;

use anyhow::Result;
use tinyrt::constraint::ConstraintSpec;
use tinyrt::SamplerOptions;

use crate::error::bad_input;

#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over (0 = off, -1 = the context).
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub repeat_last_n: i32,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Constrain the output to JSON valid under this JSON schema (a file, or the schema itself
    /// when it starts with `{`).
    #[arg(long, value_name = "FILE_OR_JSON", conflicts_with_all = ["grammar", "regex"])]
    pub json_schema: Option<String>,
    /// Constrain the output to a grammar file: GBNF as llama.cpp reads it, or llguidance's
    /// Lark dialect when the name ends in `.lark`.
    #[arg(long, value_name = "FILE", conflicts_with = "regex")]
    pub grammar: Option<PathBuf>,
    /// Constrain the output to match this regular expression (Rust regex syntax, whole output).
    #[arg(long, value_name = "R")]
    pub regex: Option<String>,
}

/// A constraint file's text (bounded like every input), or a one-line error.
fn read_text(path: &std::path::Path, what: &str) -> Result<String> {
    let bytes = tinyrt::files::read_input(path)
        .map_err(|e| bad_input(format!("cannot read the {what}: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| bad_input(format!("the {what} {} is not UTF-8", path.display())))
}

impl SamplingArgs {
    /// The constraint of `--json-schema`, `--grammar` or `--regex`, checked for syntax (it is
    /// compiled against the model's vocabulary when generation starts).
    pub fn constraint(&self) -> Result<Option<ConstraintSpec>> {
        if let Some(s) = &self.json_schema {
            let text = if s.trim_start().starts_with('{') {
                s.clone()
            } else {
                if s.is_empty() {
                    return Err(bad_input("--json-schema needs a file or a JSON schema"));
                }
                read_text(std::path::Path::new(s), "JSON schema")?
            };
            let spec = ConstraintSpec::json_schema_str(&text)
                .map_err(|e| bad_input(format!("--json-schema: {e}")))?;
            return Ok(Some(spec));
        }
        if let Some(path) = &self.grammar {
            let text = read_text(path, "grammar")?;
            let lark = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("lark"));
            return Ok(Some(if lark {
                ConstraintSpec::Lark(text)
            } else {
                ConstraintSpec::Gbnf(text)
            }));
        }
        if let Some(r) = &self.regex {
            if r.is_empty() {
                return Err(bad_input("--regex needs a regular expression"));
            }
            return Ok(Some(ConstraintSpec::Regex(r.clone())));
        }
        Ok(None)
    }

    /// The sampler options, after checking the values a user can get wrong (exit 2).
    pub fn options(&self) -> Result<SamplerOptions> {
        for (name, v) in [
            ("--temp", self.temp),
            ("--top-p", self.top_p),
            ("--min-p", self.min_p),
            ("--repeat-penalty", self.repeat_penalty),
        ] {
            if !v.is_finite() {
                return Err(bad_input(format!("{name} must be a finite number")));
            }
        }
        if self.temp < 0.0 {
            return Err(bad_input("--temp must be 0 (greedy) or more"));
        }
        if self.top_k < 0 {
            return Err(bad_input("--top-k must be 0 (off) or more"));
        }
        for (name, v) in [("--top-p", self.top_p), ("--min-p", self.min_p)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad_input(format!(
                    "{name} must be between 0 and 1, not {v}"
                )));
            }
        }
        if self.repeat_penalty <= 0.0 {
            return Err(bad_input("--repeat-penalty must be positive"));
        }
        if self.repeat_last_n < -1 {
            return Err(bad_input(
                "--repeat-last-n must be -1 (the context), 0 (off) or a positive count",
            ));
        }
        Ok(SamplerOptions {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            constraint: self.constraint()?,
        })
    }
}
