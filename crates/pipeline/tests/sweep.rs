//! `pipeline sweep` on the real stages with a tiny chain: one run per value, only the stages the
//! parameter touches rerun, and the table, plots and report section come out.

mod common;

use common::*;

#[test]
fn a_sweep_reruns_only_what_the_parameter_touches_and_tables_each_value() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = tiny();
    params.push("seeds=2".into());

    // Nothing swept, and a bad value: refused before anything runs.
    let err = fails(&pipeline(dir, &["sweep"], &params));
    assert!(err.contains("nothing to sweep"), "{err}");
    let mut bad = params.clone();
    bad.push("max_per_class=24,lots".into());
    let err = fails(&pipeline(dir, &["sweep"], &bad));
    assert!(err.contains("`lots` is not an int"), "{err}");
    assert!(!art.join("dataset").exists());

    params.push("add=0,4".into());
    let o = pipeline(dir, &["sweep", "-q"], &params);
    let out = ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let s = json(&art.join("sweeps/add/sweep.json"));
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["value"], "0");
    assert_eq!(rows[1]["value"], "4");
    // The first value runs the whole chain; the second only augment, and the report (and
    // classify, unless the filter kept no image of the rare class: then add=4 builds the same
    // training set as add=0, byte for byte, and the cache sees it).
    assert_eq!(rows[0]["ran"].as_array().unwrap().len(), 9, "{}", rows[0]);
    // add=0: the rare class is filled by classical transforms alone; add=4: 4 synthetic images
    // when the filter kept that many of it, the rest classical; the common classes get none.
    let acc = std::fs::read_to_string(art.join("filtered/acceptance.csv")).unwrap();
    let kept: usize = acc
        .lines()
        .find(|l| l.starts_with("c,"))
        .and_then(|l| l.split(',').nth(2))
        .unwrap()
        .parse()
        .unwrap();
    let second = if kept > 0 {
        serde_json::json!(["augment", "classify", "report"])
    } else {
        serde_json::json!(["augment", "report"])
    };
    assert_eq!(rows[1]["ran"], second, "{out}");
    assert_eq!(rows[0]["synthetic_per_rare_class"], 0.0);
    assert_eq!(
        rows[1]["synthetic_per_rare_class"],
        kept.min(4) as f64,
        "{acc}"
    );
    assert_eq!(rows[1]["images_per_rare_class"], 24.0);
    let comp = json(&art.join("sweeps/add/add=4/composition.json"));
    for c in ["a", "b", "d"] {
        assert_eq!(comp["classes"][c]["synthetic"], 0, "{comp}");
    }
    for r in rows {
        assert_eq!(r["seeds"].as_array().unwrap().len(), 2);
        for k in [
            "loss",
            "accuracy",
            "precision",
            "recall",
            "macro_f1",
            "rare_recall",
        ] {
            let m = &r["metrics"][k];
            assert!(m["mean"].as_f64().unwrap().is_finite(), "{k}: {r}");
            assert!(m["std"].as_f64().unwrap() >= 0.0, "{k}: {r}");
        }
        // Each value's metrics are kept beside the table.
        let kept = art.join(format!(
            "sweeps/add/add={}/metrics.json",
            r["value"].as_str().unwrap()
        ));
        assert!(kept.is_file(), "{}", kept.display());
    }
    // The last value's classifier is the one in artifacts/classify, and its numbers are the row's.
    let last = json(&art.join("classify/metrics.json"));
    let f1 = last["test"]["mean"]["macro_f1"].as_f64().unwrap();
    assert!((rows[1]["metrics"]["macro_f1"]["mean"].as_f64().unwrap() - f1).abs() < 1e-12);
    assert!(s["baseline"]["macro_f1"]["mean"].as_f64().is_some());

    let table = std::fs::read_to_string(art.join("sweeps/add/table.md")).unwrap();
    let row = format!("| 4 | 2 | {} | 24 |", kept.min(4));
    assert!(
        table.contains("real only (baseline)") && table.contains(&row),
        "{table}"
    );
    assert!(
        stdout.contains("| add | seeds |"),
        "the table goes to stdout: {stdout}"
    );
    for k in [
        "loss",
        "accuracy",
        "precision",
        "recall",
        "macro_f1",
        "rare_recall",
    ] {
        let svg = std::fs::read_to_string(art.join(format!("sweeps/add/{k}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("against add"),
            "{k}"
        );
    }
    let csv = std::fs::read_to_string(art.join("sweeps/add/table.csv")).unwrap();
    // A header, the baseline's test metrics, each value's test and val metrics.
    assert_eq!(csv.lines().count(), 1 + 6 + 2 * 2 * 6, "{csv}");

    // The report has the sweep; the runs are recorded, the sweep's own and one per value.
    let html = std::fs::read_to_string(art.join("report/index.html")).unwrap();
    assert!(html.contains("<h2>Sweeps</h2>") && html.contains("add over add"));
    let mut entries: Vec<String> = std::fs::read_dir(art.join("runs"))
        .unwrap()
        .map(|e| {
            json(&e.unwrap().path().join("run.json"))["entry"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    entries.sort();
    assert_eq!(entries, ["main", "main", "sweep:main"]);
    for r in rows {
        let run = json(
            &art.join("runs")
                .join(r["run_id"].as_str().unwrap())
                .join("run.json"),
        );
        assert_eq!(run["status"], "FINISHED");
        assert_eq!(run["params"]["augment.add"], r["value"]);
    }
}

#[test]
fn strategy_auto_chooses_on_validation_and_ends_with_the_chosen_artifacts() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = tiny();
    params.push("seeds=2".into());
    params.push("strategy=auto".into());
    // An entry point that trains no classifier has nothing to choose by.
    let err = fails(&pipeline(
        dir,
        &["-e", "augment"],
        &["strategy=auto".to_string()],
    ));
    assert!(
        err.contains("strategy=auto chooses by a classifier's validation macro-F1"),
        "{err}"
    );
    let o = pipeline(dir, &["-q"], &params);
    let err = ok(&o);
    let s = json(&art.join("sweeps/strategy-auto/sweep.json"));
    let rows = s["rows"].as_array().unwrap();
    let values: Vec<&str> = rows.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(
        values,
        [
            "none",
            "oversample",
            "classical",
            "synthetic",
            "synthetic+classical"
        ],
        "{err}"
    );
    // The choice, recomputed here from each candidate's own metrics.json: the best mean
    // validation macro-F1 over seeds (the first on a tie); test numbers play no part.
    let mut best: Option<(&str, f64)> = None;
    for v in &values {
        let m = json(&art.join(format!("sweeps/strategy-auto/strategy={v}/metrics.json")));
        let runs = m["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let f1 = runs
            .iter()
            .map(|r| r["val"]["macro_f1"].as_f64().unwrap())
            .sum::<f64>()
            / 2.0;
        if best.is_none_or(|(_, b)| f1 > b) {
            best = Some((v, f1));
        }
    }
    let chosen = best.unwrap().0;
    assert_eq!(s["choice"]["value"], chosen);
    // The artifacts are the chosen one's: composition, classifier and verdict.
    let comp = json(&art.join("augmented/composition.json"));
    assert_eq!(comp["strategy"], chosen);
    let kept = json(&art.join(format!(
        "sweeps/strategy-auto/strategy={chosen}/metrics.json"
    )));
    let now = json(&art.join("classify/metrics.json"));
    assert_eq!(
        now["test"], kept["test"],
        "classify/ holds the chosen candidate's classifier"
    );
    let verdict = std::fs::read_to_string(art.join("report/verdict.txt")).unwrap();
    assert!(
        verdict.starts_with(&format!(
            "strategy=auto chose {chosen} of 5 on validation macro-F1"
        )),
        "{verdict}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("| {chosen} (chosen) |")),
        "{stdout}"
    );
    let html = std::fs::read_to_string(art.join("report/index.html")).unwrap();
    assert!(html.contains(&format!("strategy=auto chose {chosen}</b>")));
    // Runs: the sweep's, one per candidate, and the final one with the choice.
    let runs = std::fs::read_dir(art.join("runs")).unwrap().count();
    assert_eq!(runs, 1 + 5 + 1);
    // A later plain run did not choose anything: its verdict says nothing of the earlier
    // choice, though the sweep is still in the artifacts folder.
    let mut plain = tiny();
    plain.push("seeds=2".into());
    plain.push(format!("strategy={chosen}"));
    let err = ok(&pipeline(dir, &["-q"], &plain));
    let verdict = std::fs::read_to_string(art.join("report/verdict.txt")).unwrap();
    assert!(!verdict.contains("strategy=auto"), "{verdict}\n{err}");
    assert!(verdict.contains("macro-F1"), "{verdict}");
    let run = last_run(&art);
    assert!(
        !run["verdict"].as_str().unwrap().contains("strategy=auto"),
        "{run}"
    );
}

/// `-P gan-train.model=cyclegan`: the default chain with the translator as its generator; filter gates
/// the translations like any synthetic set and the verdict comes out.
#[test]
fn cyclegan_plugs_into_the_default_chain() {
    require_stage_binaries();
    let proj = project();
    let dir = proj.path();
    let art = dir.join("artifacts");
    let mut params = tiny();
    params.retain(|p| !p.starts_with("steps="));
    params.extend([
        "gan-train.model=cyclegan".into(),
        "steps=20".into(),
        "per_class=100".into(),
    ]);
    let err = ok(&pipeline(dir, &["-q"], &params));
    // auto: from the first of the largest classes (a, 24 images) into the rare class c (6).
    let gen = json(&art.join("generated/manifest.json"));
    assert_eq!(gen["model"], "cyclegan", "{err}");
    assert_eq!(gen["counts"], serde_json::json!({"c": 24}));
    let acc = std::fs::read_to_string(art.join("filtered/acceptance.csv")).unwrap();
    assert!(acc.lines().any(|l| l.starts_with("c,24,")), "{acc}");
    let comp = json(&art.join("augmented/composition.json"));
    let kept = comp["classes"]["c"]["synthetic_available"]
        .as_u64()
        .unwrap();
    assert!(kept <= 24);
    assert!(art.join("report/verdict.txt").is_file());
    let cmd = std::fs::read_to_string(art.join("gan/manifest.json")).unwrap();
    assert!(cmd.contains("\"from\": \"auto\""), "{cmd}");
}
