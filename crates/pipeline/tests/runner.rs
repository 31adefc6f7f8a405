//! The runner end to end on a tiny data set: the default chain with a refinement round, caching,
//! a parameter change that reruns only what depends on it, a stage swapped for a Python script,
//! a failing stage, bad parameters, and the report in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rebalance_testkit::fixtures::bar_image;

fn ran(run: &serde_json::Value) -> Vec<String> {
    statuses(run)
        .into_iter()
        .filter(|(_, s)| s == "ran")
        .map(|(k, _)| k)
        .collect()
}

fn metric_keys(run_dir: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["step"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn default_chain_caches_swaps_fails_cleanly_and_reports() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = tiny();
    params.push("rounds=2".into());

    // 1. The whole chain, with one refinement round.
    let err = ok(&pipeline(dir, &[], &params));
    let run = last_run(&art);
    let keys: Vec<String> = statuses(&run).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "ingest",
            "judge-train",
            "judge",
            "gan-train",
            "generate",
            "filter",
            "augment",
            "classify",
            "round2/refine-data",
            "round2/gan-finetune",
            "round2/generate",
            "round2/filter",
            "round2/augment",
            "round2/classify",
            "report",
        ]
    );
    assert_eq!(ran(&run).len(), keys.len(), "{err}");
    assert_eq!(run["status"], "FINISHED");
    let verdict = std::fs::read_to_string(art.join("report/verdict.txt")).unwrap();
    assert!(
        verdict.contains("macro-F1") && verdict.contains("class c"),
        "{verdict}"
    );
    assert!(
        verdict.contains("with 1 seed, so no significance test was possible; -P seeds=3"),
        "{verdict}"
    );
    assert!(
        verdict.contains("After 2 rounds of refinement"),
        "{verdict}"
    );
    assert_eq!(run["verdict"].as_str().unwrap(), verdict.trim());
    assert!(art.join("rounds/2/gan/generator.safetensors").is_file());
    assert!(art.join("rounds/2/classify/metrics.json").is_file());
    let html = std::fs::read_to_string(art.join("report/index.html")).unwrap();
    assert!(
        html.contains("Refinement rounds"),
        "the report shows the rounds"
    );
    assert!(
        !html.contains("class=\"missing\""),
        "every section found its inputs"
    );
    // Each stage has its log; metrics carry steps (GAN losses by training step, stage metrics
    // by round).
    let run_dir = art.join("runs").join(run["id"].as_str().unwrap());
    for s in run["stages"].as_array().unwrap() {
        let log = PathBuf::from(s["log"].as_str().unwrap());
        assert!(log.starts_with(&run_dir), "{}", log.display());
        assert!(
            std::fs::metadata(&log).unwrap().len() > 0,
            "{}",
            log.display()
        );
    }
    let metrics = metric_keys(&run_dir);
    assert!(metrics
        .iter()
        .any(|(k, s)| k == "gan-train.g_loss" && *s == 60));
    assert!(metrics
        .iter()
        .any(|(k, s)| k == "classify.test.recall/c" && *s == 1));
    assert!(metrics
        .iter()
        .any(|(k, s)| k == "classify.test.recall/c" && *s == 2));
    assert!(metrics
        .iter()
        .any(|(k, s)| k == "filter.acceptance" && *s == 2));
    let lock = json(&dir.join("pipeline.lock"));
    assert_eq!(lock["stages"].as_object().unwrap().len(), keys.len());

    // 2. Unchanged: everything is cached.
    let err = ok(&pipeline(dir, &[], &params));
    let run = last_run(&art);
    assert!(ran(&run).is_empty(), "nothing should rerun:\n{err}");
    assert_eq!(run["verdict"].as_str().unwrap(), verdict.trim());

    // 3. One parameter of one step: that step (both rounds) and what reads its output rerun.
    let mut changed = params.clone();
    changed.push("classify.epochs=3".into());
    ok(&pipeline(dir, &[], &changed));
    assert_eq!(
        ran(&last_run(&art)),
        ["classify", "round2/classify", "report"]
    );
    // An output edited by hand is noticed.
    std::fs::write(art.join("classify/summary.txt"), "edited").unwrap();
    // `pipeline status` lists every reason a stage would run, and runs nothing.
    let mut both = changed.clone();
    both.push("classify.epochs=4".into());
    let o = pipeline(dir, &["status"], &both);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let classify = out
        .split("\nclassify: ")
        .nth(1)
        .and_then(|s| s.split("\nround2/").next())
        .unwrap_or_default();
    for reason in [
        "would run",
        "  - command changed (was `classify --model lenet5 --epochs 3",
        "  - parameters changed: epochs",
        "  - output artifacts/classify changed since it was made",
    ] {
        assert!(classify.contains(reason), "{reason}:\n{out}");
    }
    assert!(out.contains("\njudge: cached"), "{out}");
    assert!(
        out.contains("\nreport: would run\n  - inputs changed: artifacts/classify"),
        "{out}"
    );
    let err = ok(&pipeline(dir, &[], &both));
    assert_eq!(
        ran(&last_run(&art)),
        ["classify", "round2/classify", "report"],
        "{err}"
    );
    assert!(err.contains("output artifacts/classify changed"), "{err}");
    // --force reruns one entry point whatever the lock says.
    ok(&pipeline(
        dir,
        &["-e", "generate", "--force"],
        &["per_class=12".to_string()],
    ));
    assert_eq!(ran(&last_run(&art)), ["generate"]);

    // 4. Swap augment for a plain Python script that honours the artifact contract.
    let swapped = dir.join("swapped.toml");
    let mut doc: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("pipeline.toml")).unwrap()).unwrap();
    std::fs::copy(
        repo().join("examples/swap-augment/oversample.py"),
        dir.join("oversample.py"),
    )
    .unwrap();
    doc["entry_points"]["augment"]["command"] = toml::Value::Array(
        [
            "python3",
            "./oversample.py",
            "--train",
            "{artifacts}/dataset/train.safetensors",
            "--seed",
            "{seed}",
            "--out",
            "{round_dir}/augmented",
        ]
        .iter()
        .map(|s| toml::Value::String(s.to_string()))
        .collect(),
    );
    doc["entry_points"]["augment"]["deps"] = toml::Value::Array(vec![toml::Value::String(
        "{artifacts}/dataset/train.safetensors".into(),
    )]);
    std::fs::write(&swapped, toml::to_string(&doc).unwrap()).unwrap();
    let o = pipeline(dir, &["-f", "swapped.toml"], &changed);
    let err = ok(&o);
    let swapped_ran = ran(&last_run(&art));
    for k in [
        "augment",
        "classify",
        "round2/augment",
        "round2/classify",
        "report",
    ] {
        assert!(
            swapped_ran.contains(&k.to_string()),
            "{k} reran: {swapped_ran:?}\n{err}"
        );
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("oversample.py: 78 real images -> 96"),
        "the script's output streams through"
    );
    // classify trained on the script's output: every class repeated up to 24.
    let m = json(&art.join("classify/metrics.json"));
    for c in ["a", "b", "c", "d"] {
        assert_eq!(m["train_counts"][c], 24, "{}", m["train_counts"]);
    }
    let manifest = json(&art.join("augmented/manifest.json"));
    assert_eq!(
        manifest["implementation"],
        "examples/swap-augment/oversample.py"
    );
    // Its composition.json replaces the real augment's: nothing stale survives in the folder.
    let comp = json(&art.join("augmented/composition.json"));
    assert_eq!(comp["strategy"], "oversample");
    assert_eq!(comp["totals"]["synthetic"], 0);
    assert!(comp["classes"]["c"].get("synthetic_available").is_none());
    // The verdict names what was added and gives synthetic images no credit (issue 13).
    let verdict = std::fs::read_to_string(art.join("report/verdict.txt")).unwrap();
    assert!(
        verdict.contains("repeated real images (no synthetic image; oversample)"),
        "{verdict}"
    );
    assert!(
        verdict.contains("this set holds no synthetic image"),
        "{verdict}"
    );
    assert!(!verdict.contains("synthetic images added"), "{verdict}");
    assert!(!art.join(".augmented.pipeline-prev").exists());

    // 5. A failing stage stops the run, names its log, and keeps earlier outputs.
    doc["entry_points"]["filter"]["command"] = toml::Value::Array(
        [
            "sh",
            "-c",
            "mkdir -p artifacts/filtered && echo half > artifacts/filtered/half-written; echo 'filter exploded: no judge' >&2; exit 3",
        ]
            .iter()
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    );
    std::fs::write(&swapped, toml::to_string(&doc).unwrap()).unwrap();
    let err = fails(&pipeline(dir, &["-f", "swapped.toml"], &changed));
    assert!(err.contains("stage `filter` failed"), "{err}");
    assert!(
        err.contains("filter exploded"),
        "the error shows the log's tail: {err}"
    );
    let run = last_run(&art);
    assert_eq!(run["status"], "FAILED");
    let failed = run["stages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(failed["key"], "filter");
    assert_eq!(failed["status"], "failed");
    let log = failed["log"].as_str().unwrap();
    assert!(err.contains(log), "the error names the log {log}: {err}");
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("filter exploded"));
    assert!(art.join("generated/generated.safetensors").is_file());
    assert!(
        art.join("filtered/kept.safetensors").is_file(),
        "the old output is back"
    );
    assert!(
        !art.join("filtered/half-written").exists(),
        "what the failed run wrote is gone"
    );
    assert!(!art.join(".filtered.pipeline-prev").exists());

    // 6. The report renders in headless Chromium with every image loaded.
    check_report_in_chromium(&art.join("report/index.html"));
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("no chromium: install Debian's `chromium` (scripts/setup does when it can)");
}

