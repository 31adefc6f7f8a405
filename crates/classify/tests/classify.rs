//! End-to-end tests of `classify` on tiny bar images, on the CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rebalance_testkit::fixtures::bar_splits;
use serde_json::Value;

const CLASSIFY: &str = env!("CARGO_BIN_EXE_classify");

fn run(bin: &str, args: &[&str]) -> Output {
    let device: &[&str] = if args.first() == Some(&"compare") {
        &[]
    } else {
        &["--device", "cpu"]
    };
    Command::new(bin)
        .args(args)
        .args(device)
        .output()
        .expect("binary runs")
}

fn ok(bin: &str, args: &[&str]) -> String {
    let o = run(bin, args);
    assert!(
        o.status.success(),
        "{bin} {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(bin: &str, args: &[&str]) -> String {
    let o = run(bin, args);
    // An error exit (1), not a panic (101) or a signal.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{bin} {args:?} should fail cleanly: {o:?}"
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn data(root: &Path) -> PathBuf {
    let d = root.join("dataset");
    bar_splits(&d, &[24, 4, 24], 8, 10, 28).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn trains_with_seeds_and_writes_the_contract_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let out = tmp.path().join("judge");
    let train = d.join("train.safetensors");
    let stdout = ok(
        CLASSIFY,
        &[
            "--train",
            s(&train),
            "--data",
            s(&d),
            "--out",
            s(&out),
            "--epochs",
            "6",
            "--seeds",
            "2",
            "--batch",
            "16",
            "--quiet",
        ],
    );
    assert!(stdout.contains("macro-F1"), "{stdout}");
    for f in [
        "model.safetensors",
        "config.json",
        "metrics.json",
        "confusion.csv",
        "confusion.png",
        "curves.csv",
        "curves.svg",
        "summary.txt",
        "manifest.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m = json(&out.join("metrics.json"));
    let runs = m["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(m["seeds"], serde_json::json!([42, 43]));
    assert_eq!(m["rare_classes"], serde_json::json!(["class1"]));
    // The mean is the mean of the seeds' test metrics; every test image is counted once.
    let f1: Vec<f64> = runs
        .iter()
        .map(|r| r["test"]["macro_f1"].as_f64().unwrap())
        .collect();
    let mean = m["test"]["mean"]["macro_f1"].as_f64().unwrap();
    assert!((mean - (f1[0] + f1[1]) / 2.0).abs() < 1e-12);
    for r in runs {
        assert_eq!(r["test"]["n"], 30);
        let cm: Vec<Vec<u64>> = serde_json::from_value(r["test"]["confusion"].clone()).unwrap();
        assert_eq!(
            cm.iter()
                .map(|row| row.iter().sum::<u64>())
                .collect::<Vec<_>>(),
            [10, 10, 10]
        );
    }
    // Bars are easy: the classifier must learn them.
    assert!(mean > 0.8, "macro-F1 {mean}");
    let curves = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(
        curves.lines().count(),
        1 + runs
            .iter()
            .map(|r| r["epochs_run"].as_u64().unwrap() as usize)
            .sum::<usize>()
    );
    let man = json(&out.join("manifest.json"));
    assert_eq!(man["stage"], "classify");
    assert_eq!(man["inputs"].as_array().unwrap().len(), 3);
    // The saved model is loadable as a judge and agrees with the config.
    let judge = rebalance_nn::models::Judge::load(&out, tch::Device::Cpu).unwrap();
    assert_eq!(judge.config.classes, ["class0", "class1", "class2"]);
    // No work folder is left behind.
    assert!(!tmp.path().join(".judge.partial").exists());
}

#[test]
fn a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends() {
    killed_and_resumed(&[]);
}

/// The online recipe too: the draws, transforms and mixup of a resumed epoch are the ones an
/// uninterrupted run makes.
#[test]
fn a_killed_online_run_resumes_exactly() {
    killed_and_resumed(&["--recipe", "online-mixup"]);
}

fn killed_and_resumed(recipe: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let train = d.join("train.safetensors");
    let common = [
        &["--epochs", "30", "--patience", "0", "--batch", "8"][..],
        recipe,
    ]
    .concat();
    let whole = tmp.path().join("whole");
    ok(
        CLASSIFY,
        &[
            &[
                "--train",
                s(&train),
                "--data",
                s(&d),
                "--out",
                s(&whole),
                "--quiet",
            ][..],
            &common,
        ]
        .concat(),
    );

    let out = tmp.path().join("resumed");
    let ckpt = tmp
        .path()
        .join(".resumed.partial/seed-42/checkpoint.safetensors");
    let mut child = Command::new(CLASSIFY)
        .args([
            "--train",
            s(&train),
            "--data",
            s(&d),
            "--out",
            s(&out),
            "--quiet",
        ])
        .args(&common)
        .args(["--device", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ckpt.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(ckpt.exists(), "a checkpoint was written before the kill");
    assert!(
        !status.success() && !out.exists(),
        "killed before it finished: nothing published"
    );
    let o = run(
        CLASSIFY,
        &[
            &["--train", s(&train), "--data", s(&d), "--out", s(&out)][..],
            &common,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("resuming after epoch"), "{log}");
    let a = json(&whole.join("metrics.json"));
    let b = json(&out.join("metrics.json"));
    assert_eq!(
        a["runs"][0]["test"], b["runs"][0]["test"],
        "same test metrics after resume"
    );
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model.safetensors")).unwrap(),
        "same weights after resume"
    );
}

#[test]
fn classify_reads_the_augmented_set_and_never_touches_the_real_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let hash = |p: &Path| rebalance_core::hash::sha256_file(p).unwrap();
    let before: Vec<String> = ["train", "val", "test"]
        .iter()
        .map(|x| hash(&d.join(format!("{x}.safetensors"))))
        .collect();
    let art = tmp.path();
    // A rebalanced set where augment puts it (class1 repeated up to 24), then classify with defaults.
    let mut augmented = rebalance_core::ImageSet::read(&d.join("train.safetensors")).unwrap();
    let ones: Vec<usize> = (0..augmented.len())
        .filter(|&i| augmented.labels[i] == 1)
        .collect();
    for k in 0..24 - ones.len() {
        let px = augmented.image(ones[k % ones.len()]).to_vec();
        augmented.push(&px, 1);
    }
    augmented
        .write(&art.join("augmented/train.safetensors"))
        .unwrap();
    ok(
        CLASSIFY,
        &["--artifacts", s(art), "--epochs", "2", "--quiet"],
    );
    let after: Vec<String> = ["train", "val", "test"]
        .iter()
        .map(|x| hash(&d.join(format!("{x}.safetensors"))))
        .collect();
    assert_eq!(
        before, after,
        "the real splits are byte-identical after augment and classify"
    );
    let m = json(&art.join("classify/manifest.json"));
    let inputs: Vec<&str> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(
        inputs[0].ends_with("augmented/train.safetensors"),
        "{inputs:?}"
    );
}

#[test]
fn compare_writes_one_table_with_paired_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let train = d.join("train.safetensors");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(
        CLASSIFY,
        &[
            "--train",
            s(&train),
            "--data",
            s(&d),
            "--out",
            s(&a),
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--quiet",
        ],
    );
    ok(
        CLASSIFY,
        &[
            "--train",
            s(&train),
            "--data",
            s(&d),
            "--out",
            s(&b),
            "--epochs",
            "4",
            "--seeds",
            "2",
            "--class-weighted",
            "--quiet",
        ],
    );
    let cmp = tmp.path().join("cmp");
    let stdout = ok(
        CLASSIFY,
        &[
            "compare",
            &format!("short={}", s(&a)),
            &format!("weighted={}", s(&b)),
            "--out",
            s(&cmp),
        ],
    );
    for row in ["macro-F1", "recall of class1", "Δ macro-F1 vs short", "± "] {
        assert!(stdout.contains(row), "`{row}` missing:\n{stdout}");
    }
    let j = json(&cmp.join("comparison.json"));
    assert_eq!(j["baseline"], "short");
    assert_eq!(j["differences"][0]["n_seeds"], 2);
    assert!(cmp.join("comparison.csv").exists() && cmp.join("comparison.md").exists());
    let err = fails(
        CLASSIFY,
        &["compare", s(&a), "--baseline", "nope", "--out", s(&cmp)],
    );
    assert!(err.contains("`nope`"), "{err}");
    // One run spread over folders (one per GAN seed, say): a name given twice pools its seeds.
    let a2 = tmp.path().join("a2");
    let common = ["--data", s(&d), "--epochs", "1", "--quiet"];
    ok(
        CLASSIFY,
        &[
            &["--train", s(&train), "--out", s(&a2), "--seed", "44"][..],
            &common,
        ]
        .concat(),
    );
    let b2 = tmp.path().join("b2");
    ok(
        CLASSIFY,
        &[
            &["--train", s(&train), "--out", s(&b2), "--seed", "44"][..],
            &common,
        ]
        .concat(),
    );
    let pooled = tmp.path().join("pooled");
    ok(
        CLASSIFY,
        &[
            "compare",
            &format!("short={}", s(&a)),
            &format!("short={}", s(&a2)),
            &format!("weighted={}", s(&b)),
            &format!("weighted={}", s(&b2)),
            "--out",
            s(&pooled),
        ],
    );
    assert_eq!(
        json(&pooled.join("comparison.json"))["differences"][0]["n_seeds"],
        3
    );
    let err = fails(
        CLASSIFY,
        &[
            "compare",
            &format!("x={}", s(&a)),
            &format!("x={}", s(&a)),
            "--out",
            s(&pooled),
        ],
    );
    assert!(err.contains("seed 42 is in"), "{err}");
}

#[test]
fn bad_input_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let err = fails(CLASSIFY, &["--artifacts", s(tmp.path())]);
    assert!(
        err.contains("augmented/train.safetensors") && err.contains("augment"),
        "{err}"
    );
    // A training set of another image size than val/test.
    let other = tmp.path().join("other.safetensors");
    rebalance_testkit::fixtures::bar_set(&[5, 5, 5], 16, 0)
        .write(&other)
        .unwrap();
    let err = fails(CLASSIFY, &["--train", s(&other), "--data", s(&d)]);
    assert!(
        err.contains("val.safetensors") && err.contains("16×16"),
        "{err}"
    );
    let zero = tmp.path().join("zero.safetensors");
    std::fs::write(&zero, b"").unwrap();
    let err = fails(CLASSIFY, &["--train", s(&zero), "--data", s(&d)]);
    assert!(err.contains("zero.safetensors"), "{err}");
    // A class with no training image (issue 13): refused, naming the class and the way out.
    let empty = tmp.path().join("empty-class.safetensors");
    rebalance_testkit::fixtures::bar_set(&[5, 0, 5], 28, 0)
        .write(&empty)
        .unwrap();
    let err = fails(CLASSIFY, &["--train", s(&empty), "--data", s(&d)]);
    assert!(
        err.contains("empty-class.safetensors: class `class1` has no training image")
            && err.contains("--classes"),
        "{err}"
    );
}

#[test]
fn every_model_trains_on_colour_images_and_loads_as_a_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("rgb");
    // 32×32 RGB bars: the grey bar image in all three channels.
    for (split, n, offset) in [("train", 6, 0), ("val", 3, 1000), ("test", 3, 2000)] {
        let grey = rebalance_testkit::fixtures::bar_set(&[n, n, n], 32, offset);
        let mut rgb = rebalance_core::ImageSet::empty(grey.classes.clone(), 3, 32, 32);
        for i in 0..grey.len() {
            rgb.push(&grey.image(i).repeat(3), grey.labels[i]);
        }
        rgb.write(&d.join(format!("{split}.safetensors"))).unwrap();
    }
    for model in ["lenet5", "small-cnn", "resnet"] {
        let out = tmp.path().join(model);
        let train = d.join("train.safetensors");
        ok(
            CLASSIFY,
            &[
                "--train",
                s(&train),
                "--data",
                s(&d),
                "--out",
                s(&out),
                "--model",
                model,
                "--epochs",
                "2",
                "--quiet",
            ],
        );
        let judge = rebalance_nn::models::Judge::load(&out, tch::Device::Cpu).unwrap();
        let set = rebalance_core::ImageSet::read(&d.join("test.safetensors")).unwrap();
        let (x, _) = rebalance_nn::imageset_tensors(&set, tch::Device::Cpu);
        assert_eq!(
            judge.features(&x, 4).size(),
            [9, judge.config.feature_dim],
            "{model}"
        );
        let p = judge.probs(&x, 4);
        let sums = p.sum_dim_intlist(1, false, tch::Kind::Float);
        assert!(sums.allclose(
            &tch::Tensor::ones([9], (tch::Kind::Float, tch::Device::Cpu)),
            1e-5,
            1e-5,
            false
        ));
    }
}

/// `pipeline.toml`'s classify entries (judge, classify, baseline, rounds) must use real flags
/// with the clap defaults.
#[test]
fn pipeline_toml_matches_clap_defaults() {
    use clap::CommandFactory;
    let d = rebalance_testkit::fixtures::assert_pipeline_toml_matches(
        "classify",
        &["compare"],
        &classify::Cli::command(),
    );
    assert!(
        d.entries.len() >= 2 && d.checked.len() >= 5,
        "{:?}",
        d.checked
    );
}

#[test]
fn early_stopping_keeps_the_weights_of_the_best_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    // Training labels that say nothing about the images (a fixed scramble): validation
    // macro-F1 wanders, so early stopping ends the run some epochs after its best one.
    let mut noisy = rebalance_testkit::fixtures::bar_set(&[24, 24, 24], 28, 0);
    for (i, l) in noisy.labels.iter_mut().enumerate() {
        *l = ((i * 7 + i / 5) % 3) as i64;
    }
    let train = tmp.path().join("noisy.safetensors");
    noisy.write(&train).unwrap();
    let out = tmp.path().join("es");
    ok(
        CLASSIFY,
        &[
            "--train",
            s(&train),
            "--data",
            s(&d),
            "--out",
            s(&out),
            "--epochs",
            "15",
            "--patience",
            "2",
            "--batch",
            "16",
            "--quiet",
        ],
    );
    let r = json(&out.join("seed-42/result.json"));
    let (best, run) = (
        r["best_epoch"].as_u64().unwrap() as usize,
        r["epochs_run"].as_u64().unwrap() as usize,
    );
    assert_eq!(
        run,
        best + 2,
        "stopped {run} epochs in, best {best}, patience 2"
    );
    let mut rows = csv::Reader::from_path(out.join("curves.csv")).unwrap();
    let curve: Vec<rebalance_core::contract::classify::CurveRow> =
        rows.deserialize().map(|r| r.unwrap()).collect();
    assert_eq!(curve.len(), run);
    // The best epoch by the rule: highest val macro-F1, ties to the lower val loss.
    let top = curve
        .iter()
        .max_by(|a, b| {
            a.val_macro_f1
                .partial_cmp(&b.val_macro_f1)
                .unwrap()
                .then(b.val_loss.partial_cmp(&a.val_loss).unwrap())
                .then(b.epoch.cmp(&a.epoch))
        })
        .unwrap();
    assert_eq!(top.epoch, best);
    // The kept weights are that epoch's: evaluated again on val they give its numbers, not
    // the last epoch's.
    let val_loss = r["val"]["loss"].as_f64().unwrap();
    assert!(
        (val_loss - top.val_loss).abs() < 1e-5,
        "{val_loss} vs {top:?}"
    );
    assert!(
        (r["val"]["macro_f1"].as_f64().unwrap() - top.val_macro_f1).abs() < 1e-9,
        "{r}"
    );
    let last = curve.last().unwrap();
    assert!(
        (val_loss - last.val_loss).abs() > 1e-6,
        "the last epoch was kept"
    );
}

#[test]
fn tensorboard_reads_back_each_seeds_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let out = tmp.path().join("tb");
    ok(
        CLASSIFY,
        &[
            "--train",
            s(&d.join("train.safetensors")),
            "--data",
            s(&d),
            "--out",
            s(&out),
            "--epochs",
            "3",
            "--seeds",
            "2",
            "--batch",
            "16",
            "--quiet",
        ],
    );
    let mut rows = csv::Reader::from_path(out.join("curves.csv")).unwrap();
    let curve: Vec<rebalance_core::contract::classify::CurveRow> =
        rows.deserialize().map(|r| r.unwrap()).collect();
    for seed in [42u64, 43] {
        let tb =
            rebalance_testkit::fixtures::read_tensorboard(&out.join(format!("tb/seed-{seed}")));
        let mine: Vec<_> = curve.iter().filter(|r| r.seed == seed).collect();
        for (tag, get) in [
            (
                "train/loss",
                (|r: &rebalance_core::contract::classify::CurveRow| r.train_loss) as fn(&_) -> f64,
            ),
            ("val/macro_f1", |r| r.val_macro_f1),
            ("val/loss", |r| r.val_loss),
        ] {
            let got: Vec<(u64, f64)> = serde_json::from_value(tb["scalars"][tag].clone())
                .unwrap_or_else(|e| panic!("{tag}: {e}: {tb}"));
            assert_eq!(got.len(), mine.len(), "{tag}");
            for ((step, v), r) in got.iter().zip(&mine) {
                assert_eq!(*step as usize, r.epoch);
                assert!(
                    (v - get(r)).abs() < 1e-6,
                    "{tag} epoch {}: {v} vs {}",
                    r.epoch,
                    get(r)
                );
            }
        }
    }
}

