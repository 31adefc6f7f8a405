//! End-to-end tests of `gan-train` on a tiny synthetic set with tiny nets, on the CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rebalance_core::ImageSet;
use rebalance_nn::io::read_safetensors;
use tch::Device;

const BIN: &str = env!("CARGO_BIN_EXE_gan-train");
const TINY: &[&str] = &[
    "--g-width",
    "8",
    "--d-width",
    "8",
    "--z-dim",
    "16",
    "--embed-dim",
    "8",
    "--batch",
    "8",
    "--threads",
    "1",
    "--quiet",
];

/// 3 classes of 16x16 grey images: a bright bar at row 3, 8 or 13, with a little noise.
fn dataset(root: &Path, side: usize) -> PathBuf {
    let mut set = ImageSet::empty(vec!["a".into(), "b".into(), "c".into()], 1, side, side);
    for c in 0..3 {
        for i in 0..(if c == 1 { 4 } else { 12 }) {
            let mut px = vec![0u8; side * side];
            let row = (3 + 5 * c) % side;
            for x in 0..side {
                px[row * side + x] = 255;
                px[((i * 7 + x * 3) % (side * side)).min(side * side - 1)] = 60;
            }
            set.push(&px, c as i64);
        }
    }
    let p = root.join("dataset/train.safetensors");
    set.write(&p).unwrap();
    p
}

fn gan(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(TINY)
        .args(["--artifacts", root.to_str().unwrap()])
        .output()
        .unwrap()
}

