//! The repository's pipeline.toml and MLproject stay consistent with the runner.

mod common;

use std::process::Command;

use common::*;

#[test]
fn committed_mlproject_matches_pipeline_toml() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("MLproject");
    let o = Command::new(BIN)
        .current_dir(repo())
        .args(["export-mlproject", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    ok(&o);
    let fresh = std::fs::read_to_string(&path).unwrap();
    let committed = std::fs::read_to_string(repo().join("MLproject")).unwrap();
    assert!(
        fresh == committed,
        "MLproject is out of date with pipeline.toml: run `just mlproject`"
    );
    // Every entry point is there, calling the runner with its parameters.
    assert!(committed.contains("  \"gan-train\":\n"));
    assert!(committed.contains(
        "target/release/pipeline -e gan-train -P artifacts={artifacts} -P batch={batch}"
    ));
}

#[test]
fn report_entry_uses_the_runner_flags() {
    let doc: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("pipeline.toml")).unwrap()).unwrap();
    let cmd: Vec<&str> = doc["entry_points"]["report"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&cmd[..2], ["pipeline", "report"]);
    let help = Command::new(BIN)
        .args(["report", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in cmd.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} <")),
            "pipeline report has no {flag}:\n{help}"
        );
    }
    // rounds: the report's default matches the refinement chain's and the CLI's.
    let d = |e: &str| doc["entry_points"][e]["parameters"]["rounds"]["default"].as_integer();
    assert_eq!(d("report"), d("refine"));
    assert!(help.contains("[default: 1]"));
}

/// The folders the stages default to, the report reads and the runner uploads from
/// (`core::contract::layout`) are the `outs` that pipeline.toml declares.
#[test]
fn layout_folders_are_the_declared_outs() {
    let doc: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("pipeline.toml")).unwrap()).unwrap();
    use rebalance_core::contract::layout::{GAN, GAN_DATA, STAGES};
    for (entry, folder) in STAGES
        .into_iter()
        .chain([("refine-data", GAN_DATA), ("gan-finetune", GAN)])
    {
        let outs: Vec<&str> = doc["entry_points"][entry]["outs"]
            .as_array()
            .unwrap_or_else(|| panic!("entry {entry} declares no outs"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        // Stages that refinement rounds repeat write to the round's folder.
        assert!(
            outs == [format!("{{artifacts}}/{folder}")]
                || outs == [format!("{{round_dir}}/{folder}")],
            "pipeline.toml {entry}.outs = {outs:?}, layout says {folder}"
        );
    }
}

/// The crate graph the design promises: no stage crate depends on another stage crate (not even
/// for tests), and `rebalance-core` and the runner link no libtorch.
#[test]
fn stages_are_independent_and_core_and_runner_link_no_libtorch() {
    // Only the host's dependencies: a build fetches no other platform's crates (Windows-only
    // ones such as anstyle-wincon), so a fresh registry lacks them and an unfiltered
    // `--offline` resolve fails there.
    let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let name_of = |id: &str| -> String {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let node = |name: &str| {
        nodes
            .iter()
            .find(|n| name_of(n["id"].as_str().unwrap()) == name)
            .unwrap_or_else(|| panic!("no package {name}"))
    };
    let stages = [
        "ingest",
        "gan-train",
        "classify",
        "filter",
        "augment",
        "pipeline",
    ];
    for s in stages {
        for d in node(s)["deps"].as_array().unwrap() {
            let dep = name_of(d["pkg"].as_str().unwrap());
            assert!(
                !stages.contains(&dep.as_str()),
                "{s} depends on the stage crate {dep}"
            );
        }
    }
    // Normal (non-dev, non-build) dependencies, transitively.
    for root in ["rebalance-core", "pipeline"] {
        let mut todo = vec![node(root)["id"].as_str().unwrap().to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let name = name_of(&id);
            assert!(
                name != "tch" && name != "torch-sys",
                "{root} links libtorch through {name}"
            );
            let n = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap();
            for d in n["deps"].as_array().unwrap() {
                let normal = d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null());
                if normal {
                    todo.push(d["pkg"].as_str().unwrap().to_string());
                }
            }
        }
        assert!(
            seen.len() > 10,
            "{root}: only {} packages walked",
            seen.len()
        );
    }
}

/// The host target triple, as `rustc -vV` prints it (the toolchain that built this test).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let o = Command::new(rustc).arg("-vV").output().unwrap();
    ok(&o);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names no host")
        .to_string()
}
