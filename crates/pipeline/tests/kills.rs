//! Concurrent runs, signals and kills (issue 13): one run per artifacts folder, SIGINT and
//! SIGTERM stop the stage and mark the run KILLED with the earlier outputs put back, and a
//! runner killed outright is cleaned up and resumed by the next run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_second_run_is_refused_or_waits_and_sigint_restores_the_stage_outputs() {
    let proj = shell_project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    ok(&pipeline(dir, &["-q"], &["text=first".into()]));
    assert_eq!(
        std::fs::read_to_string(art.join("out/done")).unwrap(),
        "first\n"
    );
    assert_eq!(
        std::fs::read(art.join(".lock")).unwrap(),
        b"",
        "a clean release clears the holder"
    );

    // A run in progress: a second is refused at once, naming the run and its pid.
    let slow = ["secs=4".to_string(), "text=second".to_string()];
    let a = spawn(dir, &["-q"], &slow);
    until(20, "the first run to take the lock", || {
        holder(&art).is_some()
    });
    let h = holder(&art).unwrap();
    assert_eq!(h["pid"].as_u64().unwrap(), a.id() as u64);
    let started = Instant::now();
    let err = fails(&pipeline(dir, &["-q", "--force"], &[]));
    let want = format!(
        "artifacts/ is in use by run {} (pid {})",
        h["run_id"].as_str().unwrap(),
        a.id()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused at once"
    );
    // --wait waits for it, then runs.
    let w = spawn(dir, &["-q", "--force", "--wait"], &["text=third".into()]);
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let w = w.wait_with_output().unwrap();
    let werr = String::from_utf8_lossy(&w.stderr);
    assert!(w.status.success(), "{werr}");
    assert!(werr.contains("waiting for it to end (--wait)"), "{werr}");
    assert_eq!(
        std::fs::read_to_string(art.join("out/done")).unwrap(),
        "third\n"
    );

    // SIGINT mid-stage: the stage's process group stops, its earlier output comes back,
    // the run is KILLED with exit status 130.
    let _ = std::fs::remove_file(art.join("stage.pid"));
    let b = spawn(
        dir,
        &["-q", "--force"],
        &["secs=30".into(), "text=fourth".into()],
    );
    until(20, "the stage to start", || {
        std::fs::read_to_string(art.join("stage.pid")).is_ok_and(|s| s.ends_with('\n'))
    });
    let stage_pid: i32 = std::fs::read_to_string(art.join("stage.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !art.join("out").exists(),
        "the output is set aside while its stage runs"
    );
    signal(&b, libc::SIGINT);
    let b = b.wait_with_output().unwrap();
    let berr = String::from_utf8_lossy(&b.stderr);
    assert_eq!(b.status.code(), Some(130), "{berr}");
    assert!(berr.contains("stopped by SIGINT"), "{berr}");
    assert!(berr.contains("recorded as KILLED"), "{berr}");
    assert_eq!(
        std::fs::read_to_string(art.join("out/done")).unwrap(),
        "third\n",
        "the earlier output is back"
    );
    until(5, "the stage's shell to be gone", || !exists(stage_pid));
    let run = last_run(&art);
    assert_eq!(run["status"], "KILLED");
    assert_eq!(statuses(&run), [("main".to_string(), "killed".to_string())]);
    let log = PathBuf::from(run["stages"][0]["log"].as_str().unwrap());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("[pipeline] stopped by SIGINT"), "{log}");
    assert_eq!(std::fs::read(art.join(".lock")).unwrap(), b"");
}

/// The tiny chain's parameters of the ingest entry point.
fn ingest_params() -> Vec<String> {
    let ingest = [
        "source",
        "test_per_class",
        "val_per_class",
        "max_per_class",
        "keep",
    ];
    tiny()
        .into_iter()
        .filter(|s| ingest.iter().any(|k| s.starts_with(&format!("{k}="))))
        .collect()
}

/// A GAN long enough to be stopped after its first checkpoint.
fn gan_params() -> Vec<String> {
    ["steps=100", "batch=16", "checkpoint_every=10"]
        .map(String::from)
        .to_vec()
}

/// The newest stage log of `key` under `artifacts/runs`.
fn newest_log(art: &Path, key: &str) -> String {
    let run = last_run(art);
    let s = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no stage {key} in {run}"));
    std::fs::read_to_string(s["log"].as_str().unwrap()).unwrap()
}

