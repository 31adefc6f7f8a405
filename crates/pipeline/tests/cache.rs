//! The cache notices a rebuilt stage program and a swapped-in script (issue 13), and says so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Run the runner with `bin/` first on PATH.
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("PATH", path)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap()
}

#[test]
fn a_rebuilt_program_or_a_swapped_script_reruns_its_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    // `mystage` is found on PATH as the stage binaries are found beside the runner.
    write_script(
        &dir.join("bin/mystage"),
        "mkdir -p artifacts/out && echo v1 > artifacts/out/x",
    );
    std::fs::write(
        dir.join("pipeline.toml"),
        r#"name = "cache"
contract_version = "1.0"

[entry_points.main]
help = "One stage."
command = ["{program}"]
outs = ["artifacts/out"]

[entry_points.main.parameters]
program = { type = "string", default = "mystage", help = "The program." }
"#,
    )
    .unwrap();
    ok(&run(dir, &["-q"]));
    let second = ok(&run(dir, &["-q"]));
    assert!(second.contains("main: cached"), "{second}");

    // The program is rebuilt (same name, new content): stale, for that reason alone.
    write_script(
        &dir.join("bin/mystage"),
        "mkdir -p artifacts/out && echo v2 > artifacts/out/x",
    );
    let status = String::from_utf8_lossy(&run(dir, &["status"]).stdout).into_owned();
    let reasons: Vec<&str> = status.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(status.starts_with("main: would run"), "{status}");
    assert_eq!(reasons.len(), 1, "{status}");
    assert!(
        reasons[0].starts_with("  - program changed: ") && reasons[0].ends_with("bin/mystage"),
        "{status}"
    );
    let err = ok(&run(dir, &["-q"]));
    assert!(err.contains("program changed"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("artifacts/out/x")).unwrap(),
        "v2\n"
    );

    // A script swapped in by path: the command and the program change.
    write_script(
        &dir.join("other.sh"),
        "mkdir -p artifacts/out && echo swapped > artifacts/out/x",
    );
    let status = String::from_utf8_lossy(&run(dir, &["status", "-P", "program=./other.sh"]).stdout)
        .into_owned();
    assert!(
        status.contains("command changed (was `mystage`, now `./other.sh`)")
            && status.contains("parameters changed: program")
            && status.contains("program changed:"),
        "{status}"
    );
    ok(&run(dir, &["-q", "-P", "program=./other.sh"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("artifacts/out/x")).unwrap(),
        "swapped\n"
    );
    // Editing the swapped-in script is noticed too.
    write_script(
        &dir.join("other.sh"),
        "mkdir -p artifacts/out && echo edited > artifacts/out/x",
    );
    let err = ok(&run(dir, &["-q", "-P", "program=./other.sh"]));
    assert!(err.contains("program changed"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("artifacts/out/x")).unwrap(),
        "edited\n"
    );
    let again = ok(&run(dir, &["-q", "-P", "program=./other.sh"]));
    assert!(again.contains("main: cached"), "{again}");
}
