//! `pipeline export-mlproject`: an MLflow `MLproject` file whose entry points call this runner,
//! so `mlflow run . -e gan-train -P steps=… --env-manager local` works.

use std::fmt::Write as _;

use anyhow::Result;

use crate::spec::{Param, ParamType, Spec};

/// MLflow formats commands with Python's str.format: parameter names must be identifiers.
pub fn mlflow_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).expect("string serialises")
}

/// The MLproject text. `runner` is how MLflow calls this binary from the project folder.
pub fn export(spec: &Spec, runner: &str) -> Result<String> {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by `pipeline export-mlproject` from pipeline.toml; edit pipeline.toml and export again.\n# Each entry point calls the rebalance runner, which type-checks the parameters, caches stages\n# (pipeline.lock) and logs into the MLflow run that `mlflow run` started (MLFLOW_RUN_ID).\nname: {}\n\nentry_points:",
        yaml_str(&spec.name)
    );
    for name in spec.entry_points.keys() {
        let params = spec.params_of(name)?;
        let _ = writeln!(y, "  {}:", yaml_str(name));
        let mut args = String::new();
        let mut lines = String::new();
        for (p, kind) in &params {
            let specs: Vec<(String, crate::spec::ParamSpec)> = match kind {
                Param::Shared(s) => vec![(p.clone(), s.clone())],
                Param::Ambiguous(owners) => owners
                    .iter()
                    .map(|o| {
                        let s = spec.entry_points[o].parameters[p].clone();
                        (format!("{o}.{p}"), s)
                    })
                    .collect(),
            };
            for (key, s) in specs {
                let mname = mlflow_name(&key);
                let mtype = match s.kind {
                    ParamType::Float => "float",
                    ParamType::Path => "path",
                    _ => "string",
                };
                let default = match s.default_value() {
                    Ok(Some(v)) => format!(", default: {}", yaml_str(&v.render())),
                    _ => String::new(),
                };
                let _ = writeln!(lines, "      {mname}: {{type: {mtype}{default}}}");
                let _ = write!(args, " -P {key}={{{mname}}}");
            }
        }
        if lines.is_empty() {
            let _ = writeln!(y, "    parameters: {{}}");
        } else {
            let _ = write!(y, "    parameters:\n{lines}");
        }
        let _ = writeln!(
            y,
            "    command: {}",
            yaml_str(&format!("{runner} -e {name}{args}"))
        );
    }
    Ok(y)
}
