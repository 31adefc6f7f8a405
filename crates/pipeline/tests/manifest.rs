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
