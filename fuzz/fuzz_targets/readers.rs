//! Coverage-guided fuzzing of every ingest reader. The first byte picks the reader (one of
//! `rebalance_testkit::ingest_inputs::targets`), the rest replaces that reader's input file;
//! ingest then runs on it. A panic, an abort or libFuzzer's memory limit (-rss_limit_mb) is a finding.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use rebalance_testkit::ingest_inputs::{run_once, targets, Target};

struct Setup {
    _dir: tempfile::TempDir,
    targets: Vec<Target>,
    out: std::path::PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let targets = targets(dir.path());
        let out = dir.path().join("out");
        Setup {
            _dir: dir,
            targets,
            out,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let s = setup();
    let t = &s.targets[pick as usize % s.targets.len()];
    let original = std::fs::read(&t.file).expect("the valid input");
    std::fs::write(&t.file, body).expect("writing the input");
    let _ = run_once(t, &s.out, |argv| {
        let args = ingest::Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        ingest::run(&args).map(|_| ()).map_err(|e| format!("{e:#}"))
    });
    std::fs::write(&t.file, original).expect("restoring the input");
});
