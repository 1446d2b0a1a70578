//! Chat: templates rendered like Python's jinja2 renders them (fixtures made by
//! `scripts/gen-chat-fixtures.py`), stop strings across token boundaries, UTF-8-safe streaming.

use std::path::PathBuf;

use serde_json::Value as Json;
use tinyrt::chat::{
    BuiltinTemplate, ChatFormat, ChatTemplate, Message, StopMatcher, TemplateError,
};
use tinyrt_tests::workspace_root;

// ---------------------------------------------------------------------------------------
// Templates vs jinja2

fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/golden/chat-templates")
}

fn load_cases() -> (i64, Vec<Json>) {
    let path = fixtures_dir().join("cases.json");
    let text = std::fs::read_to_string(&path).expect("cases.json is readable");
    let doc: Json = serde_json::from_str(&text).expect("cases.json is JSON");
    let now = doc["strftime_now_unix"]
        .as_i64()
        .expect("strftime_now_unix");
    let cases = doc["cases"].as_array().expect("cases").clone();
    (now, cases)
}

fn template_source(id: &str) -> String {
    if let Some(name) = id.strip_prefix("builtin/") {
        BuiltinTemplate::from_name(name)
            .unwrap_or_else(|| panic!("unknown builtin {name}"))
            .source()
            .to_string()
    } else if let Some(name) = id.strip_prefix("file/") {
        let p = fixtures_dir()
            .join("templates")
            .join(format!("{name}.jinja"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    } else {
        panic!("bad template id {id}")
    }
}

fn messages(case: &Json) -> Vec<Message> {
    serde_json::from_value(case["messages"].clone()).expect("messages")
}

#[test]
fn templates_render_like_jinja2() {
    let (now, cases) = load_cases();
    assert!(
        cases.len() >= 40,
        "expected many cases, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["template"].as_str().unwrap();
        let conv = case["conversation"].as_str().unwrap();
        let mut t = ChatTemplate::new(
            &template_source(id),
            case["bos_token"].as_str().unwrap(),
            case["eos_token"].as_str().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        t.set_now(now);
        let got = t.render(
            &messages(case),
            case["add_generation_prompt"].as_bool().unwrap(),
        );
        match (case.get("expected").and_then(Json::as_str), got) {
            (Some(want), Ok(got)) if got == want => {}
            (Some(want), Ok(got)) => {
                failures.push(format!("{id} / {conv}:\n  want {want:?}\n  got  {got:?}"))
            }
            (Some(_), Err(e)) => failures.push(format!("{id} / {conv}: {e}")),
            (None, Err(TemplateError::Raised(m))) => {
                let want = case["error"].as_str().unwrap();
                if m != want {
                    failures.push(format!(
                        "{id} / {conv}: raised {m:?}, jinja2 raised {want:?}"
                    ));
                }
            }
            (None, other) => failures.push(format!(
                "{id} / {conv}: jinja2 raised {:?}, we gave {other:?}",
                case["error"]
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every built-in format has fixtures, and SmolLM2's file template is the one in the fixtures.
#[test]
fn fixtures_cover_builtins_and_smollm2() {
    let (_, cases) = load_cases();
    for b in BuiltinTemplate::ALL {
        let id = format!("builtin/{}", b.name());
        assert!(
            cases
                .iter()
                .any(|c| c["template"] == id.as_str() && c.get("expected").is_some()),
            "no rendered fixture for {id}"
        );
    }
    let Some(path) = tinyrt_tests::model(tinyrt_tests::SMOLLM2) else {
        return;
    };
    let file = tinyrt::gguf::GgufFile::open(&path).unwrap();
    let src = file.metadata().get_str("tokenizer.chat_template").unwrap();
    assert_eq!(src, template_source("file/smollm2-135m-instruct"));
    let format = ChatFormat::from_metadata(file.metadata(), None).unwrap();
    assert_eq!(format.origin(), &tinyrt::chat::TemplateOrigin::File);
    assert_eq!(format.bos_token(), "<|im_start|>");
}

/// Gemma-3's GGUF has no template: the gemma format is chosen, never a silent other one.
#[test]
fn gemma3_file_uses_builtin_gemma() {
    let Some(path) = tinyrt_tests::model(tinyrt_tests::GEMMA3) else {
        return;
    };
    let file = tinyrt::gguf::GgufFile::open(&path).unwrap();
    let format = ChatFormat::from_metadata(file.metadata(), None).unwrap();
    match format.origin() {
        tinyrt::chat::TemplateOrigin::Builtin { name, .. } => {
            assert_eq!(*name, BuiltinTemplate::Gemma)
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(format.bos_token(), "<bos>");
    let text = format.render(&[Message::user("Hi")], true).unwrap();
    assert!(
        text.starts_with("<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"),
        "{text:?}"
    );
}

/// The llama-tiny fixture has no template; its vocabulary (a cut of SmolLM2's) has
/// `<|im_start|>`, so ChatML is chosen, and the choice is described.
#[test]
fn template_choice_for_fixture_without_template() {
    let file = tinyrt::gguf::GgufFile::open(tinyrt_tests::fixture("llama-tiny-q8_0.gguf")).unwrap();
    let format = ChatFormat::from_metadata(file.metadata(), None).unwrap();
    let desc = format.describe();
    assert!(desc.contains("built-in"), "{desc}");
    let over = ChatFormat::from_metadata(file.metadata(), Some("llama3")).unwrap();
    assert!(over.describe().contains("llama3"));
    assert!(ChatFormat::from_metadata(file.metadata(), Some("nonsense")).is_err());
}

/// A file template that fails to render falls back to the family's built-in format, with a
/// warning.
#[test]
fn failing_file_template_falls_back_with_warning() {
    let has = |t: &str| t == "<|im_start|>";
    let info = tinyrt::chat::ModelChatInfo {
        architecture: "llama",
        file_template: Some("{{ raise_exception('nope') }}"),
        bos_token: "<s>",
        eos_token: "</s>",
        has_token: &has,
    };
    let format = ChatFormat::new(&info, None).unwrap();
    let text = format.render(&[Message::user("Hi")], true).unwrap();
    assert_eq!(
        text,
        ChatTemplate::new(BuiltinTemplate::Chatml.source(), "<s>", "</s>")
            .unwrap()
            .render(&[Message::user("Hi")], true)
            .unwrap()
    );
    let w = format.take_warning().expect("a warning");
    assert!(w.contains("nope") && w.contains("chatml"), "{w}");

    // One that does not even compile.
    let info = tinyrt::chat::ModelChatInfo {
        file_template: Some("{% for %}"),
        ..info
    };
    let format = ChatFormat::new(&info, None).unwrap();
    assert!(format.take_warning().is_some());
    assert!(format.describe().contains("chatml"));
}

// ---------------------------------------------------------------------------------------
// Stop strings and streaming

/// Runs token pieces through a stop matcher; returns printed text and whether it stopped.
fn stream(stops: &[&str], pieces: &[&str]) -> (String, bool) {
    let mut m = StopMatcher::new(stops);
    let mut out = String::new();
    for p in pieces {
        let o = m.push(p);
        out.push_str(&o.text);
        if o.stopped {
            return (out, true);
        }
    }
    out.push_str(&m.finish());
    (out, false)
}

#[test]
fn stop_strings_split_across_tokens() {
    assert_eq!(
        stream(&["<|user|>"], &["Sure", ".", "<|", "us", "er|>", "more"]),
        ("Sure.".into(), true)
    );
    assert_eq!(
        stream(&["\nUser:"], &["4", "\n", "Us", "er", ":"]),
        ("4".into(), true)
    );
    // A prefix that turns out not to be a stop string is printed, in order.
    assert_eq!(
        stream(&["\nUser:"], &["4", "\n", "Us", "e"]),
        ("4\nUse".into(), false)
    );
    // Nothing printed is ever part of a stop string, whatever the split.
    let text = "alpha STOP beta";
    for cut1 in 0..=text.len() {
        for cut2 in cut1..=text.len() {
            let pieces = [&text[..cut1], &text[cut1..cut2], &text[cut2..]];
            assert_eq!(
                stream(&["STOP"], &pieces),
                ("alpha ".into(), true),
                "{pieces:?}"
            );
        }
    }
}

/// Emoji and CJK, tokenized by a real vocabulary (byte-level BPE and SentencePiece with byte
/// fallback, where such characters split into several tokens), stream back through the
/// tokenizer's decoder and the stop matcher whole, never as U+FFFD.
#[test]
fn streaming_emoji_and_cjk_is_utf8_safe() {
    let text = "Hi 👋🏽 世界, 日本語のテキスト 🙂🎉 done. ok? 谢谢";
    for vocab in [
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-qwen2.gguf",
    ] {
        let file = tinyrt::gguf::GgufFile::open(tinyrt_tests::fixture(vocab)).unwrap();
        let tok = tinyrt::tokenizer::Tokenizer::from_gguf(file.metadata()).unwrap();
        let ids = tok.tokenize(text.as_bytes(), false, false).unwrap();
        assert!(ids.len() > 10, "{vocab}: {ids:?}");
        // Without a stop string: everything comes back.
        let mut dec = tok.stream_decoder();
        let mut m = StopMatcher::new::<&str>(&[]);
        let mut out = String::new();
        let mut split_chars = 0;
        for &id in &ids {
            let piece = dec.push(id);
            assert!(
                !piece.contains('\u{fffd}'),
                "{vocab}: U+FFFD after token {id}"
            );
            if piece.is_empty() {
                split_chars += 1;
            }
            out.push_str(&m.push(&piece).text);
        }
        out.push_str(&dec.finish());
        out.push_str(&m.finish());
        assert_eq!(out.trim_start(), text, "{vocab}");
        assert!(
            split_chars > 0,
            "{vocab}: no character was split across tokens"
        );
        // With a stop string made of CJK and emoji characters.
        let mut dec = tok.stream_decoder();
        let mut m = StopMatcher::new(&["🙂🎉"]);
        let mut out = String::new();
        for &id in &ids {
            let o = m.push(&dec.push(id));
            out.push_str(&o.text);
            if o.stopped {
                break;
            }
        }
        assert!(m.stopped(), "{vocab}");
        assert_eq!(out.trim_start(), "Hi 👋🏽 世界, 日本語のテキスト ", "{vocab}");
    }
}

// ---------------------------------------------------------------------------------------
// Sessions and the Assistant on the llama-tiny fixture (random weights, SmolLM2's vocabulary
// cut, no chat template: the built-in ChatML format)

use std::ops::ControlFlow;
use tinyrt::chat::{Assistant, AssistantOptions};
use tinyrt::{LoadOptions, Model, SamplerOptions, Session, SessionOptions, StopReason};

fn tiny_model() -> Model {
    Model::load(
        tinyrt_tests::fixture("llama-tiny-q8_0.gguf"),
        LoadOptions::default(),
    )
    .unwrap()
}

fn tiny_assistant(model: &Model, reuse: bool, n_ctx: usize, max_tokens: i64) -> Assistant {
    Assistant::new(
        model.clone(),
        AssistantOptions {
            system_prompt: Some("You are terse.".into()),
            sampler: SamplerOptions::greedy(),
            max_tokens,
            session: SessionOptions {
                n_ctx: Some(n_ctx),
                // Both the reusing and the re-processing session then feed through the same
                // kernels (prefill of 64+ tokens takes a tiled attention path that rounds
                // differently), so greedy replies of the random-weight model, full of near
                // ties, compare exactly; the logits of the two paths are compared with a
                // tolerance in `prefix_reuse_gives_the_logits_of_a_full_run`.
                n_batch: 16,
                ..SessionOptions::default()
            },
            reuse_prefix: reuse,
            ..AssistantOptions::default()
        },
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Truncating the cache to a common prefix and feeding the rest gives the logits of feeding
/// the whole sequence into a fresh session.
#[test]
fn prefix_reuse_gives_the_logits_of_a_full_run() {
    let model = tiny_model();
    let tok = model.tokenizer();
    let first = tok
        .tokenize(
            b"<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nGeneral Kenobi",
            true,
            true,
        )
        .unwrap();
    let second = tok
        .tokenize(b"<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nGeneral Kenobi<|im_end|>\n<|im_start|>user\nAnother one<|im_end|>\n<|im_start|>assistant\n", true, true)
        .unwrap();
    let common = first
        .iter()
        .zip(&second)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(common > 5 && common < second.len());

    let mut reused = Session::new(&model, SessionOptions::default()).unwrap();
    reused.feed(&first).unwrap();
    // Garbage after the common prefix, as a different earlier reply would leave.
    reused.feed(&first[..4]).unwrap();
    reused.truncate(common);
    let a = reused.feed(&second[common..]).unwrap().to_vec();

    let mut full = Session::new(&model, SessionOptions::default()).unwrap();
    let b = full.feed(&second).unwrap().to_vec();
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&a, &b);
    assert!(
        diff <= 1e-3 * scale.max(1.0),
        "max |diff| {diff} (logit scale {scale})"
    );
    assert_eq!(tinyrt::sampler::argmax(&a), tinyrt::sampler::argmax(&b));
}

/// A multi-turn chat with KV reuse says the same as one that re-processes the whole
/// conversation every turn, while processing only the new tokens.
#[test]
fn assistant_prefix_reuse_matches_full_reprocessing() {
    let model = tiny_model();
    let mut with = tiny_assistant(&model, true, 512, 12);
    let mut without = tiny_assistant(&model, false, 512, 12);
    let mut previous_prompt = 0;
    for (turn, q) in ["Hello!", "What is 2+2?", "Thanks, and 3+3?"]
        .iter()
        .enumerate()
    {
        let a = with
            .respond_streaming(q, |_| ControlFlow::Continue(()))
            .unwrap();
        let b = without
            .respond_streaming(q, |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(a.text, b.text, "turn {turn}");
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        assert_eq!(b.reused_tokens, 0);
        // At least the previous prompt is reused. (The random model's replies need not
        // tokenize back to the ids it generated, so the reply itself may not be.)
        assert!(
            a.reused_tokens >= previous_prompt,
            "turn {turn}: only {} of {} prompt tokens reused",
            a.reused_tokens,
            a.prompt_tokens
        );
        previous_prompt = a.prompt_tokens;
    }
    assert_eq!(with.history(), without.history());
    assert_eq!(with.history().len(), 7);
    assert_eq!(with.history()[0].role, "system");
}

/// When the context fills up, the oldest whole turns go (the system message stays), a notice
/// says so, and nothing overflows.
#[test]
fn context_overflow_drops_oldest_turns() {
    let model = tiny_model();
    let mut a = tiny_assistant(&model, true, 96, 8);
    let mut dropped = 0;
    for i in 0..12 {
        let r = a
            .respond_streaming(
                &format!("Question number {i}, please answer briefly."),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        assert!(r.prompt_tokens + 8 <= 96, "{r:?}");
        if r.notices.iter().any(|n| n.contains("dropped")) {
            dropped += 1;
        }
        let h = a.history();
        assert_eq!(h[0], tinyrt::chat::Message::system("You are terse."));
        assert_eq!(h.last().unwrap().role, "assistant");
        assert!(a.n_cached() <= a.n_ctx());
    }
    assert!(dropped > 0, "no turn was ever dropped");
    // A single message that cannot fit is an error, and the history is left as it was.
    let before = a.history().to_vec();
    let long = "word ".repeat(200);
    assert!(a
        .respond_streaming(&long, |_| ControlFlow::Continue(()))
        .is_err());
    assert_eq!(a.history(), &before[..]);
}

/// A stop string ends the reply before it; the callback can interrupt a reply.
#[test]
fn assistant_stop_strings_and_interrupts() {
    let model = tiny_model();
    let mut a = tiny_assistant(&model, true, 512, 24);
    let full = a
        .respond_streaming("Tell me a story.", |_| ControlFlow::Continue(()))
        .unwrap();
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() >= 6, "reply too short to test: {:?}", full.text);
    // A stop string from the middle of the greedy reply.
    let mid = chars.len() / 2;
    let stop: String = chars[mid..mid + 2].iter().collect();
    let want: String = full.text[..full.text.find(&stop).unwrap()].to_string();
    a.reset();
    a.options_mut().stop = vec![stop.clone()];
    let mut streamed = String::new();
    let r = a
        .respond_streaming("Tell me a story.", |p| {
            streamed.push_str(p);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(r.text, want, "stop {stop:?}");
    assert_eq!(streamed, want);
    assert_eq!(r.stop_reason, StopReason::Stop);
    assert_eq!(a.history().last().unwrap().content, want);

    // Interrupt after the first piece.
    a.reset();
    a.options_mut().stop.clear();
    let r = a
        .respond_streaming("Tell me a story.", |_| ControlFlow::Break(()))
        .unwrap();
    assert!(r.interrupted);
    assert_eq!(r.stop_reason, StopReason::Stop);
    assert!(r.text.len() < full.text.len());
    // The session goes on.
    let r = a
        .respond_streaming("Go on.", |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(r.reused_tokens > 0);
}

/// `respond` returns what streaming prints, and the max-token limit gives stop reason
/// "length".
#[test]
fn respond_and_length_limit() {
    let model = tiny_model();
    let mut a = tiny_assistant(&model, true, 512, 5);
    let text = a.respond("Hello!", 5).unwrap();
    let mut b = tiny_assistant(&model, true, 512, 5);
    let r = b
        .respond_streaming("Hello!", |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(text, r.text);
    if r.stop_reason == StopReason::Length {
        assert_eq!(r.generated_tokens, 5);
    } else {
        assert_eq!(r.stop_reason, StopReason::Eos);
    }
}

/// BOS appears exactly once at the start, whether the template writes it (Gemma, Llama-3)
/// and the tokenizer adds it too, or only one of them does.
#[test]
fn bos_is_never_doubled() {
    let mut files = vec![
        (
            tinyrt_tests::fixture("ggml-vocab-llama-bpe.gguf"),
            Some("llama3"),
        ),
        (
            tinyrt_tests::fixture("ggml-vocab-llama-spm.gguf"),
            Some("llama2"),
        ),
        (tinyrt_tests::fixture("llama-tiny-q8_0.gguf"), None),
    ];
    if let Some(p) = tinyrt_tests::model(tinyrt_tests::GEMMA3) {
        files.push((p, None));
    }
    if let Some(p) = tinyrt_tests::model(tinyrt_tests::SMOLLM2) {
        files.push((p, None));
    }
    let conv = [
        Message::system("Be brief."),
        Message::user("Hi"),
        Message::assistant("Hello."),
        Message::user("Bye"),
    ];
    for (path, over) in files {
        let file = tinyrt::gguf::GgufFile::open(&path).unwrap();
        let tok = tinyrt::tokenizer::Tokenizer::from_gguf(file.metadata()).unwrap();
        let format = ChatFormat::from_metadata(file.metadata(), over).unwrap();
        let ids = tinyrt::chat::encode_conversation(&format, &tok, &conv, true).unwrap();
        let what = format!("{} ({})", path.display(), format.describe());
        let Some(bos) = tok.bos() else { continue };
        let n_bos = ids.iter().filter(|&&t| t == bos).count();
        let rendered = format.render(&conv, true).unwrap();
        // Only the leading BOS counts: ChatML models use their BOS token as the turn opener.
        let leading = ids.iter().take_while(|&&t| t == bos).count();
        assert!(leading <= 1, "{what}: {leading} leading BOS: {ids:?}");
        if tok.add_bos()
            || (rendered.starts_with(format.bos_token()) && !format.bos_token().is_empty())
        {
            assert_eq!(ids.first(), Some(&bos), "{what}");
        }
        assert!(n_bos >= leading);
    }
}

/// The fuel limit that stops runaway templates leaves room for long conversations with the
/// heaviest real templates.
#[test]
fn long_conversations_fit_the_fuel_limit() {
    let mut conv = vec![Message::system(
        "You are a helpful assistant with a long system prompt.",
    )];
    for i in 0..300 {
        conv.push(Message::user(format!(
            "Question {i}: tell me something interesting about {i}."
        )));
        conv.push(Message::assistant(format!(
            "Answer {i}: the number {i} is interesting because it is {i}."
        )));
    }
    conv.push(Message::user("Last one."));
    for name in [
        "smollm3",
        "llama-3.1-instruct",
        "qwen3",
        "mistral-nemo-instruct",
        "granite-3.3-instruct",
    ] {
        let t =
            ChatTemplate::new(&template_source(&format!("file/{name}")), "<s>", "</s>").unwrap();
        let text = t
            .render(&conv, true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.contains("Question 299") && text.contains("Last one."),
            "{name}"
        );
    }
}

/// Tool-use templates (`tools`, assistant `tool_calls`, `tool` results) render as jinja2 renders
/// them: tests/golden/chat-templates/tools.json, made by scripts/gen-tool-chat-fixtures.py from
/// the Qwen 2.5 template.
#[test]
fn tool_templates_render_like_jinja2() {
    let path = fixtures_dir().join("tools.json");
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(&path).expect("tools.json"))
        .expect("tools.json is JSON");
    let t = ChatTemplate::new(doc["template"].as_str().unwrap(), "", "<|im_end|>").unwrap();
    assert!(t.takes_tools());
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let got = t
            .render_with_tools(
                &messages(case),
                Some(&case["tools"]),
                case["add_generation_prompt"].as_bool().unwrap(),
            )
            .unwrap();
        assert_eq!(
            got,
            case["expected"].as_str().unwrap(),
            "{}",
            case["conversation"]
        );
    }
}