/// `--candidates`: every recipe trains with the same seeds, the best mean val macro-F1 is chosen,
/// its outputs are the folder's; `real` is exactly a plain run; `--recipe-from` trains as the
/// chosen recipe.
#[test]
fn the_bar_is_chosen_on_validation_and_classify_trains_as_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let train = d.join("train.safetensors");
    let bar = tmp.path().join("bar");
    let common = ["--epochs", "3", "--batch", "16", "--seeds", "2", "--quiet"];
    let base = ["--train", s(&train), "--data", s(&d)];
    let stdout = ok(
        CLASSIFY,
        &[
            &base[..],
            &["--out", s(&bar), "--classical-train", s(&train)],
            &["--candidates", "real,online,classical,trivial"],
            &common,
        ]
        .concat(),
    );
    let sel = json(&bar.join("recipes.json"));
    let cands = sel["candidates"].as_array().unwrap();
    let names: Vec<&str> = cands.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["real", "online", "classical", "trivial"]);
    let val = |c: &Value| c["val"]["mean"]["macro_f1"].as_f64().unwrap();
    let best = cands
        .iter()
        .fold(&cands[0], |b, c| if val(c) > val(b) { c } else { b });
    assert_eq!(sel["chosen"], best["name"], "{sel}");
    let chosen = sel["chosen"].as_str().unwrap();
    assert!(stdout.contains(&format!("{chosen} (chosen)")), "{stdout}");
    for c in cands {
        assert_eq!(c["seeds"], serde_json::json!([42, 43]), "the same seeds");
        let own = json(
            &bar.join("recipes")
                .join(c["name"].as_str().unwrap())
                .join("metrics.json"),
        );
        assert_eq!(own["recipe"], c["recipe"]);
        assert_eq!(own["test"], c["test"]);
    }
    // The top level is the chosen recipe's.
    let top = json(&bar.join("metrics.json"));
    assert_eq!(
        top,
        json(&bar.join("recipes").join(chosen).join("metrics.json"))
    );
    assert_eq!(json(&bar.join("config.json"))["training"], best["recipe"]);
    assert_eq!(
        std::fs::read(bar.join("model.safetensors")).unwrap(),
        std::fs::read(bar.join("recipes").join(chosen).join("model.safetensors")).unwrap()
    );
    // `real` is a plain classify run, bit for bit.
    let plain = tmp.path().join("plain");
    ok(
        CLASSIFY,
        &[&base[..], &["--out", s(&plain)], &common].concat(),
    );
    assert_eq!(
        std::fs::read(plain.join("model.safetensors")).unwrap(),
        std::fs::read(bar.join("recipes/real/model.safetensors")).unwrap()
    );
    assert_eq!(json(&plain.join("metrics.json"))["test"], cands[0]["test"]);
    let m = json(&bar.join("manifest.json"));
    assert_eq!(m["metrics"]["recipe"], chosen);
    assert!(
        m["metrics"]["trivial/val_macro_f1"].as_f64().is_some(),
        "{m}"
    );
    // Trained as the chosen recipe trains.
    let follow = tmp.path().join("follow");
    ok(
        CLASSIFY,
        &[
            &base[..],
            &["--out", s(&follow), "--recipe-from", s(&bar)],
            &common,
        ]
        .concat(),
    );
    let r = &json(&follow.join("metrics.json"))["recipe"];
    for k in ["augment", "sampler", "loss", "mixup", "class_weighted"] {
        assert_eq!(r[k], best["recipe"][k], "{k}");
    }
    // Bad choices are refused by name.
    let e = fails(
        CLASSIFY,
        &[
            &base[..],
            &["--out", s(&follow), "--candidates", "real,classical"],
        ]
        .concat(),
    );
    assert!(e.contains("--classical-train"), "{e}");
    let e = fails(
        CLASSIFY,
        &[
            &base[..],
            &["--out", s(&follow), "--candidates", "real,nope"],
        ]
        .concat(),
    );
    assert!(e.contains("no recipe `nope`"), "{e}");
    let e = fails(
        CLASSIFY,
        &[
            &base[..],
            &["--out", s(&follow), "--candidates", "real,real"],
        ]
        .concat(),
    );
    assert!(e.contains("twice"), "{e}");
    let e = fails(
        CLASSIFY,
        &[&base[..], &["--out", s(&follow), "--recipe-from", s(&d)]].concat(),
    );
    assert!(
        e.contains("recipes.json") || e.contains("no recipe choice"),
        "{e}"
    );
}
