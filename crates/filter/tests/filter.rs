//! End-to-end tests of `filter` with a judge whose outputs we set by hand: every weight zero
//! except the output bias, so the judge gives every image the same, chosen probabilities.

use std::path::{Path, PathBuf};
use std::process::Output;

use rebalance_core::contract::filter::AcceptanceRow;
use rebalance_core::contract::read_csv;
use rebalance_core::ImageSet;
use rebalance_nn::models::{judge, Classifier, ClassifierConfig, ClassifierKind};
use rebalance_testkit::fixtures::{bar_set, bar_splits};
use tch::{nn::VarStore, Device, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_filter");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A judge folder whose softmax is `probs` for every input.
fn fixed_judge(dir: &Path, classes: &[&str], side: i64, probs: &[f64]) -> PathBuf {
    let cfg = ClassifierConfig::new(
        ClassifierKind::Lenet5,
        1,
        side,
        side,
        classes.iter().map(|c| c.to_string()).collect(),
    )
    .unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _model = Classifier::new(&vs.root(), &cfg);
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name == "head.bias" {
                let logp: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
                v.copy_(&Tensor::from_slice(&logp));
            } else {
                let _ = v.zero_();
            }
        }
    });
    std::fs::create_dir_all(dir).unwrap();
    judge::save(dir, &vs, &cfg).unwrap();
    dir.to_path_buf()
}

fn filter(args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .args(["--device", "cpu", "--quiet"])
        .output()
        .unwrap()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    generated: PathBuf,
}

/// Real splits of 3 classes, and a generated set: 6 images intended as class0, 4 as class1.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("dataset");
    bar_splits(&data, &[10, 3, 10], 5, 5, 28).unwrap();
    let generated = root.join("generated.safetensors");
    bar_set(&[6, 4, 0], 28, 500).write(&generated).unwrap();
    Setup {
        _tmp: tmp,
        root,
        data,
        generated,
    }
}

