//! Writes the YaRN fixture of the parity tests (see `tinyrt_tests::write_yarn_fixture`) to the
//! path given, for `scripts/make-yarn-golden.sh` to run llama.cpp on.

fn main() {
    let Some(dst) = std::env::args_os().nth(1) else {
        eprintln!("usage: yarn_fixture OUT.gguf");
        std::process::exit(2);
    };
    tinyrt_tests::write_yarn_fixture(std::path::Path::new(&dst));
}
