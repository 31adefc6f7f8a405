//! The studies' settings end to end, on the fixtures of `data/fixtures/studies` (made from real
//! MNIST digits by `cargo run -p ingest --example study_fixtures`), with few steps:
//! 32×32 RGB traffic signs in the GTSRB layout with ROI crops (and the study's own flow: a
//! DCGAN on one class, samples every 100 steps, a fine-tune from a good run), 48×48 grey
//! FER2013 with WGAN-GP and two refinement rounds, and 128×128 RGB JPEGs from a labels CSV.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A project folder with the repository's pipeline.toml and the studies' fixtures.
fn study_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("pipeline.toml"),
        dir.path().join("pipeline.toml"),
    )
    .unwrap();
    dir
}

fn fixture(name: &str) -> String {
    let p = repo().join("data/fixtures/studies").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p.canonicalize().unwrap().display().to_string()
}

/// Tiny chain settings for sets of 4 classes of ~20 training images.
fn small(source: &str, keep: &str) -> Vec<String> {
    [
        format!("source={source}"),
        "test_per_class=4".into(),
        "val_per_class=4".into(),
        "max_per_class=20".into(),
        format!("keep={keep}"),
        "threshold=0".into(),
        "batch=8".into(),
        "epochs=2".into(),
        "per_class=12".into(),
    ]
    .into()
}

fn shape(art: &Path) -> (u64, u64, u64) {
    let set = rebalance_core::ImageSet::read(&art.join("dataset/train.safetensors")).unwrap();
    (set.channels as u64, set.height as u64, set.width as u64)
}

fn finished_with_verdict(art: &Path) -> String {
    let run = last_run(art);
    assert_eq!(run["status"], "FINISHED");
    std::fs::read_to_string(art.join("report/verdict.txt")).unwrap()
}

#[test]
fn traffic_signs_gtsrb_layout_with_roi_crops_then_the_studys_dcgan_flow() {
    require_stage_binaries();
    let proj = study_project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = small(&fixture("gtsrb"), "2=6");
    params.extend(["roi_crop=true".into(), "steps=20".into()]);
    let err = ok(&pipeline(dir, &["-q"], &params));
    assert_eq!(shape(&art), (3, 32, 32), "{err}");
    let verdict = finished_with_verdict(&art);
    assert!(verdict.contains("macro-F1"), "{verdict}");

    // The study's flow on the ingested set: a DCGAN on class 2 with samples every 100
    // iterations, then a new run initialised from that good run's checkpoint.
    let gan = Path::new(BIN).parent().unwrap().join("gan-train");
    let data = art.join("dataset/train.safetensors");
    let good = dir.join("goodrun");
    let run = |args: &[&str]| {
        let o = Command::new(&gan)
            .args(args)
            .args([
                "--data",
                data.to_str().unwrap(),
                "--batch",
                "8",
                "--g-width",
                "16",
            ])
            .args(["--d-width", "16", "--log-every", "50"])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err
    };
    run(&[
        "--model",
        "dcgan",
        "--class",
        "2",
        "--steps",
        "200",
        "--sample-every",
        "100",
        "--out",
        good.to_str().unwrap(),
    ]);
    for s in ["step_000100.png", "step_000200.png"] {
        assert!(good.join("samples").join(s).is_file(), "{s}");
    }
    let m = json(&good.join("manifest.json"));
    assert_eq!(m["trained_classes"], serde_json::json!(["2"]));
    let tuned = dir.join("tuned");
    let ck = good.join("checkpoints/latest.safetensors");
    let err = run(&[
        "--model",
        "dcgan",
        "--class",
        "2",
        "--init",
        ck.to_str().unwrap(),
        "--steps",
        "100",
        "--sample-every",
        "100",
        "--out",
        tuned.to_str().unwrap(),
    ]);
    assert!(err.contains("initialised G and D from"), "{err}");
    assert!(tuned.join("samples/step_000100.png").is_file());
}

#[test]
fn fer2013_csv_with_wgan_gp_and_two_refinement_rounds() {
    require_stage_binaries();
    let proj = study_project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = small(&fixture("fer2013.csv"), "fear=6");
    params.extend([
        "gan-train.model=wgan-gp".into(),
        "gan-finetune.model=wgan-gp".into(),
        "steps=6".into(),
        "finetune_steps=3".into(),
        "rounds=2".into(),
    ]);
    let err = ok(&pipeline(dir, &["-q"], &params));
    assert_eq!(shape(&art), (1, 48, 48), "{err}");
    let gan = json(&art.join("gan/manifest.json"));
    assert_eq!(gan["config"]["model"], "wgan-gp");
    assert!(art.join("rounds/2/classify/metrics.json").is_file());
    let verdict = finished_with_verdict(&art);
    assert!(
        verdict.contains("Refinement") || verdict.contains("round"),
        "{verdict}"
    );
}

#[test]
fn fundus_128px_rgb_jpegs_from_a_labels_csv() {
    require_stage_binaries();
    let proj = study_project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = small(&fixture("fundus/labels.csv"), "2=6");
    params.push("steps=4".into());
    let err = ok(&pipeline(dir, &["-q"], &params));
    assert_eq!(shape(&art), (3, 128, 128), "{err}");
    let gan = json(&art.join("gan/manifest.json"));
    assert_eq!(gan["config"]["height"], 128);
    finished_with_verdict(&art);
}
