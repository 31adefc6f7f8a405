//! Shared helpers: a tiny project folder (pipeline.toml copy + PNG class folders) and runner calls.
#![allow(dead_code)]

pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rebalance_testkit::fixtures::bar_image;
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

pub fn spawn(dir: &Path, args: &[&str], params: &[String]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("MLFLOW_TRACKING_URI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for p in params {
        cmd.args(["-P", p]);
    }
    cmd.spawn().unwrap()
}

/// Poll until `cond` holds (or fail after `secs`).
pub fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The holder recorded in `<artifacts>/.lock`, once a run holds it.
pub fn holder(art: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(art.join(".lock")).ok()?).ok()
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A project whose one stage is a shell command: `secs` seconds of sleep, then a file
/// `out/done` with `text`. It writes its shell's pid to `stage.pid` first.
pub fn shell_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        r#"name = "slow"
contract_version = "1.0"

[entry_points.main]
help = "A stage that takes a while."
command = ["sh", "-c", "echo $$ > {artifacts}/stage.pid; sleep {secs} & wait; mkdir -p {artifacts}/out; echo {text} > {artifacts}/out/done"]
outs = ["{artifacts}/out"]

[entry_points.main.parameters]
secs = { type = "float", default = 1, help = "Seconds to sleep." }
text = { type = "string", default = "first", help = "What to write." }
artifacts = { type = "path", default = "artifacts", help = "Outputs." }
"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    dir
}
