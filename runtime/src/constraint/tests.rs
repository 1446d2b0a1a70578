use super::*;
use crate::sampler::Rng;
use crate::tokenizer::VocabSource;

/// GPT-2's byte-to-symbol map (printable bytes as themselves, the others from U+0100 on).
fn byte_symbols() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut next = 256u32;
    (0..256u32)
        .map(|b| {
            let cp = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(cp).unwrap().to_string()
        })
        .collect()
}

/// A byte-level BPE vocabulary: the 256 byte symbols (id = byte), `pieces`, then a control
/// `<|endoftext|>` (EOS) and a user-defined `<tool>` tag.
fn vocab(pieces: &[&str]) -> Tokenizer {
    let sym = byte_symbols();
    let mut tokens = sym.clone();
    for p in pieces {
        tokens.push(p.bytes().map(|b| sym[b as usize].as_str()).collect());
    }
    tokens.push("<|endoftext|>".into());
    tokens.push("<tool>".into());
    let n = tokens.len();
    let mut types = vec![1i32; n];
    types[n - 2] = 3;
    types[n - 1] = 4;
    let merges: Vec<String> = Vec::new();
    Tokenizer::from_source(&VocabSource {
        model: "gpt2",
        pre: Some("gpt-2"),
        tokens: &tokens,
        token_types: Some(&types),
        merges: Some(&merges),
        eos: Some(n as u32 - 2),
        ..Default::default()
    })
    .unwrap()
}

const PIECES: &[&str] = &[
    "ab", "abc", "bc", "cc", "abcc", "{\"", "\":", "true", "12", " \"", "\n",
];

fn piece(tok: &Tokenizer, id: u32) -> Vec<u8> {
    tok.token_to_piece(id).unwrap()
}

/// The language `(ab|abc|b)c{0,2}`, enumerated.
fn small_language() -> Vec<Vec<u8>> {
    let mut l = Vec::new();
    for head in ["ab", "abc", "b"] {
        for k in 0..=2 {
            l.push(format!("{head}{}", "c".repeat(k)).into_bytes());
        }
    }
    l
}

/// Every state reachable by allowed tokens: the mask allows exactly the tokens that keep the
/// text a prefix of a word of the language, EOS exactly on a whole word, never a control or
/// tag token otherwise.
fn check_against_brute_force(
    tok: &Tokenizer,
    c: Constraint,
    text: Vec<u8>,
    lang: &[Vec<u8>],
    states: &mut usize,
) {
    let mut c = c;
    c.compute_mask().unwrap();
    *states += 1;
    let eos = tok.eos().unwrap();
    let n = tok.n_vocab() as u32;
    assert_eq!(
        c.allowed(eos),
        lang.contains(&text),
        "EOS after {:?}",
        String::from_utf8_lossy(&text)
    );
    assert_eq!(c.is_accepting(), lang.contains(&text));
    for id in 0..n {
        if id == eos {
            continue;
        }
        let mut t = text.clone();
        t.extend(piece(tok, id));
        let special = id >= n - 2;
        let want = !special && lang.iter().any(|w| w.starts_with(&t));
        assert_eq!(
            c.allowed(id),
            want,
            "token {id} {:?} after {:?}",
            String::from_utf8_lossy(&piece(tok, id)),
            String::from_utf8_lossy(&text)
        );
        if want {
            let mut next = c.clone();
            next.commit(id).unwrap();
            check_against_brute_force(tok, next, t, lang, states);
        }
    }
}

#[test]
fn masks_match_brute_force_for_regex_lark_and_gbnf() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let lang = small_language();
    for spec in [
        ConstraintSpec::Regex("(ab|abc|b)c{0,2}".into()),
        ConstraintSpec::Lark("start: (\"ab\" | \"abc\" | \"b\") \"c\"{0,2}".into()),
        // GBNF is character-level: "ab" then "c" and "abc" are both read.
        ConstraintSpec::Gbnf("root ::= (\"ab\" | \"abc\" | \"b\") c{0,2}\nc ::= \"c\"".into()),
    ] {
        let c = g.compile(&spec).unwrap();
        let mut states = 0;
        check_against_brute_force(&tok, c, Vec::new(), &lang, &mut states);
        assert!(states > 10, "{spec:?}: only {states} states");
    }
}

