//! Write the seed corpus of the `readers` target: each reader's valid input, prefixed by the
//! byte that picks it. Usage: `cargo run --bin seed-corpus -- corpus/readers`.

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/readers".into());
    std::fs::create_dir_all(&out).expect("creating the corpus folder");
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (i, t) in rebalance_testkit::ingest_inputs::targets(dir.path()).iter().enumerate() {
        let mut bytes = vec![i as u8];
        bytes.extend(std::fs::read(&t.file).expect("the valid input"));
        std::fs::write(format!("{out}/{}", t.name), bytes).expect("writing a seed");
    }
    println!("seeds written to {out}");
}
