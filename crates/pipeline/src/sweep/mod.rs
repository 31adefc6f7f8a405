//! `pipeline sweep`: an entry point run once per value of one parameter. The runner's cache
//! makes each value rerun only the stages the parameter touches; this module finds the swept
//! parameter among the `-P` overrides, summarises each value's classifier on the real test
//! split, and writes the table and plots to `<artifacts>/sweeps/<name>/`.

pub mod mirror;
pub mod rows;
pub mod run;
pub mod slurm;
pub mod table;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::RunArgs;
use crate::plan::Task;
use crate::spec::{Bindings, Param, ParamSpec, ParamType, Spec};

/// The parameter a sweep varies, with its values as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Swept {
    /// As given: `add` or `augment.add`.
    pub key: String,
    pub kind: ParamType,
    pub values: Vec<String>,
}

/// The declaration of `-P key=…` for `entry`, when it names one unambiguously.
pub fn declared(spec: &Spec, entry: &str, key: &str) -> Option<ParamSpec> {
    if let Some((owner, p)) = key.split_once('.') {
        return spec.entry_points.get(owner)?.parameters.get(p).cloned();
    }
    match spec.params_of(entry).ok()?.remove(key)? {
        Param::Shared(s) => Some(s),
        Param::Ambiguous(_) => None,
    }
}

/// Split the overrides into the fixed ones and the swept parameter: the one whose value holds
/// several values (comma-separated; semicolon-separated when a `;` is present, and always for a
/// list parameter, whose single value is itself comma-separated). Every value is checked against the parameter's type.
pub fn split(
    spec: &Spec,
    entry: &str,
    overrides: &[(String, String)],
) -> Result<(Vec<(String, String)>, Swept)> {
    let mut fixed = Vec::new();
    let mut swept: Vec<Swept> = Vec::new();
    for (key, raw) in overrides {
        let Some(decl) = declared(spec, entry, key) else {
            fixed.push((key.clone(), raw.clone()));
            continue;
        };
        // `;` separates values when present (a value may then hold commas, as `keep` does),
        // and always for a list parameter, whose single value is comma-separated.
        let sep = if decl.kind == ParamType::List || raw.contains(';') {
            ';'
        } else {
            ','
        };
        if !raw.contains(sep) {
            fixed.push((key.clone(), raw.clone()));
            continue;
        }
        let values: Vec<String> = raw
            .split(sep)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.len() < 2 {
            bail!("-P {key}={raw}: a sweep needs at least two values");
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                bail!("-P {key}={raw}: the value `{v}` is given twice");
            }
        }
        swept.push(Swept {
            key: key.clone(),
            kind: decl.kind,
            values,
        });
    }
    // Unknown or ambiguous keys get the runner's own error.
    Bindings::new(spec, entry, &fixed)?;
    let swept = match swept.len() {
        0 => bail!(
            "nothing to sweep: give one parameter several values, e.g. `pipeline sweep -P add=0,250,500,1000` \
             (values that hold commas are separated by `;`)"
        ),
        1 => swept.remove(0),
        _ => bail!(
            "a sweep varies one parameter; {} all have several values",
            swept
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for v in &swept.values {
        let mut all = fixed.clone();
        all.push((swept.key.clone(), v.clone()));
        Bindings::new(spec, entry, &all)?;
    }
    Ok((fixed, swept))
}

/// A file or folder name for a value: `/` and other path-unfriendly characters become `_`.
pub fn slug(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

/// One sweep: its parameter, values, name, plans and folder.
pub struct Sweep<'a> {
    pub run_args: &'a RunArgs,
    pub spec: &'a Spec,
    pub fixed: Vec<(String, String)>,
    pub swept: &'a Swept,
    pub name: String,
    pub plans: Vec<Vec<Task>>,
    /// `<artifacts>/sweeps/<name>`.
    pub dir: PathBuf,
}

impl Sweep<'_> {
    /// `-P <key>=<value>` for one value.
    pub fn label(&self, value: &str) -> String {
        format!("{}={value}", self.swept.key)
    }

    /// The folder that keeps one value's metrics and composition.
    pub fn value_dir(&self, value: &str) -> PathBuf {
        self.dir.join(slug(&self.label(value)))
    }

    /// The MLflow tags of one value's run.
    pub fn tags(&self, value: &str) -> Vec<(String, String)> {
        vec![
            ("rebalance.sweep".into(), self.name.clone()),
            ("rebalance.sweep.param".into(), self.swept.key.clone()),
            ("rebalance.sweep.value".into(), value.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
name = "t"
[entry_points.a]
command = ["a", "{add}", "{keep}", "{seeds}"]
[entry_points.a.parameters]
add = { type = "int", default = 0 }
keep = { type = "list", items = "string", default = ["x"] }
seeds = { type = "int", default = 1 }
strategy = { type = "string", default = "s", choices = ["s", "t"] }
tag = { type = "string", default = "" }
"#;

    fn spec() -> Spec {
        Spec::parse(TOML).unwrap()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_parameter_with_several_values_is_swept() {
        let (fixed, s) = split(&spec(), "a", &[p("add", "0, 250,500"), p("seeds", "3")]).unwrap();
        assert_eq!(fixed, vec![p("seeds", "3")]);
        assert_eq!(s.key, "add");
        assert_eq!(s.values, ["0", "250", "500"]);
        // A list parameter's values are separated by `;`; a comma stays inside a value.
        let (_, s) = split(&spec(), "a", &[p("keep", "2=10,5=10;2=5")]).unwrap();
        assert_eq!(s.values, ["2=10,5=10", "2=5"]);
        let (_, s) = split(&spec(), "a", &[p("a.add", "1,2")]).unwrap();
        assert_eq!(s.key, "a.add");
        // A string whose values hold commas: `;` separates them.
        let (_, s) = split(&spec(), "a", &[p("tag", "x=1,y=2;x=3")]).unwrap();
        assert_eq!(s.values, ["x=1,y=2", "x=3"]);
    }

    #[test]
    fn bad_sweeps_are_refused_with_the_reason() {
        let err = |o: &[(String, String)]| format!("{:#}", split(&spec(), "a", o).unwrap_err());
        assert!(err(&[p("add", "1")]).contains("nothing to sweep"));
        assert!(err(&[p("add", "1,2"), p("seeds", "1,3")]).contains("add, seeds"));
        assert!(err(&[p("add", "1,x")]).contains("`x` is not an int"));
        assert!(err(&[p("add", "1,1")]).contains("given twice"));
        assert!(err(&[p("add", "1,")]).contains("at least two values"));
        assert!(err(&[p("strategy", "s,u")]).contains("`u` is not one of s, t"));
        assert!(err(&[p("add", "1,2"), p("nope", "1")]).contains("unknown parameter `nope`"));
    }

    #[test]
    fn slugs_are_safe_folder_names() {
        assert_eq!(slug("250"), "250");
        assert_eq!(slug("synthetic+classical"), "synthetic+classical");
        assert_eq!(slug("../x/y"), ".._x_y");
        assert_eq!(slug(".."), "_");
    }
}