#[test]
fn a_committed_token_outside_the_mask_is_an_error() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let mut c = g.compile(&ConstraintSpec::Regex("ab".into())).unwrap();
    c.compute_mask().unwrap();
    let e = c.commit(b'x' as u32).unwrap_err();
    assert!(e.0.contains("not allowed"), "{e}");
    assert!(c.error().is_some());
}

/// A random walk over allowed tokens, ending at EOS (taken with probability 1/3 once allowed).
fn walk(tok: &Tokenizer, c: &mut Constraint, rng: &mut Rng, max: usize) -> Option<Vec<u8>> {
    let eos = tok.eos().unwrap();
    let mut out = Vec::new();
    for _ in 0..max {
        c.compute_mask().unwrap();
        let mut allowed = Vec::new();
        c.for_each_allowed(|id| allowed.push(id));
        assert!(!allowed.is_empty());
        let id = if c.allowed(eos) && (allowed.len() == 1 || rng.next_f64() < 0.34) {
            eos
        } else {
            let others: Vec<u32> = allowed.into_iter().filter(|&i| i != eos).collect();
            others[(rng.next_u64() % others.len() as u64) as usize]
        };
        c.commit(id).unwrap();
        if id == eos {
            assert!(c.is_accepting());
            return Some(out);
        }
        out.extend(piece(tok, id));
        if c.is_done() {
            assert!(c.is_accepting());
            return Some(out);
        }
    }
    None
}

#[test]
fn json_schema_walks_give_valid_values() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 3, "maximum": 12},
            "tag": {"enum": ["ab", "abc", "x"]},
        },
        "required": ["ok", "n", "tag"],
        "additionalProperties": false,
    });
    let spec = ConstraintSpec::JsonSchema(schema);
    let mut rng = Rng::new(7);
    let mut done = 0;
    for _ in 0..20 {
        let mut c = g.compile(&spec).unwrap();
        let Some(text) = walk(&tok, &mut c, &mut rng, 200) else {
            continue;
        };
        done += 1;
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{v}");
        assert!(o["ok"].is_boolean());
        let n = o["n"].as_i64().unwrap();
        assert!((3..=12).contains(&n), "{v}");
        assert!(["ab", "abc", "x"].contains(&o["tag"].as_str().unwrap()));
        // The separators models write: `{"ok": true, "n": 5, ...}`.
        let s = String::from_utf8(text).unwrap();
        assert!(
            s.starts_with("{\"") && s.contains("\": ") && s.contains(", \""),
            "{s}"
        );
    }
    assert!(done >= 15, "only {done} walks ended");
}

#[test]
fn json_object_accepts_any_object() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let mut rng = Rng::new(3);
    let mut done = 0;
    for _ in 0..10 {
        let mut c = g.compile(&ConstraintSpec::JsonObject).unwrap();
        if let Some(text) = walk(&tok, &mut c, &mut rng, 300) {
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert!(v.is_object(), "{v}");
            done += 1;
        }
    }
    assert!(done > 0);
}

#[test]
fn bad_schemas_and_grammars_are_one_line_errors() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let bad = [
        ConstraintSpec::JsonSchema(serde_json::json!({"type": "nonsense"})),
        ConstraintSpec::JsonSchema(
            serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1}),
        ),
        ConstraintSpec::JsonSchema(serde_json::json!({"$ref": "#/$defs/missing"})),
        ConstraintSpec::Regex("(ab".into()),
        ConstraintSpec::Lark("start: foo".into()),
        ConstraintSpec::Lark("start: \"a\" )".into()),
        ConstraintSpec::Gbnf("item ::= \"a\"".into()),
        ConstraintSpec::Gbnf("root ::= item".into()),
        ConstraintSpec::Gbnf("root ::= \"\\q\"".into()),
        ConstraintSpec::Gbnf("root ::= [a-".into()),
        ConstraintSpec::Gbnf("root = \"a\"".into()),
        ConstraintSpec::Gbnf("root ::= (\"a\"".into()),
        ConstraintSpec::Gbnf("root ::= \"a\"{3,1}".into()),
    ];
    for spec in bad {
        let e = g
            .compile(&spec)
            .map(|_| ())
            .expect_err(&format!("{spec:?}"));
        assert!(!e.0.is_empty() && !e.0.contains('\n'), "{spec:?}: {e:?}");
    }
    assert!(ConstraintSpec::json_schema_str("{not json").is_err());
    assert_eq!(
        ConstraintSpec::json_schema_str("{\"type\": \"object\"}").unwrap(),
        ConstraintSpec::JsonSchema(serde_json::json!({"type": "object"}))
    );
}

