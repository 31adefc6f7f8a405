//! What a stage's Slurm job asks for: the manifest's `resources`, then the `-P resources.…`
//! overrides, and the `sbatch` options that say it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::plan::Task;
use crate::spec::{Resources, Spec};

/// `-P resources.<key>=…` (every stage) and `-P <entry>.resources.<key>=…` (one entry point).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub all: Resources,
    pub entries: BTreeMap<String, Resources>,
}

impl Overrides {
    /// Take the resource overrides out of `-P` pairs; the rest are parameters.
    pub fn split(
        spec: &Spec,
        params: &[(String, String)],
    ) -> Result<(Vec<(String, String)>, Overrides)> {
        let mut rest = Vec::new();
        let mut o = Overrides::default();
        for (k, v) in params {
            if let Some(key) = k.strip_prefix("resources.") {
                o.all.set(key, v)?;
            } else if let Some((entry, key)) = k.split_once(".resources.") {
                spec.entry(entry)
                    .with_context(|| format!("-P {k}: no such entry point"))?;
                o.entries
                    .entry(entry.to_string())
                    .or_default()
                    .set(key, v)?;
            } else {
                rest.push((k.clone(), v.clone()));
            }
        }
        Ok((rest, o))
    }

    /// What a task's job asks for: the manifest's, then these overrides; a command with
    /// `--device cuda` gets one GPU unless `gpus` is set.
    pub fn resolve(&self, task: &Task) -> Resources {
        let mut r = task.resources.overlaid(&self.all);
        if let Some(e) = self.entries.get(&task.entry) {
            r = r.overlaid(e);
        }
        if r.gpus.is_none() && asks_for_cuda(&task.argv) {
            r.gpus = Some(1);
        }
        r
    }
}

fn asks_for_cuda(argv: &[String]) -> bool {
    argv.windows(2)
        .any(|w| w[0] == "--device" && w[1].starts_with("cuda"))
        || argv.iter().any(|a| a.starts_with("--device=cuda"))
}

/// The `sbatch` options for a request.
pub fn sbatch_options(r: &Resources) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(c) = r.cpus {
        o.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = r.mem.as_deref().filter(|m| !m.is_empty()) {
        o.push(format!("--mem={m}"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        o.push(format!("--gpus={g}"));
    }
    if let Some(t) = r.time.as_deref().filter(|t| !t.is_empty()) {
        o.push(format!("--time={t}"));
    }
    if let Some(p) = r.partition.as_deref().filter(|p| !p.is_empty()) {
        o.push(format!("--partition={p}"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_overrides_are_split_from_parameters_and_layered() {
        let spec = Spec::parse(
            r#"
name = "t"
[resources]
cpus = 1
mem = "1G"
[entry_points.a]
command = ["prog", "--device", "{device}"]
[entry_points.a.parameters]
device = { type = "string", default = "cuda" }
[entry_points.a.resources]
cpus = 2
"#,
        )
        .unwrap();
        let params = vec![
            ("resources.mem".to_string(), "2G".to_string()),
            ("a.resources.time".to_string(), "01:00:00".to_string()),
            ("device".to_string(), "cuda".to_string()),
        ];
        let (rest, o) = Overrides::split(&spec, &params).unwrap();
        assert_eq!(rest, vec![("device".to_string(), "cuda".to_string())]);
        let b = crate::spec::Bindings::new(&spec, "a", &rest).unwrap();
        let tasks = crate::plan::plan(&spec, "a", &b).unwrap();
        let r = o.resolve(&tasks[0]);
        assert_eq!(r.cpus, Some(2));
        assert_eq!(r.mem.as_deref(), Some("2G"));
        assert_eq!(r.time.as_deref(), Some("01:00:00"));
        assert_eq!(r.gpus, Some(1), "--device cuda asks for a GPU");
        assert_eq!(
            sbatch_options(&r),
            [
                "--cpus-per-task=2",
                "--mem=2G",
                "--gpus=1",
                "--time=01:00:00"
            ]
        );
        let err = Overrides::split(&spec, &[("resources.cores".into(), "2".into())]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown resource `cores`"),
            "{err:#}"
        );
        let err = Overrides::split(&spec, &[("resources.cpus".into(), "two".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("whole number"), "{err:#}");
        let err = Overrides::split(&spec, &[("b.resources.cpus".into(), "2".into())]).unwrap_err();
        assert!(format!("{err:#}").contains("no entry point `b`"), "{err:#}");
    }
}
