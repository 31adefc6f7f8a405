//! Shared helpers: a tiny project folder (pipeline.toml copy + PNG class folders) and runner calls.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rebalance_core::fixtures::bar_image;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The stage binaries the runner starts live next to it; `cargo test --workspace` builds them.
pub fn require_stage_binaries() {
    let dir = Path::new(BIN).parent().unwrap();
    for b in ["ingest", "gan-train", "augment", "classify", "filter"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run the suite with `cargo test --workspace` (or `just test`), which builds every stage",
            dir.join(b).display()
        );
    }
}

/// A project folder with the repository's pipeline.toml and a raw data set of 4 classes of
/// 28×28 bar images in class folders (`a`..`d`, 40 images each).
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("pipeline.toml"),
        dir.path().join("pipeline.toml"),
    )
    .unwrap();
    let raw = dir.path().join("raw");
    for (c, name) in ["a", "b", "c", "d"].iter().enumerate() {
        std::fs::create_dir_all(raw.join(name)).unwrap();
        for i in 0..40 {
            let px = bar_image(c, i, 28, 4);
            let img = image::GrayImage::from_raw(28, 28, px).unwrap();
            img.save(raw.join(name).join(format!("{i}.png"))).unwrap();
        }
    }
    dir
}

/// Parameters that make the default chain tiny: class c rare (6 train images), a 20-step GAN,
/// 2-epoch classifiers.
pub fn tiny() -> Vec<String> {
    [
        "source=raw",
        "test_per_class=8",
        "val_per_class=8",
        "max_per_class=24",
        "keep=c=6",
        "steps=60",
        "threshold=0",
        "batch=16",
        "epochs=2",
        "per_class=12",
        "finetune_steps=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn pipeline(dir: &Path, args: &[&str], params: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("MLFLOW_TRACKING_URI");
    for p in params {
        cmd.args(["-P", p]);
    }
    cmd.output().unwrap()
}

pub fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "pipeline failed: {}\nstdout:\n{}\nstderr:\n{err}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

pub fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "pipeline should have failed; stderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The newest run record under `artifacts/runs`.
pub fn last_run(artifacts: &Path) -> Value {
    let mut ids: Vec<_> = std::fs::read_dir(artifacts.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    ids.sort_by_key(|p| {
        json(&p.join("run.json"))["started_unix_ms"]
            .as_u64()
            .unwrap()
    });
    json(&ids.last().unwrap().join("run.json"))
}

/// Stage key → status of a run record.
pub fn statuses(run: &Value) -> Vec<(String, String)> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
