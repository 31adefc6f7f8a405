//! Tiny synthetic image sets for the stages' tests: class `c` of `k` is a bright horizontal bar
//! at its own row on a dark background, with a little deterministic noise.

use std::path::Path;

use anyhow::Result;

use rebalance_core::ImageSet;

/// One bar image of class `c` (variant `i` shifts the noise and the bar's thickness).
pub fn bar_image(c: usize, i: usize, side: usize, k: usize) -> Vec<u8> {
    let mut px = vec![0u8; side * side];
    let row = (side / (k + 1)) * (c + 1);
    for x in 0..side {
        px[row * side + x] = 255;
        if i % 2 == 1 && row + 1 < side {
            px[(row + 1) * side + x] = 200;
        }
        let noise = (i * 131 + x * 17 + c * 7) % (side * side);
        px[noise] = px[noise].max(50);
    }
    px
}

/// A set with `counts[c]` bar images of class c; `offset` varies the images between splits.
pub fn bar_set(counts: &[usize], side: usize, offset: usize) -> ImageSet {
    let k = counts.len();
    let classes = (0..k).map(|c| format!("class{c}")).collect();
    let mut set = ImageSet::empty(classes, 1, side, side);
    for (c, &n) in counts.iter().enumerate() {
        for i in 0..n {
            set.push(&bar_image(c, i + offset, side, k), c as i64);
        }
    }
    set
}

/// Write `train/val/test.safetensors` into `dir` (what ingest writes, without the reports).
pub fn bar_splits(dir: &Path, train: &[usize], val: usize, test: usize, side: usize) -> Result<()> {
    let k = train.len();
    bar_set(train, side, 0).write(&dir.join("train.safetensors"))?;
    bar_set(&vec![val; k], side, 1000).write(&dir.join("val.safetensors"))?;
    bar_set(&vec![test; k], side, 2000).write(&dir.join("test.safetensors"))?;
    Ok(())
}

/// What [`pipeline_toml_drift`] found for one program.
#[derive(Debug, Default)]
pub struct Drift {
    /// Entry points whose command starts the program (and that were checked).
    pub entries: Vec<String>,
    /// Parameters whose default was compared with the clap default, as `entry.param`.
    pub checked: Vec<String>,
    /// Every flag the manifest uses that the program does not have, and every default that
    /// differs from clap's.
    pub problems: Vec<String>,
}

/// Compare `pipeline.toml` (at `manifest`) with a stage's clap command: the entry points whose
/// command runs `program` (and whose second word is not one of `skip_subcommands`) may use only
/// flags the program has, and a parameter named like a flag must carry the flag's clap default.
/// Numbers compare by value (`2e-4` = `0.0002`).
pub fn pipeline_toml_drift(
    manifest: &Path,
    program: &str,
    skip_subcommands: &[&str],
    cmd: &clap::Command,
) -> Result<Drift> {
    let text = std::fs::read_to_string(manifest)?;
    let doc: toml::Table = toml::from_str(&text)?;
    let known = |long: &str| cmd.get_arguments().find(|a| a.get_long() == Some(long));
    let mut drift = Drift::default();
    let entries = doc
        .get("entry_points")
        .and_then(|e| e.as_table())
        .cloned()
        .unwrap_or_default();
    for (name, entry) in &entries {
        let argv: Vec<&str> = entry
            .get("command")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if argv.first() != Some(&program)
            || argv.get(1).is_some_and(|w| skip_subcommands.contains(w))
        {
            continue;
        }
        drift.entries.push(name.clone());
        for flag in argv.iter().filter(|a| a.starts_with("--")) {
            // `--flag={param}` names the flag before the `=`.
            let long = flag[2..].split('=').next().unwrap_or_default();
            if known(long).is_none() {
                drift
                    .problems
                    .push(format!("{name}: {program} has no flag {flag}"));
            }
        }
        let params = entry.get("parameters").and_then(|p| p.as_table());
        for (param, spec) in params.into_iter().flatten() {
            let Some(arg) = known(&param.replace('_', "-")) else {
                continue;
            };
            let Some(default) = arg.get_default_values().first() else {
                continue;
            };
            let clap_default = default.to_string_lossy().into_owned();
            let ours = match spec.get("default") {
                Some(toml::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let same = ours == clap_default
                || matches!((ours.parse::<f64>(), clap_default.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
            if !same {
                drift.problems.push(format!(
                    "{name}.{param} = {ours} in the manifest, but {program} --{} defaults to {clap_default}",
                    param.replace('_', "-")
                ));
            }
            drift.checked.push(format!("{name}.{param}"));
        }
    }
    Ok(drift)
}

/// [`pipeline_toml_drift`] against the repository's `pipeline.toml`, failing the calling test on
/// any problem; what was checked.
pub fn assert_pipeline_toml_matches(
    program: &str,
    skip_subcommands: &[&str],
    cmd: &clap::Command,
) -> Drift {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipeline.toml");
    let d = pipeline_toml_drift(&manifest, program, skip_subcommands, cmd)
        .unwrap_or_else(|e| panic!("reading {}: {e:#}", manifest.display()));
    assert!(d.problems.is_empty(), "{:#?}", d.problems);
    d
}

/// Read a TensorBoard log folder back with the `tensorboard` package in the project's `.venv`
/// (its EventAccumulator, what TensorBoard itself uses): `{"scalars": {tag: [[step, value]]},
/// "images": {tag: [[step, width, height]]}}`. For tests; panics with the reason on failure.
pub fn read_tensorboard(dir: &Path) -> serde_json::Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
ea.Reload()
tags = ea.Tags()
print(json.dumps({
    "scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height] for e in ea.Images(t)] for t in tags["images"]},
}))
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup --test)", python.display()));
    assert!(
        out.status.success(),
        "reading {} with tensorboard: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}