fn ok(root: &Path, args: &[&str]) {
    let o = gan(root, args);
    assert!(
        o.status.success(),
        "gan-train {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn err(root: &Path, args: &[&str]) -> String {
    let o = gan(root, args);
    assert!(!o.status.success(), "gan-train {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn losses(out: &Path) -> Vec<Vec<f64>> {
    let mut r = csv::Reader::from_path(out.join("losses.csv")).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn every_model_trains_with_finite_losses() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    for model in ["dcgan", "cgan", "wgan-gp", "dagan"] {
        let out = tmp.path().join(model);
        ok(
            tmp.path(),
            &[
                "--model",
                model,
                "--steps",
                "6",
                "--log-every",
                "2",
                "--sample-every",
                "3",
                "--out",
                out.to_str().unwrap(),
                "--diffaug",
                "color,translation,cutout",
            ],
        );
        let rows = losses(&out);
        assert_eq!(
            rows.iter().map(|r| r[0] as u64).collect::<Vec<_>>(),
            vec![2, 4, 6],
            "{model}"
        );
        assert!(
            rows.iter().flatten().all(|v| v.is_finite()),
            "{model}: {rows:?}"
        );
        for f in [
            "generator.safetensors",
            "config.json",
            "manifest.json",
            "losses.svg",
            "samples/real.png",
            "samples/step_000006.png",
            "checkpoints/latest.safetensors",
        ] {
            assert!(out.join(f).exists(), "{model}: no {f}");
        }
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["metrics"]["steps"], 6);
        assert_eq!(m["config"]["model"], model);
        // dagan learns from pairs of the common classes (a, c), not the rare b.
        let trained = if model == "dagan" {
            vec![0, 2]
        } else {
            vec![0, 1, 2]
        };
        assert_eq!(
            m["config"]["trained_classes"],
            serde_json::json!(trained),
            "{model}"
        );
        assert!(!tmp.path().join(format!(".{model}.partial")).exists());
    }
}

fn assert_same_checkpoints(a: &Path, b: &Path) {
    let (ta, ma) =
        read_safetensors(&a.join("checkpoints/latest.safetensors"), Device::Cpu).unwrap();
    let (tb, mb) =
        read_safetensors(&b.join("checkpoints/latest.safetensors"), Device::Cpu).unwrap();
    assert_eq!(ma["step"], mb["step"]);
    assert_eq!(ta.len(), tb.len());
    for (name, t) in &ta {
        assert!(t.equal(&tb[name]), "tensor {name} differs after resume");
    }
    assert!(
        ta.keys().any(|k| k.starts_with("opt_g.m.")) && ta.keys().any(|k| k.starts_with("ema."))
    );
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let diverse = ["--minibatch-std", "--mode-seeking", "1"];
    let stable = ["--spectral-norm", "--loss", "hinge", "--transition", "1,3"];
    let judge = random_judge(&tmp.path().join("judge"), 16);
    let warm = ["--warmup-steps", "3", "--judge", s(&judge)];
    let cbn = ["--conditioning", "cbn", "--transition", "1,3"];
    // Issue 25's levers: CBN with a faster rate for its class terms, the judge's auxiliary
    // classifier term, DAGAN's mode-seeking cap by the source's real partner, and real
    // batches under classify's online augmentation.
    let cbn_lr = ["--conditioning", "cbn", "--cbn-lr-mult", "10"];
    let ac = ["--ac-weight", "0.5", "--judge", s(&judge)];
    let src_cap = [
        "--minibatch-std",
        "--mode-seeking",
        "1",
        "--ms-cap",
        "source",
    ];
    let online = ["--real-augment", "affine+elastic"];
    let plain = ["--minibatch-std", "false", "--mode-seeking", "0"];
    for (name, model, flags) in [
        ("cgan", "cgan", &plain[..]),
        ("default", "cgan", &[][..]),
        ("cbn-lr", "cgan", &cbn_lr[..]),
        ("ac", "cgan", &ac[..]),
        ("dagan-source-cap", "dagan", &src_cap[..]),
        ("real-augment", "cgan", &online[..]),
        ("wgan-gp", "wgan-gp", &[][..]),
        ("msgan", "cgan", &diverse[..]),
        ("sn-hinge-transition", "cgan", &stable[..]),
        ("warmup", "cgan", &warm[..]),
        ("cbn", "cgan", &cbn[..]),
        ("dagan", "dagan", &diverse[..]),
    ] {
        let full = tmp.path().join(format!("{name}-full"));
        let split = tmp.path().join(format!("{name}-split"));
        let common = [
            "--model",
            model,
            "--diffaug",
            "color,translation,cutout",
            "--log-every",
            "2",
            "--checkpoint-every",
            "4",
        ];
        let run = |out: &Path, extra: &[&str]| {
            let mut a: Vec<&str> = common.to_vec();
            a.extend(flags);
            a.extend(["--out", out.to_str().unwrap()]);
            a.extend(extra);
            ok(tmp.path(), &a);
        };
        run(&full, &["--steps", "8"]);
        run(&split, &["--steps", "4"]);
        run(&split, &["--steps", "8", "--resume", "latest"]);
        assert_same_checkpoints(&full, &split);
        // The losses log continues where it stopped.
        let steps: Vec<u64> = losses(&split).iter().map(|r| r[0] as u64).collect();
        assert_eq!(steps, vec![2, 4, 6, 8]);
        // And the trained generator generates (dagan: the rare class b, from its real images).
        let gen = tmp.path().join(format!("{name}-generated"));
        let g = Command::new(BIN)
            .args([
                "generate",
                "--from",
                s(&split),
                "--per-class",
                "3",
                "--quiet",
            ])
            .args(["--artifacts", s(tmp.path()), "--out", s(&gen)])
            .output()
            .unwrap();
        assert!(
            g.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&g.stderr)
        );
        let set = ImageSet::read(&gen.join("generated.safetensors")).unwrap();
        let want = if model == "dagan" {
            vec![1i64; 3]
        } else {
            [[0i64; 3], [1; 3], [2; 3]].concat()
        };
        assert_eq!(set.labels, want, "{name}");
    }
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let out = tmp.path().join("gan");
    let mut child = Command::new(BIN)
        .args([
            "--steps",
            "100000",
            "--checkpoint-every",
            "3",
            "--log-every",
            "3",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(TINY)
        .args(["--artifacts", tmp.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    let ckpt = tmp
        .path()
        .join(".gan.partial/checkpoints/latest.safetensors");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "an unfinished run is never swapped into the output folder"
    );
    let (_, meta) = read_safetensors(&ckpt, Device::Cpu).unwrap();
    let k: u64 = meta["step"].parse().unwrap();
    assert!(k >= 3 && k.is_multiple_of(3), "checkpoint at step {k}");
    let target = (k + 3).to_string();
    // Another command (other --steps) does not resume the interrupted run without --resume.
    assert!(
        std::fs::read_to_string(tmp.path().join(".gan.partial/.run-key.json"))
            .unwrap()
            .contains("100000")
    );
    ok(
        tmp.path(),
        &[
            "--steps",
            &target,
            "--checkpoint-every",
            "3",
            "--log-every",
            "3",
            "--resume",
            "latest",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["metrics"]["steps"], k + 3);
    assert_eq!(m["metrics"]["steps_this_run"], 3);
    assert!(!tmp.path().join(".gan.partial").exists());
}

#[test]
fn generation_gives_requested_counts_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    ok(tmp.path(), &["--steps", "4"]);
    let o = Command::new(BIN)
        .args([
            "generate",
            "--per-class",
            "7",
            "--classes",
            "a,c",
            "--png",
            "--artifacts",
            tmp.path().to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gen = tmp.path().join("generated");
    let set = ImageSet::read(&gen.join("generated.safetensors")).unwrap();
    assert_eq!(set.classes, vec!["a", "b", "c"]);
    assert_eq!(set.labels, [vec![0i64; 7], vec![2i64; 7]].concat());
    assert_eq!((set.channels, set.height, set.width), (1, 16, 16));
    assert_eq!(std::fs::read_dir(gen.join("png/a")).unwrap().count(), 7);
    assert_eq!(std::fs::read_dir(gen.join("png/c")).unwrap().count(), 7);
    assert!(gen.join("grid.png").exists() && gen.join("manifest.json").exists());
    // From a checkpoint file too (its EMA weights).
    let o = Command::new(BIN)
        .args([
            "generate",
            "--per-class",
            "2",
            "--from",
            tmp.path()
                .join("gan/checkpoints/latest.safetensors")
                .to_str()
                .unwrap(),
            "--out",
            tmp.path().join("g2").to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        ImageSet::read(&tmp.path().join("g2/generated.safetensors"))
            .unwrap()
            .len(),
        6
    );
    // A class outside the dataset is named.
    let o = Command::new(BIN)
        .args([
            "generate",
            "--classes",
            "zebra",
            "--artifacts",
            tmp.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("class `zebra` is not in the dataset; its classes are a, b, c"),
        "{e}"
    );
}

#[test]
fn bad_configurations_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    // No dataset yet: say what to run.
    let e = err(tmp.path(), &["--steps", "2"]);
    assert!(
        e.contains("no training set") && e.contains("just ingest"),
        "{e}"
    );
    dataset(tmp.path(), 16);
    let e = err(tmp.path(), &["--class", "zebra", "--steps", "2"]);
    assert!(
        e.contains("class `zebra` is not in the dataset; its classes are a, b, c"),
        "{e}"
    );
    // A checkpoint of another architecture is refused, naming both.
    let other = tmp.path().join("other");
    ok(
        tmp.path(),
        &[
            "--steps",
            "2",
            "--out",
            other.to_str().unwrap(),
            "--model",
            "wgan-gp",
        ],
    );
    let ck = other.join("checkpoints/latest.safetensors");
    let e = err(
        tmp.path(),
        &["--steps", "4", "--resume", ck.to_str().unwrap()],
    );
    assert!(
        e.contains("another architecture (wgan-gp 1x16x16")
            && e.contains("this run is cgan 1x16x16"),
        "{e}"
    );
    let e = err(
        tmp.path(),
        &["--steps", "4", "--init", ck.to_str().unwrap()],
    );
    assert!(e.contains("another architecture"), "{e}");
    let e = err(
        tmp.path(),
        &[
            "--resume",
            "latest",
            "--out",
            tmp.path().join("none").to_str().unwrap(),
        ],
    );
    assert!(e.contains("--resume latest: no checkpoint"), "{e}");
    // A dataset at a size the networks cannot take.
    let odd = tempfile::tempdir().unwrap();
    let mut set = ImageSet::empty(vec!["a".into()], 1, 10, 12);
    set.push(&[0u8; 120], 0);
    set.write(&odd.path().join("dataset/train.safetensors"))
        .unwrap();
    let e = err(odd.path(), &["--steps", "2"]);
    assert!(e.contains("10x12") && e.contains("square"), "{e}");
    // A pooled dcgan has no classes to generate.
    ok(
        tmp.path(),
        &[
            "--model",
            "dcgan",
            "--steps",
            "2",
            "--out",
            tmp.path().join("dc").to_str().unwrap(),
        ],
    );
    let o = Command::new(BIN)
        .args([
            "generate",
            "--from",
            tmp.path().join("dc").to_str().unwrap(),
            "--artifacts",
            tmp.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("trained on 3 classes pooled"),
        "{e}"
    );
    // The stabilisers' flags are checked against the model and the run length.
    for (args, says) in [
        (
            &["--model", "dcgan", "--transition", "1,2", "--steps", "4"][..],
            "--transition fades the label in, but dcgan takes no label",
        ),
        (
            &["--transition", "2,9", "--steps", "4"][..],
            "END is past --steps 4",
        ),
        (
            &["--transition", "3,2"][..],
            "END (2) must be after START (3)",
        ),
        (&["--transition", "3"][..], "is not START,END"),
        (
            &["--model", "wgan-gp", "--loss", "hinge"][..],
            "wgan-gp has its own (Wasserstein) loss",
        ),
        (
            &["--model", "dagan", "--class", "b", "--steps", "2"][..],
            "",
        ),
    ] {
        if says.is_empty() {
            ok(
                tmp.path(),
                &[args, &["--out", s(&tmp.path().join("db"))]].concat(),
            );
        } else {
            let e = err(tmp.path(), args);
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
    // dagan needs a class with two images to pair.
    let one = tempfile::tempdir().unwrap();
    let mut set = ImageSet::empty(vec!["a".into(), "b".into()], 1, 16, 16);
    set.push(&[0u8; 256], 0);
    set.push(&[9u8; 256], 1);
    set.write(&one.path().join("dataset/train.safetensors"))
        .unwrap();
    let e = err(one.path(), &["--model", "dagan", "--steps", "2"]);
    assert!(
        e.contains("no chosen class has 2 or more training images"),
        "{e}"
    );
}

#[test]
fn diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let out = tmp.path().join("gan");
    // Train a little, then continue with absurd learning rates that overflow to inf/NaN.
    ok(
        tmp.path(),
        &["--steps", "2", "--out", out.to_str().unwrap()],
    );
    let e = err(
        tmp.path(),
        &[
            "--steps",
            "40",
            "--resume",
            "latest",
            "--lr-g",
            "1e38",
            "--lr-d",
            "1e38",
            "--stop-on-failure",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        e.contains("stopped on failure")
            && e.contains("not finite")
            && e.contains("last good checkpoint (step 2)"),
        "{e}"
    );
    let (t, meta) = read_safetensors(
        &tmp.path()
            .join(".gan.partial/checkpoints/latest.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(meta["step"], "2");
    assert!(t.values().all(|x| x.isfinite().all().int64_value(&[]) == 1));
}

/// `pipeline.toml`'s gan-train entries (gan-train, gan-finetune) must use real flags with the
/// clap defaults.
#[test]
fn pipeline_toml_matches_clap_defaults() {
    use clap::CommandFactory;
    let d = rebalance_testkit::fixtures::assert_pipeline_toml_matches(
        "gan-train",
        &["generate"],
        &gan_train::Cli::command(),
    );
    assert_eq!(d.entries, ["gan-finetune", "gan-train"]);
    // gan-train: model, from, to, steps, batch, seed, checkpoint_every, device, minibatch_std,
    // mode_seeking, artifacts; gan-finetune: model, batch, seed, device, minibatch_std,
    // mode_seeking, artifacts (per_class_gans has no clap default).
    assert_eq!(d.checked.len(), 18, "{:?}", d.checked);
}

/// Start gan-train, SIGKILL it once its first checkpoint is on disk; the checkpoint's step.
fn kill_after_first_checkpoint(args: &[String], ckpt: &Path) -> u64 {
    let _ = std::fs::remove_file(ckpt);
    let mut child = Command::new(BIN).args(args).spawn().unwrap();
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (_, meta) = read_safetensors(ckpt, Device::Cpu).unwrap();
    meta["step"].parse().unwrap()
}

/// Run gan-train to the end with info logging; (stderr, manifest).
fn run_to_end(args: &[String], out: &Path) -> (String, serde_json::Value) {
    let o = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let m = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    (err, m)
}

/// The same command run again after a kill resumes by itself (what the pipeline runner does).
#[test]
fn the_same_command_after_a_kill_resumes_without_asking() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let out = tmp.path().join("gan");
    let args: Vec<String> = [
        "--steps",
        "1500",
        "--checkpoint-every",
        "3",
        "--log-every",
        "3",
        "--sample-every",
        "100000",
        "--out",
        out.to_str().unwrap(),
        "--artifacts",
        tmp.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(TINY.iter().map(|s| s.to_string()))
    .collect();
    let ckpt = tmp
        .path()
        .join(".gan.partial/checkpoints/latest.safetensors");
    let k = kill_after_first_checkpoint(&args, &ckpt);
    assert!(!out.exists(), "the first run was killed before it finished");
    let (err, m) = run_to_end(&args, &out);
    assert!(
        err.contains("interrupted run of this same command: resuming"),
        "{err}"
    );
    assert_eq!(m["metrics"]["steps"], 1500);
    assert_eq!(
        m["metrics"]["steps_this_run"],
        1500 - k,
        "resumed from step {k}"
    );
    assert!(!tmp.path().join(".gan.partial").exists());

    // Another command (another seed): the interrupted run is not resumed.
    let mut other = args.clone();
    other.extend(["--seed".to_string(), "7".to_string()]);
    kill_after_first_checkpoint(&other, &ckpt);
    let (err, m) = run_to_end(&args, &out);
    assert!(
        err.contains("of another command or data; starting afresh"),
        "{err}"
    );
    assert_eq!(m["metrics"]["steps_this_run"], 1500);
}

/// `gan-finetune`'s case: a run started with `--init`, killed, and run again with the same
/// command resumes its own fine-tuning; `--init` is not applied over the resumed weights.
#[test]
fn a_killed_init_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let base = tmp.path().join("base");
    ok(
        tmp.path(),
        &["--steps", "6", "--out", base.to_str().unwrap()],
    );
    let init = base.join("checkpoints/latest.safetensors");
    let args = |out: &Path| -> Vec<String> {
        [
            "--steps",
            "900",
            "--checkpoint-every",
            "3",
            "--log-every",
            "3",
            "--sample-every",
            "100000",
            "--init",
            init.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--artifacts",
            tmp.path().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(TINY.iter().map(|s| s.to_string()))
        .collect()
    };
    let full = tmp.path().join("full");
    run_to_end(&args(&full), &full);
    let split = tmp.path().join("split");
    let ckpt = tmp
        .path()
        .join(".split.partial/checkpoints/latest.safetensors");
    let k = kill_after_first_checkpoint(&args(&split), &ckpt);
    assert!(
        !split.exists(),
        "the first run was killed before it finished"
    );
    let (err, m) = run_to_end(&args(&split), &split);
    assert!(err.contains("is not applied again"), "{err}");
    assert_eq!(
        m["metrics"]["steps_this_run"],
        900 - k,
        "resumed from step {k}"
    );
    assert_same_checkpoints(&full, &split);
    let (ga, _) = read_safetensors(&full.join("generator.safetensors"), Device::Cpu).unwrap();
    let (gb, _) = read_safetensors(&split.join("generator.safetensors"), Device::Cpu).unwrap();
    for (name, t) in &ga {
        assert!(t.equal(&gb[name]), "generator tensor {name} differs");
    }
}

/// With a minibatch-std D and the mode-seeking term, a short run trains with finite losses,
/// records the architecture, and its generator gives distinct images for distinct noise in every
/// class; a checkpoint of the plain cgan does not fit it.
#[test]
fn mode_seeking_generator_varies_with_z() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let out = tmp.path().join("gan");
    let o = s(&out);
    ok(
        tmp.path(),
        &[
            "--steps",
            "12",
            "--minibatch-std",
            "--mode-seeking",
            "1",
            "--out",
            o,
        ],
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["config"]["minibatch_std"], true);
    for row in losses(&out) {
        assert!(row.iter().all(|v| v.is_finite()), "{row:?}");
    }
    let gen = tmp.path().join("generated");
    let g = Command::new(BIN)
        .args(["generate", "--from", o, "--per-class", "6", "--quiet"])
        .args(["--out", s(&gen)])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let set = ImageSet::read(&gen.join("generated.safetensors")).unwrap();
    for c in 0..3 {
        let imgs: Vec<&[u8]> = (0..set.len())
            .filter(|&i| set.labels[i] == c)
            .map(|i| set.image(i))
            .collect();
        assert_eq!(imgs.len(), 6);
        for i in 0..imgs.len() {
            for j in i + 1..imgs.len() {
                assert_ne!(
                    imgs[i], imgs[j],
                    "class {c}: images {i} and {j} are the same"
                );
            }
        }
    }
    let plain = tmp.path().join("plain");
    ok(tmp.path(), &["--steps", "2", "--out", s(&plain)]);
    let e = err(
        tmp.path(),
        &[
            "--steps",
            "4",
            "--minibatch-std",
            "--init",
            s(&plain.join("checkpoints/latest.safetensors")),
        ],
    );
    assert!(
        e.contains("this run is cgan 1x16x16, z 16, G width 8, D width 8 + minibatch std"),
        "{e}"
    );
}

/// A LeNet-5 judge with its initial random weights, for the warm-up's feature space.
fn random_judge(dir: &Path, side: i64) -> PathBuf {
    use rebalance_nn::models::{judge, Classifier, ClassifierConfig, ClassifierKind};
    let cfg = ClassifierConfig::new(
        ClassifierKind::Lenet5,
        1,
        side,
        side,
        vec!["a".into(), "b".into(), "c".into()],
    )
    .unwrap();
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _model = Classifier::new(&vs.root(), &cfg);
    std::fs::create_dir_all(dir).unwrap();
    judge::save(dir, &vs, &cfg).unwrap();
    dir.to_path_buf()
}

#[test]
fn warmup_steps_train_g_alone_then_the_gan() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let judge = random_judge(&tmp.path().join("judge"), 16);
    let out = tmp.path().join("gan");
    ok(
        tmp.path(),
        &[
            "--steps",
            "8",
            "--warmup-steps",
            "4",
            "--judge",
            s(&judge),
            "--log-every",
            "2",
            "--out",
            s(&out),
        ],
    );
    let rows = losses(&out);
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(r.iter().all(|v| v.is_finite()), "{r:?}");
        // Columns: step, D loss real, D loss fake, G loss, D acc real/fake, gp, images/s.
        let warmup = r[0] <= 4.0;
        assert_eq!(r[1] == 0.0 && r[2] == 0.0, warmup, "{r:?}");
        assert!(r[3] > 0.0, "{r:?}");
    }
    // The warm-up needs a judge of this dataset's classes and shape.
    let e = err(tmp.path(), &["--steps", "8", "--warmup-steps", "4"]);
    assert!(e.contains("--judge"), "{e}");
    let other = random_judge(&tmp.path().join("judge24"), 24);
    let e = err(
        tmp.path(),
        &["--steps", "8", "--warmup-steps", "4", "--judge", s(&other)],
    );
    assert!(e.contains("the judge") && e.contains("24"), "{e}");
    let e = err(
        tmp.path(),
        &["--steps", "4", "--warmup-steps", "4", "--judge", s(&judge)],
    );
    assert!(
        e.contains("--warmup-steps 4 leaves no adversarial step"),
        "{e}"
    );
}

#[test]
fn dagan_varies_each_rare_image_with_z() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let out = tmp.path().join("gan");
    ok(
        tmp.path(),
        &["--model", "dagan", "--steps", "6", "--out", s(&out)],
    );
    let gen = tmp.path().join("generated");
    let g = Command::new(BIN)
        .args(["generate", "--from", s(&out), "--per-class", "8", "--quiet"])
        .args(["--artifacts", s(tmp.path()), "--out", s(&gen)])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    // By default the rare class b (4 real images), each image varied twice.
    let set = ImageSet::read(&gen.join("generated.safetensors")).unwrap();
    assert_eq!(set.labels, vec![1i64; 8]);
    for i in 0..4 {
        assert_ne!(
            set.image(i),
            set.image(i + 4),
            "image {i}: the same source with other noise gave the same image"
        );
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["inputs"].as_array().unwrap().len(),
        2,
        "weights and source set"
    );
    // Any class with images can be varied; one without is named.
    let g = Command::new(BIN)
        .args([
            "generate",
            "--from",
            s(&out),
            "--per-class",
            "3",
            "--classes",
            "a,b",
        ])
        .args([
            "--artifacts",
            s(tmp.path()),
            "--out",
            s(&tmp.path().join("g2")),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let set = ImageSet::read(&tmp.path().join("g2/generated.safetensors")).unwrap();
    assert_eq!(set.labels, vec![0, 0, 0, 1, 1, 1]);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_discriminator_at_its_loss_floor_is_reported_and_can_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 16);
    let out = tmp.path().join("won");
    // G barely learns and D sees raw images: D drives its loss to the floor that label
    // smoothing 0.9 leaves, -(0.9 ln 0.9 + 0.1 ln 0.1) on real images, and ~0 on fakes.
    let args = [
        "--steps",
        "300",
        "--lr-g",
        "1e-9",
        "--lr-d",
        "0.005",
        "--diffaug",
        "none",
        "--log-every",
        "2",
        "--d-zero-patience",
        "3",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ];
    let o = gan(tmp.path(), &args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let warn = "D loss has been near 0 for 3 log steps: D has won";
    let line = stderr
        .lines()
        .find(|l| l.contains(warn))
        .unwrap_or_else(|| panic!("no D-won warning:\n{stderr}"));
    let step: f64 = line
        .split("step ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .parse()
        .unwrap();
    // The warning agrees with losses.csv: the 3 log steps up to it sit within 0.01 of the
    // floor, and the one before them does not.
    let floor = -(0.9f64 * 0.9f64.ln() + 0.1 * 0.1f64.ln());
    let rows = losses(&out);
    let at = rows.iter().position(|r| r[0] == step).unwrap();
    assert!(at >= 3, "fired at the first rows: {step}");
    for r in &rows[at - 2..=at] {
        assert!(r[1] - floor + r[2] < 0.01, "step {}: {r:?}", r[0]);
    }
    let before = &rows[at - 3];
    assert!(before[1] - floor + before[2] >= 0.01, "{before:?}");
    // With --stop-on-failure the same run ends there, naming the failure.
    let mut stop = args.to_vec();
    stop.push("--stop-on-failure");
    let out2 = tmp.path().join("won2");
    let n = stop.len();
    stop[n - 2] = s(&out2);
    let e = err(tmp.path(), &stop);
    assert!(
        e.contains(&format!("stopped on failure: step {step}: {warn}")),
        "{e}"
    );
}

#[test]
fn tensorboard_reads_back_the_losses_and_the_sample_grids() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 16);
    let out = tmp.path().join("tb");
    ok(
        tmp.path(),
        &[
            "--steps",
            "20",
            "--log-every",
            "5",
            "--sample-every",
            "10",
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
    );
    let tb = rebalance_testkit::fixtures::read_tensorboard(&out.join("tb"));
    // Every losses.csv row is there, step for step, as float32.
    let rows = losses(&out);
    let d_real = tb["scalars"]["loss/d_real"].as_array().unwrap();
    assert_eq!(d_real.len(), rows.len());
    for (r, e) in rows.iter().zip(d_real) {
        assert_eq!(e[0].as_f64().unwrap(), r[0]);
        assert!(
            (e[1].as_f64().unwrap() - r[1]).abs() < 1e-6,
            "{e:?} vs {r:?}"
        );
    }
    for tag in [
        "loss/g",
        "loss/d_fake",
        "d_accuracy/real",
        "diversity/generated",
    ] {
        assert!(tb["scalars"][tag].is_array(), "{tag} missing: {tb}");
    }
    // The sample grids, at the sample steps, the size of samples/step_*.png.
    let grid = image::open(out.join("samples/step_000020.png")).unwrap();
    let samples: Vec<Vec<u64>> = serde_json::from_value(tb["images"]["samples"].clone()).unwrap();
    assert_eq!(
        samples,
        [
            vec![10, grid.width() as u64, grid.height() as u64],
            vec![20, grid.width() as u64, grid.height() as u64]
        ]
    );
}

/// cyclegan: the cycle error falls, the translations carry class B's label, and a killed run
/// resumed by the same command ends bit-identical to an uninterrupted one.
#[test]
fn cyclegan_translates_a_into_b_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path(), 16);
    let root = tmp.path().to_str().unwrap().to_string();
    let run_args = |out: &Path, steps: &str| -> Vec<String> {
        [
            "--model",
            "cyclegan",
            "--steps",
            steps,
            "--checkpoint-every",
            "25",
            "--log-every",
            "25",
            "--sample-every",
            "100",
            "--out",
            out.to_str().unwrap(),
            "--artifacts",
            &root,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(TINY.iter().map(|s| s.to_string()))
        .collect()
    };
    let full = tmp.path().join("full");
    let (log, m) = run_to_end(&run_args(&full, "300"), &full);
    // auto: into the class with the fewest images (b), from the one with the most (a).
    assert!(
        log.contains("cyclegan: a (12 images) → b (4 images)"),
        "{log}"
    );
    assert_eq!(m["config"]["trained_classes"], serde_json::json!([0, 1]));
    let mut r = csv::Reader::from_path(full.join("cycle.csv")).unwrap();
    let rows: Vec<Vec<f64>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 12);
    let cycle = |r: &Vec<f64>| r[1] + r[2];
    assert!(
        cycle(&rows[11]) < 0.5 * cycle(&rows[0]),
        "cycle error should fall: {:?}",
        rows.iter().map(cycle).collect::<Vec<_>>()
    );
    assert!(full.join("samples/translation.png").is_file());

    // Killed after its first checkpoint and run again: the same weights, optimizer state and
    // history pools as the uninterrupted run.
    let split = tmp.path().join("split");
    let args = run_args(&split, "300");
    let k = kill_after_first_checkpoint(
        &args,
        &tmp.path()
            .join(".split.partial/checkpoints/latest.safetensors"),
    );
    let (log, m) = run_to_end(&args, &split);
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(m["metrics"]["steps_this_run"], 300 - k);
    let (ta, _) =
        read_safetensors(&full.join("checkpoints/latest.safetensors"), Device::Cpu).unwrap();
    let (tb, _) =
        read_safetensors(&split.join("checkpoints/latest.safetensors"), Device::Cpu).unwrap();
    assert_eq!(ta.len(), tb.len());
    assert!(
        ta.keys().any(|k| k.starts_with("pool.")) && ta.keys().any(|k| k.starts_with("opt_d.m."))
    );
    for (name, t) in &ta {
        assert!(t.equal(&tb[name]), "tensor {name} differs after resume");
    }

    // generate translates every training image of a (12) into b, labelled b.
    let gen = tmp.path().join("generated");
    let o = Command::new(BIN)
        .args([
            "generate",
            "--from",
            full.to_str().unwrap(),
            "--per-class",
            "100",
        ])
        .args(["--data", &format!("{root}/dataset/train.safetensors")])
        .args(["--out", gen.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let set = ImageSet::read(&gen.join("generated.safetensors")).unwrap();
    assert_eq!(set.len(), 12);
    assert!(
        set.labels.iter().all(|&l| l == 1),
        "every translation is labelled b"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gen.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["counts"], serde_json::json!({"b": 12}));

    // Wrong use says what to do.
    let e = err(
        tmp.path(),
        &[
            "--model", "cyclegan", "--from", "a", "--to", "a", "--steps", "2",
        ],
    );
    assert!(e.contains("--from and --to are both class a"), "{e}");
    let e = err(
        tmp.path(),
        &["--model", "cyclegan", "--to", "zebra", "--steps", "2"],
    );
    assert!(e.contains("--to zebra") && e.contains("zebra"), "{e}");
    let e = err(
        tmp.path(),
        &["--model", "cgan", "--from", "a", "--steps", "2"],
    );
    assert!(e.contains("add --model cyclegan"), "{e}");
}

/// `generate` into `<root>/<out>` from `<root>/<from>`; the image set.
fn generate(root: &Path, from: &str, out: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["generate", "--per-class", "5", "--quiet", "--from"])
        .arg(root.join(from))
        .arg("--out")
        .arg(root.join(out))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn per_class_gans_train_alone_or_as_array_tasks_alike_and_generate_each_class() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    dataset(root, 16);
    let base = [
        "--model",
        "dcgan",
        "--steps",
        "6",
        "--per-class-gans",
        "a,c",
    ];
    // One process, the classes one after another.
    ok(
        root,
        &[&base[..], &["--out", root.join("one").to_str().unwrap()]].concat(),
    );
    let one = root.join("one");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("classes.json")).unwrap()).unwrap();
    assert_eq!(info["classes"], serde_json::json!(["a", "c"]));
    assert_eq!(info["model"], "dcgan");
    let entries: Vec<String> = std::fs::read_dir(one.join("classes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "only the classes' folders: {entries:?}");
    for c in ["a", "c"] {
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(one.join("classes").join(c).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["trained_classes"].as_array().unwrap().len(), 1, "{cfg}");
    }
    // As a job array would: each class a task of its own (in either order), then the merge.
    let arr = root.join("arr");
    let arr_s = arr.to_str().unwrap();
    let e = err(
        root,
        &[&base[..], &["--out", arr_s, "--merge-classes"]].concat(),
    );
    assert!(
        e.contains("class a has not been trained") && e.contains("--class-task 0"),
        "{e}"
    );
    ok(
        root,
        &[&base[..], &["--out", arr_s, "--class-task", "1"]].concat(),
    );
    ok(
        root,
        &[&base[..], &["--out", arr_s, "--class-task", "0"]].concat(),
    );
    assert!(!arr.exists(), "tasks write no outputs");
    ok(
        root,
        &[&base[..], &["--out", arr_s, "--merge-classes"]].concat(),
    );
    for c in ["a", "c"] {
        let f = format!("classes/{c}/generator.safetensors");
        assert_eq!(
            std::fs::read(one.join(&f)).unwrap(),
            std::fs::read(arr.join(&f)).unwrap(),
            "{f}: the same weights both ways"
        );
    }
    // generate draws each class from its own generator.
    let o = generate(root, "one", "gen", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let set = ImageSet::read(&root.join("gen/generated.safetensors")).unwrap();
    assert_eq!(set.classes, vec!["a", "b", "c"]);
    assert_eq!(set.labels, [vec![0i64; 5], vec![2i64; 5]].concat());
    let o = generate(root, "one", "gen-c", &["--classes", "c"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = generate(root, "one", "gen-b", &["--classes", "b"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("class `b` has no GAN of its own"),
        "{e}"
    );
    // Refusals.
    let e = err(
        root,
        &["--model", "cgan", "--steps", "2", "--per-class-gans", "a"],
    );
    assert!(e.contains("use --model dcgan"), "{e}");
    let e = err(
        root,
        &[
            "--model",
            "dcgan",
            "--steps",
            "2",
            "--per-class-gans",
            "a,z",
        ],
    );
    assert!(e.contains("`z`"), "{e}");
    let e = err(root, &[&base[..], &["--class-task", "2"]].concat());
    assert!(
        e.contains("--class-task 2") && e.contains("2 classes"),
        "{e}"
    );
    let e = err(root, &["--steps", "2", "--class-task", "0"]);
    assert!(e.contains("go with --per-class-gans"), "{e}");
}