fn headless(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap()
}

/// (images on the page, images that failed to load), as the page's own script counted them.
fn loaded(page: &Path) -> (usize, usize) {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let o = headless(
        &["--virtual-time-budget=10000", "--dump-dom", &url],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&o.stdout);
    let attr = |name: &str| -> usize {
        let key = format!("{name}=\"");
        let start = dom
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} on the rendered page: {dom:.500}"))
            + key.len();
        dom[start..start + dom[start..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    (attr("data-images"), attr("data-broken"))
}

fn check_report_in_chromium(page: &Path) {
    let html = std::fs::read_to_string(page).unwrap();
    let n_img = html.matches("<img ").count();
    assert!(n_img >= 10, "{n_img} images");
    assert_eq!(
        html.matches("src=\"data:").count(),
        n_img,
        "self-contained: every image is inlined"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert_eq!(loaded(page), (n_img, 0), "every image loads");

    // The check can fail: a copy with one broken image is caught.
    let broken = page.with_file_name("broken.html");
    let first =
        html.find("src=\"data:image/png;base64,").unwrap() + "src=\"data:image/png;base64,".len();
    let mut bad = html.clone();
    bad.replace_range(first..first + 8, "AAAAAAAA");
    std::fs::write(&broken, bad).unwrap();
    assert_eq!(loaded(&broken), (n_img, 1));
    std::fs::remove_file(&broken).unwrap();

    // A screenshot for the CI log folder.
    let logs = std::env::var_os("CI_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/ci-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let shot = logs.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let o = headless(
        &[
            "--window-size=1280,5000",
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", page.display()),
        ],
        profile.path(),
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let img = image::open(&shot).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 5000));
    eprintln!("report screenshot: {}", shot.display());
}

#[test]
fn parameters_are_typed_and_checked() {
    let proj = tempfile::tempdir().unwrap();
    let dir = proj.path();
    std::fs::copy(repo().join("pipeline.toml"), dir.join("pipeline.toml")).unwrap();
    let run = |args: &[&str]| fails(&pipeline(dir, args, &[]));

    let err = run(&["-P", "stepz=10"]);
    assert!(
        err.contains("unknown parameter `stepz`") && err.contains("steps (int = 3000)"),
        "{err}"
    );
    let err = run(&["-e", "gan-train", "-P", "epochs=3"]);
    assert!(
        err.contains("unknown parameter `epochs` for entry point `gan-train`"),
        "{err}"
    );
    assert!(err.contains("batch (int = 64)"), "{err}");
    let err = run(&["-P", "steps=many"]);
    assert!(
        err.contains("parameter `steps` (int): `many` is not an int"),
        "{err}"
    );
    let err = run(&["-P", "threshold=nan"]);
    assert!(err.contains("not a finite float"), "{err}");
    let err = run(&["-P", "strategy=smote"]);
    assert!(
        err.contains("`smote` is not one of none, oversample"),
        "{err}"
    );
    let err = run(&["-P", "model=resnet"]);
    assert!(
        err.contains("parameter `model` means different things")
            && err.contains("gan-train.model")
            && err.contains("classify.model"),
        "{err}"
    );
    let err = run(&["-P", "gan-train.epochs=3"]);
    assert!(
        err.contains("unknown parameter `gan-train.epochs`"),
        "{err}"
    );
    let err = run(&["-P", "rounds=0"]);
    assert!(err.contains("rounds must be at least 1"), "{err}");
    let err = run(&["-e", "trian"]);
    assert!(
        err.contains("no entry point `trian`") && err.contains("gan-train"),
        "{err}"
    );
    let err = run(&["-P", "novalue"]);
    assert!(err.contains("`novalue` is not key=value"), "{err}");

    // Good values render into the commands.
    let o = pipeline(
        dir,
        &[
            "--dry-run",
            "-P",
            "gan-train.model=wgan-gp",
            "-P",
            "threshold=0.75",
            "-P",
            "rounds=3",
        ],
        &[],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("  $ gan-train --model wgan-gp --from auto --to auto --steps 3000"),
        "{out}"
    );
    assert!(out.contains("  $ filter --threshold 0.75"), "{out}");
    assert!(out.contains("round3/classify: would run"), "{out}");
    assert!(out.contains("--out artifacts/rounds/3/classify"), "{out}");
    assert!(
        out.contains("  $ pipeline report --artifacts artifacts --rounds 3"),
        "{out}"
    );

    // A missing input names the file and the stage.
    let err = run(&["-e", "filter"]);
    assert!(
        err.contains(
            "stage `filter` needs artifacts/generated/generated.safetensors, which does not exist"
        ),
        "{err}"
    );

    // A broken manifest names the file and the problem.
    std::fs::write(
        dir.join("bad.toml"),
        "name = \"x\"\n[entry_points.a]\ncommand = [\"echo\", \"{nope}\"]\n",
    )
    .unwrap();
    let err = run(&["-f", "bad.toml", "-e", "a"]);
    assert!(
        err.contains("bad.toml") && err.contains("`{nope}`"),
        "{err}"
    );
}

/// Issue 24: a user's own folder (natural imbalance, grey and colour images, two sizes) runs
/// to a report and a verdict with `-P source=DIR` and tiny-step parameters only: no demo caps,
/// the rare class found from the counts, every split non-empty.
#[test]
fn a_users_own_folder_runs_with_only_its_source() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let raw = dir.join("mine");
    // a and b: 40 grey images each; c: 40 colour ones, a quarter of them 32x32; d: 8, colour.
    for (c, (name, n)) in [("a", 40), ("b", 40), ("c", 40), ("d", 8)]
        .into_iter()
        .enumerate()
    {
        std::fs::create_dir_all(raw.join(name)).unwrap();
        for i in 0..n {
            let side = if name == "c" && i % 4 == 0 { 32 } else { 28 };
            let px = bar_image(c, i, side, 4);
            let path = raw.join(name).join(format!("{i}.png"));
            if c < 2 {
                image::GrayImage::from_raw(side as u32, side as u32, px)
                    .unwrap()
                    .save(&path)
                    .unwrap();
            } else {
                let rgb: Vec<u8> = px.iter().flat_map(|&v| [v, v / 2, 255 - v]).collect();
                image::RgbImage::from_raw(side as u32, side as u32, rgb)
                    .unwrap()
                    .save(&path)
                    .unwrap();
            }
        }
    }
    let params: Vec<String> = [
        "source=mine",
        "steps=40",
        "batch=16",
        "epochs=2",
        "per_class=12",
        "threshold=0",
        "candidates=real,balanced,online",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let err = ok(&pipeline(dir, &[], &params));
    assert!(
        !err.contains("preset mnist-demo"),
        "the demo's caps stay out:\n{err}"
    );
    let art = dir.join("artifacts");
    let m = json(&art.join("dataset/manifest.json"));
    assert_eq!(m["rare_classes"], serde_json::json!(["d"]), "{m}");
    for split in ["train", "val", "test"] {
        for c in ["a", "b", "c", "d"] {
            let n = m["counts"][split][c].as_u64().unwrap();
            assert!(n > 0, "{split}/{c} is empty: {m}");
        }
    }
    // 80/10/10 of 40 and of 8 (a class of 3 or more keeps at least one for val and test).
    assert_eq!(m["counts"]["train"]["a"], 32);
    assert_eq!(m["counts"]["test"]["d"], 1);
    assert_eq!(
        m["image_shape"],
        serde_json::json!({"channels": 3, "height": 28, "width": 28})
    );
    let notes = m["notes"].to_string();
    assert!(
        notes.contains("all were resized to 28x28") && notes.contains("all were made RGB"),
        "{notes}"
    );
    let verdict = std::fs::read_to_string(art.join("report/verdict.txt")).unwrap();
    assert!(
        verdict.contains("recall of class d") && verdict.contains("The best cheap alternative"),
        "{verdict}"
    );
    assert!(art.join("report/index.html").is_file());
    // The demo still gets its caps: `pipeline list` shows the preset, and a dry run with the
    // default source says it applies.
    let o = pipeline(dir, &["list", "main"], &[]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains("mnist-demo: when source=data/mnist: keep=2=10,5=10,8=10 max_per_class=300 test_per_class=400 val_per_class=100"),
        "{listed}"
    );
    std::fs::create_dir_all(dir.join("data/mnist")).unwrap();
    let o = pipeline(dir, &["--dry-run"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        err.contains("preset mnist-demo (source = data/mnist): keep=2=10,5=10,8=10 max_per_class=300 test_per_class=400 val_per_class=100"),
        "{err}"
    );
    assert!(out.contains("--keep 2=10,5=10,8=10"), "{out}");
    // A value given wins over the preset.
    let o = pipeline(dir, &["--dry-run"], &["keep=none".to_string()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("--keep none") && out.contains("--max-per-class 300"),
        "{out}"
    );
}

/// Issue 24: printing into a closed pipe (`pipeline list | head`) ends quietly, no panic.
#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let proj = project();
    let mut child = Command::new(BIN)
        .current_dir(proj.path())
        .args(["list", "main"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}
