//! The sampling options shared by `generate` and `chat` (llama.cpp's defaults).

use anyhow::Result;
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
}

impl SamplingArgs {
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
            constraint: None,
        })
    }
}
