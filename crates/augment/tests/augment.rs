//! End-to-end tests of the `augment` binary: counts and composition agree with the written set,
//! real images are kept verbatim, and bad synthetic input fails clearly.

use std::path::Path;
use std::process::Output;

use rebalance_core::ImageSet;
use rebalance_testkit::fixtures::{bar_set, bar_splits};
use serde_json::Value;

fn augment(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_augment"))
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_strategy_writes_what_its_composition_says() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path();
    bar_splits(&art.join("dataset"), &[12, 3, 8], 2, 2, 16).unwrap();
    let synth = art.join("filtered/kept.safetensors");
    bar_set(&[0, 20, 2], 16, 300).write(&synth).unwrap();
    let real = ImageSet::read(&art.join("dataset/train.safetensors")).unwrap();
    for (strategy, extra, expect) in [
        ("none", vec![], [12, 3, 8]),
        ("oversample", vec![], [12, 12, 12]),
        ("classical", vec!["--target", "15"], [15, 15, 15]),
        ("synthetic", vec![], [12, 12, 10]),
        ("synthetic+classical", vec![], [12, 12, 12]),
        ("synthetic", vec!["--add", "5"], [12, 8, 10]),
        ("synthetic", vec!["--max-synthetic-ratio", "2"], [12, 9, 10]),
    ] {
        let mut args = vec!["--strategy", strategy, "--artifacts", s(art)];
        args.extend(extra.iter().copied());
        let o = augment(&args);
        assert!(
            o.status.success(),
            "{strategy}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = ImageSet::read(&art.join("augmented/train.safetensors")).unwrap();
        assert_eq!(out.counts(), expect, "{strategy} {extra:?}");
        let comp: Value =
            serde_json::from_slice(&std::fs::read(art.join("augmented/composition.json")).unwrap())
                .unwrap();
        for (c, name) in out.classes.iter().enumerate() {
            let k = &comp["classes"][name];
            let sum: u64 = ["real", "repeated", "classical", "synthetic"]
                .iter()
                .map(|f| k[f].as_u64().unwrap())
                .sum();
            assert_eq!(sum as usize, expect[c], "{strategy}: composition of {name}");
        }
        assert_eq!(
            comp["totals"]["images"].as_u64().unwrap() as usize,
            out.len()
        );
        // The real images come first, unchanged.
        assert_eq!(&out.images[..real.images.len()], &real.images[..]);
        assert_eq!(&out.labels[..real.len()], &real.labels[..]);
        assert!(art.join("augmented/class_counts.svg").exists());
    }
    // synthetic+classical: half of class1's gap of 9 from synthetic (round(4.5) = 5), the rest classical.
    let o = augment(&["--strategy", "synthetic+classical", "--artifacts", s(art)]);
    assert!(o.status.success());
    let comp: Value =
        serde_json::from_slice(&std::fs::read(art.join("augmented/composition.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            comp["classes"]["class1"]["synthetic"].as_u64(),
            comp["classes"]["class1"]["classical"].as_u64()
        ),
        (Some(5), Some(4))
    );
}

#[test]
fn bad_synthetic_input_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path();
    bar_splits(&art.join("dataset"), &[12, 3, 8], 2, 2, 16).unwrap();
    let fails = |synth: &Path| {
        let o = augment(&[
            "--strategy",
            "synthetic",
            "--artifacts",
            s(art),
            "--synthetic",
            s(synth),
        ]);
        assert_eq!(o.status.code(), Some(1), "an error exit, not a crash");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let other = art.join("other.safetensors");
    bar_set(&[1, 1], 16, 0).write(&other).unwrap();
    let err = fails(&other);
    assert!(
        err.contains("other.safetensors") && err.contains("classes"),
        "{err}"
    );
    let big = art.join("big.safetensors");
    bar_set(&[1, 1, 1], 28, 0).write(&big).unwrap();
    assert!(fails(&big).contains("28×28"));
    let err = fails(&art.join("missing.safetensors"));
    assert!(
        err.contains("missing.safetensors") && err.contains("filter"),
        "{err}"
    );
    let o = augment(&[
        "--strategy",
        "classical",
        "--artifacts",
        s(art),
        "--classes",
        "nope",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("`nope`"));
    assert_eq!(o.status.code(), Some(1));
    // A class with no real image and nothing synthetic to start from: refused, unless it is
    // left out of the classes to fill.
    let d2 = art.join("d2");
    bar_splits(&d2.join("dataset"), &[12, 0, 8], 2, 2, 16).unwrap();
    let o = augment(&["--strategy", "classical", "--artifacts", s(&d2)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("class `class1` has no training image")
            && err.contains("leave it out with --classes"),
        "{err}"
    );
    let o = augment(&[
        "--strategy",
        "classical",
        "--artifacts",
        s(&d2),
        "--classes",
        "class2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn classes_the_filter_kept_nothing_of_are_filled_classically_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path();
    bar_splits(&art.join("dataset"), &[12, 3, 8], 2, 2, 16).unwrap();
    // Class 1 has kept images, class 2 none; then a set with nothing at all.
    let some = art.join("some.safetensors");
    bar_set(&[0, 20, 0], 16, 300).write(&some).unwrap();
    let empty = art.join("empty.safetensors");
    bar_set(&[0, 0, 0], 16, 0).write(&empty).unwrap();
    for (synth, fallback) in [(&some, vec!["class2"]), (&empty, vec!["class1", "class2"])] {
        let o = augment(&[
            "--strategy",
            "synthetic+classical",
            "--artifacts",
            s(art),
            "--synthetic",
            s(synth),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let out = ImageSet::read(&art.join("augmented/train.safetensors")).unwrap();
        assert_eq!(out.counts(), [12, 12, 12], "every class reaches the target");
        let comp: Value =
            serde_json::from_slice(&std::fs::read(art.join("augmented/composition.json")).unwrap())
                .unwrap();
        for name in ["class0", "class1", "class2"] {
            let k = &comp["classes"][name];
            let marked = k["classical_fallback"].as_bool().unwrap_or(false);
            assert_eq!(marked, fallback.contains(&name), "{name}: {k}");
            if marked {
                assert_eq!(k["synthetic"], 0);
                assert!(
                    err.contains(&format!("class `{name}`: no synthetic image")),
                    "{err}"
                );
            }
        }
    }
}

/// `pipeline.toml`'s augment entries (judge-train, augment, refine rounds) must use real flags
/// with the clap defaults.
#[test]
fn pipeline_toml_matches_clap_defaults() {
    use clap::CommandFactory;
    let d = rebalance_testkit::fixtures::assert_pipeline_toml_matches(
        "augment",
        &[],
        &augment::Args::command(),
    );
    assert!(
        d.entries.len() >= 2 && d.checked.len() >= 5,
        "{:?}",
        d.checked
    );
}
