//! The `tinyrt` command-line interface.
fn main() {
    println!("tinyrt {}", env!("CARGO_PKG_VERSION"));
}