/// Feed `text` one byte token at a time: every byte allowed, and the end accepting.
fn accepts(tok: &Tokenizer, c: &mut Constraint, text: &[u8]) -> bool {
    for &b in text {
        if c.compute_mask().is_err() || !c.allowed(b as u32) {
            return false;
        }
        c.commit(b as u32).unwrap();
    }
    c.compute_mask().is_ok() && c.allowed(tok.eos().unwrap()) && c.is_accepting()
}

fn llama_grammar(name: &str) -> String {
    let path = format!(
        "{}/../tests/data/gbnf/{name}.gbnf",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn llama_cpp_example_grammars_compile_and_generate() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let mut rng = Rng::new(11);
    for name in [
        "arithmetic",
        "c",
        "chess",
        "english",
        "japanese",
        "json",
        "json_arr",
        "list",
    ] {
        let spec = ConstraintSpec::Gbnf(llama_grammar(name));
        let c = g.compile(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
        for _ in 0..3 {
            let mut c = c.clone();
            if let Some(text) = walk(&tok, &mut c, &mut rng, 120) {
                let s = String::from_utf8(text).unwrap();
                // serde_json refuses numbers beyond f64 (1e999), which JSON allows.
                let json = |s: &str| match serde_json::from_str::<serde_json::Value>(s) {
                    Ok(v) => Some(v),
                    Err(e) if e.to_string().contains("number out of range") => None,
                    Err(e) => panic!("{name}: {e}: {s}"),
                };
                match name {
                    "json" => assert!(json(&s).is_none_or(|v| v.is_object()), "{s}"),
                    "json_arr" => assert!(json(&s).is_none_or(|v| v.is_array()), "{s}"),
                    "list" => assert!(
                        s.lines().all(|l| l.starts_with("- ") && l.len() > 2) && s.ends_with('\n'),
                        "{s:?}"
                    ),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn gbnf_texts_are_accepted_and_rejected_as_llama_cpp_reads_them() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let check = |name: &str, text: &str| {
        let mut c = g
            .compile(&ConstraintSpec::Gbnf(llama_grammar(name)))
            .unwrap();
        accepts(&tok, &mut c, text.as_bytes())
    };
    assert!(check("arithmetic", "x = 2\n"));
    assert!(check("arithmetic", "(a1 +22) *b = c\n"));
    assert!(!check("arithmetic", "(a1 + 22) * b = c\n"));
    assert!(!check("arithmetic", "x = \n"));
    assert!(check("list", "- eggs\n- milk\n"));
    assert!(!check("list", "- eggs"));
    assert!(!check("list", "* eggs\n"));
    assert!(check("chess", "1. e4 e5\n2. Nf3 Nc6\n"));
    assert!(check("chess", "1. O-O O-O-O\n2. exd5 Qxd8+\n"));
    assert!(!check("chess", "1. e9 e5\n2. Nf3 Nc6\n"));
    assert!(check(
        "json",
        "{\"a\": [1, 2.5e3, \"x\\u00e9\"], \"b\": {\"c\": null}}"
    ));
    assert!(!check("json", "{\"a\": tru}"));
    assert!(check("json_arr", "[\n{\"a\": true}\n]"));
    assert!(check("japanese", "こんにちは 世界"));
    assert!(!check("japanese", "こんにちは\n"));
    // Escapes: \x, \u, classes with ranges and negation, `.`.
    let mut c = g
        .compile(&ConstraintSpec::Gbnf(
            "root ::= \"\\x41\\u00e9\" [^a-c] . [\\x30-\\x39]{2,3} # comment\n".into(),
        ))
        .unwrap();
    assert!(accepts(&tok, &mut c, "Aéd\n123".as_bytes()));
    let mut c = g
        .compile(&ConstraintSpec::Gbnf(
            "root ::= \"\\x41\\u00e9\" [^a-c] . [\\x30-\\x39]{2,3}".into(),
        ))
        .unwrap();
    assert!(!accepts(&tok, &mut c, "Aéb\n123".as_bytes()));
}

#[test]
fn grammars_build_fast_enough_for_a_large_vocabulary() {
    // A 100k-token byte-level vocabulary of distinct pieces.
    let owned: Vec<String> = (0..100_000u32).map(|i| format!("t{i:x}")).collect();
    let pieces: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
    let tok = vocab(&pieces);
    let t = std::time::Instant::now();
    let g = Grammars::new(&tok).unwrap();
    let built = t.elapsed();
    assert_eq!(g.n_vocab(), tok.n_vocab());
    let mut c = g.compile(&ConstraintSpec::Regex("t[0-9]+".into())).unwrap();
    c.compute_mask().unwrap();
    assert!(c.allowed(256 + 0x10) && !c.allowed(256 + 0xa));
    assert!(built.as_secs_f64() < 5.0, "{built:?}");
}

#[test]
fn the_sampler_masks_before_penalties_and_top_k() {
    use crate::sampler::{Sampler, SamplerOptions};
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let ab = tok.n_vocab() as u32 - 2 - PIECES.len() as u32; // "ab", the first piece
    let mut logits = vec![0.0f32; tok.n_vocab()];
    logits[b'x' as usize] = 5.0; // the best, but not allowed
    logits[b'a' as usize] = 1.0;
    logits[ab as usize] = 2.0;
    let spec = ConstraintSpec::Regex("ab|b".into());
    for opts in [
        SamplerOptions::greedy(),
        SamplerOptions {
            top_k: 1,
            seed: Some(1),
            ..SamplerOptions::default()
        },
        SamplerOptions {
            repeat_penalty: 1.5,
            seed: Some(1),
            ..SamplerOptions::greedy()
        },
    ] {
        let mut s = Sampler::new(opts).with_constraint(g.compile(&spec).unwrap());
        assert!(!s.is_plain_argmax());
        s.accept(b'x' as u32);
        let id = s.try_sample(&logits, &[]).unwrap();
        assert_eq!(id, ab);
        s.commit(id).unwrap();
        assert!(s.constraint().unwrap().is_accepting());
        // Complete: only EOS remains, whatever the logits.
        assert_eq!(s.sample(&logits), tok.eos().unwrap());
    }
    // Without a constraint the same sampler options choose 'x'.
    assert_eq!(
        Sampler::new(SamplerOptions::greedy()).sample(&logits),
        b'x' as u32
    );
}

#[test]
fn dates_are_real_calendar_dates() {
    let tok = vocab(PIECES);
    let g = Grammars::new(&tok).unwrap();
    let specs = [
        ConstraintSpec::JsonSchema(serde_json::json!({"type": "string", "format": "date"})),
        ConstraintSpec::JsonSchema(
            serde_json::json!({"type": "string", "format": "date", "pattern": "^20"}),
        ),
    ];
    for spec in &specs {
        let ok = |d: &str| {
            let mut c = g.compile(spec).unwrap();
            accepts(&tok, &mut c, format!("\"{d}\"").as_bytes())
        };
        for d in [
            "2024-02-29",
            "2000-02-29",
            "2023-12-31",
            "2023-04-30",
            "2023-02-28",
        ] {
            assert!(ok(d), "{d}");
        }
        for d in [
            "2023-02-29",
            "2100-02-29",
            "2023-04-31",
            "2023-13-01",
            "2023-02-30",
        ] {
            assert!(!ok(d), "{d}");
        }
    }
    // The first schema alone takes years before 2000, and never year 0000.
    let mut c = g.compile(&specs[0]).unwrap();
    assert!(accepts(&tok, &mut c, b"\"1600-02-29\""));
    let mut c = g.compile(&specs[0]).unwrap();
    assert!(!accepts(&tok, &mut c, b"\"0000-01-01\""));
}