fn scores(out: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(out.join("scores.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn gate_follows_the_judges_probabilities() {
    let st = setup();
    let judge = fixed_judge(
        &st.root.join("judge"),
        &["class0", "class1", "class2"],
        28,
        &[0.95, 0.04, 0.01],
    );
    let out = st.root.join("filtered");
    let o = filter(&[
        "--generated",
        s(&st.generated),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The judge says class0 with 0.95 for everything: the 6 class0 images pass, the 4 class1 do not.
    let kept = ImageSet::read(&out.join("kept.safetensors")).unwrap();
    assert_eq!(kept.counts(), [6, 0, 0]);
    let rows = scores(&out);
    assert_eq!(rows.len(), 10);
    for r in &rows {
        let intended = &r[1];
        assert_eq!(&r[2], "class0", "predicted");
        assert!(
            (r[3].parse::<f64>().unwrap() - 0.95).abs() < 1e-4,
            "confidence {}",
            &r[3]
        );
        let (kept, reason) = (&r[8], &r[9]);
        if intended == "class0" {
            assert_eq!((kept, reason), ("true", "kept"));
        } else {
            assert_eq!((kept, reason), ("false", "wrong-class"));
        }
    }
    let acc: Vec<AcceptanceRow> = read_csv(&out.join("acceptance.csv")).unwrap();
    let summary: Vec<(&str, usize, usize, f64)> = acc
        .iter()
        .map(|r| (r.class.as_str(), r.generated, r.kept, r.acceptance))
        .collect();
    assert_eq!(summary, [("class0", 6, 6, 1.0), ("class1", 4, 0, 0.0)]);
    for f in ["accepted.png", "rejected.png", "manifest.json"] {
        assert!(out.join(f).exists(), "{f}");
    }

    // Above 0.95 nothing passes; a band that ends below 0.95 drops them as too confident.
    let o = filter(&[
        "--generated",
        s(&st.generated),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
        "--threshold",
        "0.96",
    ]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("kept 0 of 6"),
        "a gate that keeps nothing is said out loud"
    );
    assert_eq!(
        ImageSet::read(&out.join("kept.safetensors")).unwrap().len(),
        0
    );
    let o = filter(&[
        "--generated",
        s(&st.generated),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
        "--threshold",
        "0.5",
        "--max-confidence",
        "0.9",
    ]);
    assert!(o.status.success());
    assert!(scores(&out)
        .iter()
        .filter(|r| &r[1] == "class0")
        .all(|r| &r[9] == "above-band"));
    // top-k per class.
    let o = filter(&[
        "--generated",
        s(&st.generated),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
        "--top-k",
        "2",
    ]);
    assert!(o.status.success());
    assert_eq!(
        ImageSet::read(&out.join("kept.safetensors")).unwrap().len(),
        2
    );
}

#[test]
fn a_planted_copy_of_a_training_image_is_flagged_and_can_be_dropped() {
    let st = setup();
    let judge = fixed_judge(
        &st.root.join("judge"),
        &["class0", "class1", "class2"],
        28,
        &[0.95, 0.04, 0.01],
    );
    let train = ImageSet::read(&st.data.join("train.safetensors")).unwrap();
    let mut gen = bar_set(&[3, 0, 0], 28, 700);
    // Shift every bar one row down so the others are no copies; then plant train image 4 verbatim.
    for i in 0..gen.len() {
        let px: Vec<u8> = gen.image(i).to_vec();
        let n = px.len();
        let start = i * n;
        gen.images[start..start + n]
            .copy_from_slice(&[vec![0u8; 28], px[..n - 28].to_vec()].concat());
    }
    gen.push(train.image(4), 0);
    let gp = st.root.join("gen-copy.safetensors");
    gen.write(&gp).unwrap();
    let out = st.root.join("filtered");
    let o = filter(&[
        "--generated",
        s(&gp),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = scores(&out);
    let flagged: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| &r[7] == "true")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flagged, [3], "only the planted copy is a near-copy");
    assert_eq!(&rows[3][6], "4", "its nearest real image is the one copied");
    assert!(rows[3][5].parse::<f64>().unwrap() < 1e-6);
    let o = filter(&[
        "--generated",
        s(&gp),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&out),
        "--drop-copies",
    ]);
    assert!(o.status.success());
    assert_eq!(&scores(&out)[3][9], "near-copy");
    assert_eq!(
        ImageSet::read(&out.join("kept.safetensors")).unwrap().len(),
        3
    );
}

#[test]
fn bad_input_fails_clearly() {
    let st = setup();
    let args = |judge: &Path, gen: &Path| {
        let o = filter(&[
            "--generated",
            s(gen),
            "--judge",
            s(judge),
            "--data",
            s(&st.data),
            "--out",
            s(&st.root.join("f")),
        ]);
        // An error exit (1), not a panic (101) or a signal.
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let other_classes = fixed_judge(&st.root.join("j1"), &["a", "b", "c"], 28, &[0.5, 0.3, 0.2]);
    let err = args(&other_classes, &st.generated);
    assert!(
        err.contains("generated.safetensors") && err.contains("judge's [a, b, c]"),
        "{err}"
    );
    let other_size = fixed_judge(
        &st.root.join("j2"),
        &["class0", "class1", "class2"],
        32,
        &[0.5, 0.3, 0.2],
    );
    let err = args(&other_size, &st.generated);
    assert!(err.contains("1×28×28") && err.contains("1×32×32"), "{err}");
    let judge = fixed_judge(
        &st.root.join("j3"),
        &["class0", "class1", "class2"],
        28,
        &[0.5, 0.3, 0.2],
    );
    let empty = st.root.join("empty.safetensors");
    bar_set(&[0, 0, 0], 28, 0).write(&empty).unwrap();
    let err = args(&judge, &empty);
    assert!(
        err.contains("empty.safetensors") && err.contains("empty"),
        "{err}"
    );
    let err = args(&st.root.join("nojudge"), &st.generated);
    assert!(err.contains("nojudge") && err.contains("classify"), "{err}");
    // Out-of-range thresholds.
    let o = filter(&[
        "--generated",
        s(&st.generated),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--threshold",
        "1.5",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--threshold 1.5"));
}

/// `pipeline.toml`'s filter entries must use real flags with the clap defaults.
#[test]
fn pipeline_toml_matches_clap_defaults() {
    use clap::CommandFactory;
    let d = rebalance_testkit::fixtures::assert_pipeline_toml_matches(
        "filter",
        &[],
        &filter::Args::command(),
    );
    assert!(
        !d.entries.is_empty() && d.checked.len() >= 3,
        "{:?}",
        d.checked
    );
}

/// A planted collapsed generator (every class-0 image the same) is reported as collapsing; the
/// varied class is not.
#[test]
fn a_collapsed_class_is_warned_about() {
    let st = setup();
    let judge = fixed_judge(
        &st.root.join("judge"),
        &["class0", "class1", "class2"],
        28,
        &[0.95, 0.04, 0.01],
    );
    let varied = bar_set(&[0, 6, 0], 28, 500);
    let mut gen = bar_set(&[0, 0, 0], 28, 0);
    let one = bar_set(&[1, 0, 0], 28, 900);
    for _ in 0..6 {
        gen.push(one.image(0), 0);
    }
    for i in 0..varied.len() {
        gen.push(varied.image(i), 1);
    }
    let gp = st.root.join("gen-collapsed.safetensors");
    gen.write(&gp).unwrap();
    let o = filter(&[
        "--generated",
        s(&gp),
        "--judge",
        s(&judge),
        "--data",
        s(&st.data),
        "--out",
        s(&st.root.join("filtered")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("class `class0`: the generated images are collapsing: diversity 0.000"),
        "{err}"
    );
    assert!(
        !err.contains("class `class1`: the generated images are collapsing"),
        "{err}"
    );
}
