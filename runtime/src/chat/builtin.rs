//! Built-in chat formats, for files without a `tokenizer.chat_template` (Gemma-3's GGUF has
//! none) or whose template fails, and for `--chat-template NAME`.
//!
//! Each is a Jinja template (in `templates/`) written to render exactly what the canonical
//! Hugging Face template of that model family renders, so one engine renders them all:
//! - `chatml`: the ChatML format (`<|im_start|>role\n...<|im_end|>\n`), as in SmolLM2 and
//!   Qwen3 without a default system prompt;
//! - `qwen`: Qwen2-Instruct's template: ChatML with the default system prompt
//!   "You are a helpful assistant." when the conversation has none;
//! - `llama2`: Llama-2-chat (`<s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>`);
//! - `llama3`: Llama-3-Instruct (`<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`);
//! - `gemma`: Gemma-3-it (`<start_of_turn>user\n...<end_of_turn>\n`, the system message
//!   prefixed to the first user turn, the assistant role named `model`);
//! - `phi3`: Phi-3/3.5-mini-instruct (`<|user|>\n...<|end|>\n`);
//! - `phi2`: Phi-2 has no chat template; this is the QA format of its model card
//!   (`Instruct: ...\nOutput: ...`).

/// A built-in chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinTemplate {
    Chatml,
    Qwen,
    Llama2,
    Llama3,
    Gemma,
    Phi3,
    Phi2,
}

impl BuiltinTemplate {
    pub const ALL: [BuiltinTemplate; 7] = [
        BuiltinTemplate::Chatml,
        BuiltinTemplate::Qwen,
        BuiltinTemplate::Llama2,
        BuiltinTemplate::Llama3,
        BuiltinTemplate::Gemma,
        BuiltinTemplate::Phi3,
        BuiltinTemplate::Phi2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinTemplate::Chatml => "chatml",
            BuiltinTemplate::Qwen => "qwen",
            BuiltinTemplate::Llama2 => "llama2",
            BuiltinTemplate::Llama3 => "llama3",
            BuiltinTemplate::Gemma => "gemma",
            BuiltinTemplate::Phi3 => "phi3",
            BuiltinTemplate::Phi2 => "phi2",
        }
    }

    /// The Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            BuiltinTemplate::Chatml => include_str!("templates/chatml.jinja"),
            BuiltinTemplate::Qwen => include_str!("templates/qwen.jinja"),
            BuiltinTemplate::Llama2 => include_str!("templates/llama2.jinja"),
            BuiltinTemplate::Llama3 => include_str!("templates/llama3.jinja"),
            BuiltinTemplate::Gemma => include_str!("templates/gemma.jinja"),
            BuiltinTemplate::Phi3 => include_str!("templates/phi3.jinja"),
            BuiltinTemplate::Phi2 => include_str!("templates/phi2.jinja"),
        }
    }

    /// The format named `name` (case-insensitive; `gemma3` = `gemma`, `qwen2` = `qwen`, ...).
    pub fn from_name(name: &str) -> Option<BuiltinTemplate> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "chatml" | "smollm" | "qwen3" => BuiltinTemplate::Chatml,
            "qwen" | "qwen2" => BuiltinTemplate::Qwen,
            "llama2" | "llama-2" => BuiltinTemplate::Llama2,
            "llama3" | "llama-3" => BuiltinTemplate::Llama3,
            "gemma" | "gemma2" | "gemma3" => BuiltinTemplate::Gemma,
            "phi3" | "phi-3" => BuiltinTemplate::Phi3,
            "phi2" | "phi-2" => BuiltinTemplate::Phi2,
            _ => return None,
        })
    }

    /// The names `from_name` accepts first, for messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The format of a model family: from `general.architecture`, refined by the special
    /// tokens of the vocabulary (`has_token(text)`) for architectures shared by several
    /// families (`llama` covers Llama-2, Llama-3 and ChatML models such as SmolLM2). Returns the
    /// format and why it was chosen.
    pub fn for_model(
        architecture: &str,
        has_token: &dyn Fn(&str) -> bool,
    ) -> (BuiltinTemplate, String) {
        let arch = architecture.to_ascii_lowercase();
        let by_arch = |b: BuiltinTemplate| (b, format!("architecture {architecture}"));
        match arch.as_str() {
            "gemma" | "gemma2" | "gemma3" | "gemma3n" => return by_arch(BuiltinTemplate::Gemma),
            "phi2" => return by_arch(BuiltinTemplate::Phi2),
            "phi3" => return by_arch(BuiltinTemplate::Phi3),
            "qwen" | "qwen2" | "qwen2moe" => return by_arch(BuiltinTemplate::Qwen),
            "qwen3" | "qwen3moe" => return by_arch(BuiltinTemplate::Chatml),
            _ => {}
        }
        if has_token("<|start_header_id|>") && has_token("<|eot_id|>") {
            return (
                BuiltinTemplate::Llama3,
                format!("architecture {architecture}, vocabulary has <|start_header_id|>"),
            );
        }
        if has_token("<|im_start|>") {
            return (
                BuiltinTemplate::Chatml,
                format!("architecture {architecture}, vocabulary has <|im_start|>"),
            );
        }
        if arch == "llama" {
            return (
                BuiltinTemplate::Llama2,
                format!("architecture {architecture}, no ChatML or Llama-3 tokens"),
            );
        }
        (
            BuiltinTemplate::Chatml,
            format!(
                "architecture {architecture} has no known format; ChatML is the common default"
            ),
        )
    }
}

impl std::fmt::Display for BuiltinTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
