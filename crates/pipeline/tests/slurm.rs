//! `--executor slurm` against a real single-node Slurm cluster that the test starts on loopback
//! (`scripts/slurm-local`: munged, slurmctld and slurmd, Debian's packages, installed by
//! `scripts/setup --test`) and stops by pid afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::slurm::Cluster;
use common::*;
use serde_json::Value;

fn params(extra: &[&str]) -> Vec<String> {
    let mut p = tiny();
    p.extend(["rounds=2", "seeds=2"].map(String::from));
    p.extend(extra.iter().map(|s| s.to_string()));
    p
}

/// Every image set and model (`*.safetensors`) under `artifacts/` but the run records, by
/// path relative to it, with their bytes.
fn safetensors(art: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "runs" || rel.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else if rel.ends_with(".safetensors") {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(art, art, &mut out);
    out
}

/// A classifier's metrics.json without its timings.
fn metrics(path: &Path) -> Value {
    let mut m = json(path);
    for r in m["runs"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("train_s");
    }
    m
}

/// (job id, stage, start, end) of every job the run record lists.
fn jobs(run: &Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for s in run["stages"].as_array().unwrap() {
        for j in s["jobs"].as_array().into_iter().flatten() {
            out.push((
                j["id"].as_str().unwrap().to_string(),
                s["key"].as_str().unwrap().to_string(),
                j["start"].as_str().unwrap_or_default().to_string(),
                j["end"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

fn stage<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no stage {key} in {run}"))
}

#[test]
fn the_slurm_executor_matches_local_overlaps_stages_stops_dependants_and_cancels_on_sigterm() {
    require_stage_binaries();
    let cluster = Cluster::start();

    // The same tiny chain (2 rounds, 2 seeds) here and on Slurm.
    let local = project();
    let out = cluster.run(local.path(), &["-q"], &params(&[]));
    ok(&out);
    let on_slurm = project();
    let dir = on_slurm.path();
    let art = dir.join("artifacts");
    let p = params(&["resources.cpus=1"]);

    // Requests the cluster cannot meet fail before anything is submitted, in Slurm's words.
    let err = fails(&cluster.run(
        dir,
        &["--executor", "slurm", "-q"],
        &params(&["resources.cpus=64"]),
    ));
    assert!(err.contains("Slurm refuses"), "{err}");
    assert!(
        err.contains("Requested node configuration is not available"),
        "{err}"
    );
    let err = fails(&cluster.run(
        dir,
        &["--executor", "slurm", "-q"],
        &params(&["gan-train.resources.partition=nowhere"]),
    ));
    assert!(err.contains("invalid partition"), "{err}");
    assert!(!art.join("dataset").exists(), "nothing ran");

    let err = ok(&cluster.run(dir, &["--executor", "slurm", "-q"], &p));
    let run = last_run(&art);
    assert_eq!(run["status"], "FINISHED");
    let ran = statuses(&run);
    assert_eq!(ran.len(), 15, "{ran:?}");
    assert!(ran.iter().all(|(_, s)| s == "ran"), "{ran:?}");
    assert!(err.contains("submitted as Slurm array job"), "{err}");
    // Every stage was a Slurm job (the seeds of classify two array tasks and a merge job; the
    // judge trains its candidates' seeds in one job), and each completed.
    let all = jobs(&run);
    for (key, _) in &ran {
        let s = stage(&run, key);
        let js = s["jobs"].as_array().unwrap();
        let want = if key.ends_with("classify") { 3 } else { 1 };
        assert_eq!(js.len(), want, "{key}: {s}");
        assert!(js.iter().all(|j| j["state"] == "COMPLETED"), "{s}");
    }
    // Slurm's own completion log knows each of them.
    let comp = std::fs::read_to_string(cluster.dir.path().join("jobcomp.txt")).unwrap();
    for (id, ..) in &all {
        let job = id.split('_').next().unwrap();
        assert!(
            comp.contains(&format!("JobId={job} ")),
            "{id} not in jobcomp.txt"
        );
    }

    // The same outputs: byte-identical image sets and models, the same metrics and verdict.
    let a = safetensors(&local.path().join("artifacts"));
    let b = safetensors(&art);
    assert!(a.len() >= 20, "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs between --executor local and slurm");
    }
    for m in [
        "judge/metrics.json",
        "classify/metrics.json",
        "judge/recipes/real/metrics.json",
        "rounds/2/classify/metrics.json",
    ] {
        assert_eq!(
            metrics(&local.path().join("artifacts").join(m)),
            metrics(&art.join(m)),
            "{m}"
        );
    }
    // The bar: the same candidates, numbers and choice.
    assert_eq!(
        json(&local.path().join("artifacts/judge/recipes.json")),
        json(&art.join("judge/recipes.json"))
    );
    assert_eq!(
        std::fs::read_to_string(local.path().join("artifacts/report/verdict.txt")).unwrap(),
        std::fs::read_to_string(art.join("report/verdict.txt")).unwrap()
    );

    // Independent stages overlapped in time: the judge's side (judge-train, judge) waits only
    // for ingest, the GAN too, and each asks for 1 of the node's 2
    // CPUs. Slurm's start and end times have 1 s resolution, so only a strict overlap counts
    // (not a shared second).
    let (gs, ge) = {
        let j = &stage(&run, "gan-train")["jobs"][0];
        (j["start"].as_str().unwrap(), j["end"].as_str().unwrap())
    };
    let beside: Vec<&(String, String, String, String)> = all
        .iter()
        .filter(|(_, key, s, e)| {
            ["judge-train", "judge"].contains(&key.as_str()) && s.as_str() < ge && gs < e.as_str()
        })
        .collect();
    assert!(
        !beside.is_empty(),
        "nothing ran beside gan-train ({gs}..{ge}): {all:?}"
    );

    // Again: everything cached, nothing submitted.
    let before = cluster.queue();
    let err = ok(&cluster.run(dir, &["--executor", "slurm", "-q"], &p));
    assert!(!err.contains("submitted"), "{err}");
    assert!(statuses(&last_run(&art)).iter().all(|(_, s)| s == "cached"));
    assert_eq!(cluster.queue(), before);

    // A job an earlier run of this folder left behind (its runner killed outright): the next
    // run finds it by its comment and cancels it before anything else, saying so.
    let canon = art.canonicalize().unwrap();
    let left = cluster
        .cmd("sbatch")
        .args([
            "--parsable",
            "--job-name=gan-train",
            &format!(
                "--comment=rebalance:{}:20000101-000000-dead00",
                canon.display()
            ),
            "--wrap",
            "sleep 600",
        ])
        .output()
        .unwrap();
    assert!(left.status.success(), "{left:?}");
    let left = String::from_utf8_lossy(&left.stdout).trim().to_string();
    assert!(cluster.queue().iter().any(|l| l.starts_with(&left)));
    let err = ok(&cluster.run(dir, &["--executor", "slurm", "-q"], &p));
    assert!(
        err.contains(&format!(
            "cancelled 1 Slurm job(s) that run 20000101-000000-dead00 of {} left queued or running",
            canon.display()
        )) && err.contains(&left),
        "{err}"
    );
    let t0 = std::time::Instant::now();
    while cluster
        .queue()
        .iter()
        .any(|l| l.starts_with(&format!("{left} ")))
        && t0.elapsed().as_secs() < 30
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !cluster
            .queue()
            .iter()
            .any(|l| l.starts_with(&format!("{left} "))),
        "{:?}",
        cluster.queue()
    );

    // A sweep: the first value in the artifacts folder, the other two side by side as the two
    // tasks of one job array, each in a folder of its own where the untouched stages are
    // cached; the same table as a local sweep.
    let sweep = |d: &Path, exec: &[&str]| {
        let mut args = vec!["sweep", "-q"];
        args.extend_from_slice(exec);
        ok(&cluster.run(
            d,
            &args,
            &params(&["resources.cpus=1", "classify.epochs=2,3,4"]),
        ))
    };
    let err = sweep(dir, &["--executor", "slurm"]);
    assert!(err.contains("submitted as Slurm array job"), "{err}");
    sweep(local.path(), &[]);
    let table = |d: &Path| json(&d.join("artifacts/sweeps/classify.epochs/sweep.json"));
    let (a, b) = (table(local.path()), table(dir));
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (x, y) in a["rows"].as_array().unwrap().iter().zip(rows) {
        assert_eq!(x["value"], y["value"]);
        assert_eq!(x["metrics"], y["metrics"], "{}", y["value"]);
        assert_eq!(x["val"], y["val"], "{}", y["value"]);
    }
    for r in &rows[1..] {
        let ran: Vec<&str> = r["ran"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(ran.contains(&"classify"), "{r}");
        assert!(
            !ran.contains(&"gan-train") && !ran.contains(&"ingest"),
            "{r}"
        );
    }
    // Slurm's completion log: the two value tasks ran at the same time.
    let comp = std::fs::read_to_string(cluster.dir.path().join("jobcomp.txt")).unwrap();
    let spans: Vec<(String, String)> = comp
        .lines()
        .filter(|l| l.contains("Name=sweep-classify.epochs "))
        .map(|l| {
            let get = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap()
                    .to_string()
            };
            (get("StartTime="), get("EndTime="))
        })
        .collect();
    assert_eq!(spans.len(), 2, "{comp}");
    assert!(
        spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1,
        "the value tasks did not overlap: {spans:?}"
    );

    // A failing stage: the GAN (a bad batch size). Its dependants are cancelled and named,
    // the error names its job and log, its earlier outputs stay, the judge's side is cached.
    let generator = std::fs::read(art.join("gan/generator.safetensors")).unwrap();
    let err = fails(&cluster.run(
        dir,
        &["--executor", "slurm", "-q"],
        &params(&["resources.cpus=1", "gan-train.batch=0"]),
    ));
    let run = last_run(&art);
    assert_eq!(run["status"], "FAILED");
    let gan = stage(&run, "gan-train");
    assert_eq!(gan["status"], "failed");
    let id = gan["jobs"][0]["id"].as_str().unwrap();
    assert!(
        err.contains(&format!("Slurm job {id} ended FAILED")),
        "{err}"
    );
    assert!(err.contains(gan["log"].as_str().unwrap()), "{err}");
    assert!(err.contains("--batch must be at least 1"), "{err}");
    assert!(err.contains("Cancelled, as they depend on it"), "{err}");
    for key in ["generate", "filter", "classify", "report"] {
        assert!(err.contains(&format!("{key} (job ")), "{key}: {err}");
    }
    assert_eq!(
        std::fs::read(art.join("gan/generator.safetensors")).unwrap(),
        generator,
        "the failed stage's earlier outputs are back"
    );
    assert!(art.join("report/index.html").is_file());
    common::until(30, "the cancelled jobs to leave the queue", || {
        cluster.queue().is_empty()
    });

    // SIGTERM while the GAN trains: every job is cancelled, the run is KILLED, and the same
    // command again resumes the GAN from its checkpoint.
    let long = params(&["resources.cpus=1", "steps=3000", "checkpoint_every=10"]);
    let start = |cluster: &Cluster| {
        cluster
            .pipeline(dir, &["--executor", "slurm", "-q"], &long)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = start(&cluster);
    let ck = art.join(".gan.partial/checkpoints/latest.safetensors");
    common::until(300, "the GAN's first checkpoint", || ck.is_file());
    assert!(cluster.queue().len() > 1, "{:?}", cluster.queue());
    common::signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("cancelling Slurm jobs"), "{err}");
    assert_eq!(cluster.queue(), Vec::<String>::new(), "every job cancelled");
    let run = last_run(&art);
    assert_eq!(run["status"], "KILLED");
    assert_eq!(stage(&run, "gan-train")["status"], "killed");
    assert_eq!(
        std::fs::read(art.join("gan/generator.safetensors")).unwrap(),
        generator,
        "the stopped stage's earlier outputs are back"
    );
    let child = start(&cluster);
    let resumed = || {
        std::fs::read_dir(art.join("runs"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join("logs/gan-train.log"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .any(|t| t.contains("resumed from") && t.contains("at step"))
    };
    common::until(300, "the GAN to resume from its checkpoint", resumed);
    common::signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    common::until(30, "the queue to empty", || cluster.queue().is_empty());

    // A GAN per class (dcgan): a job array with one task per class, then the merge; the same
    // generators as the local run, which trains the classes one after another.
    let per_class: Vec<String> = ["model=dcgan", "per_class_gans=c,d", "steps=20", "batch=16"]
        .map(String::from)
        .to_vec();
    let mut with_cpus = per_class.clone();
    with_cpus.push("resources.cpus=1".into());
    let err = ok(&cluster.run(
        dir,
        &["-e", "gan-train", "--executor", "slurm", "-q"],
        &with_cpus,
    ));
    assert!(
        err.contains("array job") && err.contains("(2 tasks)"),
        "{err}"
    );
    ok(&cluster.run(local.path(), &["-e", "gan-train", "-q"], &per_class));
    for c in ["c", "d"] {
        let f = format!("artifacts/gan/classes/{c}/generator.safetensors");
        assert!(
            std::fs::read(local.path().join(&f)).unwrap() == std::fs::read(dir.join(&f)).unwrap(),
            "{f} differs between --executor local and slurm"
        );
    }
    let run = last_run(&art);
    let js = stage(&run, "gan-train")["jobs"].as_array().unwrap().clone();
    assert_eq!(js.len(), 3, "two class tasks and the merge: {js:?}");
    let (t0, t1) = (&js[0], &js[1]);
    assert!(
        t0["start"].as_str() < t1["end"].as_str() && t1["start"].as_str() < t0["end"].as_str(),
        "the class tasks did not overlap: {js:?}"
    );
}