/// Start `-e gan-train` and wait for its first checkpoint.
fn gan_run_with_a_checkpoint(dir: &Path) -> Child {
    let art = dir.join("artifacts");
    let child = spawn(dir, &["-e", "gan-train", "-q"], &gan_params());
    let ck = art.join(".gan.partial/checkpoints/latest.safetensors");
    until(300, "the GAN's first checkpoint", || ck.is_file());
    child
}

/// The step a resumed gan-train says it resumed from.
fn resumed_step(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("resumed from"))
        .unwrap_or_else(|| panic!("the GAN did not resume:\n{log}"));
    line.rsplit("at step ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sigterm_mid_gan_is_killed_and_the_rerun_resumes_from_the_checkpoint() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    ok(&pipeline(dir, &["-e", "ingest", "-q"], &ingest_params()));
    let run = gan_run_with_a_checkpoint(dir);
    signal(&run, libc::SIGTERM);
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    let rec = last_run(&art);
    assert_eq!(rec["status"], "KILLED", "{err}");
    assert_eq!(statuses(&rec)[0], ("gan-train".into(), "killed".into()));
    assert!(rec["ended_unix_ms"].is_u64());
    assert!(!art.join("gan").exists(), "no half-written output");
    // The same command again: the GAN resumes from its checkpoint and finishes.
    ok(&pipeline(dir, &["-e", "gan-train", "-q"], &gan_params()));
    let log = newest_log(&art, "gan-train");
    assert!(resumed_step(&log) >= 10, "{log}");
    assert!(art.join("gan/generator.safetensors").is_file());
    assert_eq!(last_run(&art)["status"], "FINISHED");
}

#[test]
fn sigkill_of_the_runner_takes_its_stage_down_and_the_next_run_cleans_up_and_resumes() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    ok(&pipeline(dir, &["-e", "ingest", "-q"], &ingest_params()));
    let mut run = gan_run_with_a_checkpoint(dir);
    let killed_id = holder(&art).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", run.id()))
        .unwrap_or_default();
    let stage: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        stage.len(),
        1,
        "the runner has one stage process: {children}"
    );
    run.kill().unwrap(); // SIGKILL: no handler runs
    run.wait().unwrap();
    until(20, "gan-train to die with its runner", || !exists(stage[0]));
    let rec = json(&art.join("runs").join(&killed_id).join("run.json"));
    assert_eq!(rec["status"], "RUNNING", "nothing could record the SIGKILL");

    let err = ok(&pipeline(dir, &["-e", "gan-train", "-q"], &gan_params()));
    assert!(
        err.contains(&format!("took over {}", art.join(".lock").display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "run {killed_id} (pid {}) was left RUNNING by a runner that is gone; marked KILLED",
            run.id()
        )),
        "{err}"
    );
    let rec = json(&art.join("runs").join(&killed_id).join("run.json"));
    assert_eq!(rec["status"], "KILLED");
    assert!(rec["ended_unix_ms"].is_u64());
    let log = newest_log(&art, "gan-train");
    assert!(resumed_step(&log) >= 10, "{log}");
    assert!(art.join("gan/generator.safetensors").is_file());
}

#[test]
fn two_concurrent_default_chains_give_one_success_and_one_refusal() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let first = spawn(dir, &["-q"], &tiny());
    until(60, "the first run to take the lock", || {
        holder(&art).is_some()
    });
    let second = pipeline(dir, &["-q"], &tiny());
    let err = fails(&second);
    assert_eq!(second.status.code(), Some(1));
    let h = holder(&art).unwrap();
    assert!(
        err.contains(&format!(
            "artifacts/ is in use by run {} (pid {})",
            h["run_id"].as_str().unwrap(),
            first.id()
        )),
        "{err}"
    );
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The success is whole: every stage ran, the report and its verdict are there.
    let run = last_run(&art);
    assert_eq!(run["status"], "FINISHED");
    assert!(statuses(&run).iter().all(|(_, s)| s == "ran"), "{run}");
    for f in [
        "dataset/train.safetensors",
        "gan/generator.safetensors",
        "filtered/kept.safetensors",
        "augmented/train.safetensors",
        "classify/metrics.json",
        "judge/recipes.json",
        "report/index.html",
        "report/verdict.txt",
    ] {
        assert!(art.join(f).is_file(), "{f} is missing");
    }
    // Only one run record: the refused run started nothing.
    assert_eq!(std::fs::read_dir(art.join("runs")).unwrap().count(), 1);
}
