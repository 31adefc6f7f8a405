//! Expand an entry point into the tasks it runs: command entries with their parameters bound and
//! templates rendered; chains in order; repeated chains once per refinement round.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::spec::{render, Bindings, Resources, Spec, Value};

#[derive(Debug, Clone)]
pub struct Task {
    /// Unique within a run: the entry name, prefixed `round<r>/` in refinement rounds.
    pub key: String,
    pub entry: String,
    pub round: u32,
    pub argv: Vec<String>,
    pub deps: Vec<PathBuf>,
    pub optional_deps: Vec<PathBuf>,
    pub outs: Vec<PathBuf>,
    pub params: BTreeMap<String, Value>,
    /// The Slurm request: the entry point's `resources` over the manifest's.
    pub resources: Resources,
    /// Set when `--executor slurm` fans the stage out as a job array of more than one task.
    pub array: Option<TaskArray>,
}

/// A stage as a job array: `count` tasks, each running the command plus `task` (where
/// `{task}` stands for the task's index), then one job running the command plus `merge`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskArray {
    pub count: u32,
    pub task: Vec<String>,
    pub merge: Vec<String>,
}

impl Task {
    pub fn rendered_params(&self) -> BTreeMap<String, String> {
        self.params
            .iter()
            .map(|(k, v)| (k.clone(), v.render()))
            .collect()
    }
}

/// The folder a round's outputs go to.
pub fn round_dir(artifacts: &str, round: u32) -> String {
    if round <= 1 {
        artifacts.to_string()
    } else {
        format!("{artifacts}/rounds/{round}")
    }
}

pub fn plan(spec: &Spec, entry: &str, bindings: &Bindings) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    expand(spec, entry, bindings, 1, &mut tasks)?;
    Ok(tasks)
}

fn expand(spec: &Spec, name: &str, b: &Bindings, round: u32, out: &mut Vec<Task>) -> Result<()> {
    let e = spec.entry(name)?;
    let params = b.values_for(spec, name)?;
    if let Some(steps) = &e.steps {
        match &e.repeat {
            None => {
                for s in steps {
                    expand(spec, s, b, round, out)?;
                }
            }
            Some(r) => {
                let n = params[r].as_int().unwrap_or(1);
                if n < 1 {
                    bail!("parameter {name}.{r} must be at least 1, not {n}");
                }
                for round in 2..=n as u32 {
                    for s in steps {
                        expand(spec, s, b, round, out)?;
                    }
                }
            }
        }
        return Ok(());
    }
    let mut values: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.render()))
        .collect();
    let artifacts = values
        .get("artifacts")
        .cloned()
        .unwrap_or_else(|| "artifacts".to_string());
    values.insert("round".into(), round.to_string());
    values.insert("round_dir".into(), round_dir(&artifacts, round));
    values.insert(
        "prev_dir".into(),
        round_dir(&artifacts, round.saturating_sub(1)),
    );
    let r = |t: &String| render(t, &values).with_context(|| format!("entry point `{name}`"));
    let argv = e
        .command
        .as_ref()
        .expect("validated: command or steps")
        .iter()
        .map(r)
        .collect::<Result<Vec<_>>>()?;
    let paths = |ts: &Vec<String>| -> Result<Vec<PathBuf>> {
        ts.iter().map(|t| r(t).map(PathBuf::from)).collect()
    };
    let key = if round <= 1 {
        name.to_string()
    } else {
        format!("round{round}/{name}")
    };
    if out.iter().any(|t| t.key == key) {
        bail!("entry point `{name}` runs twice in one chain (round {round})");
    }
    let array = match &e.array {
        Some(a) => {
            let count = match &params[&a.over] {
                Value::List(items) => items.len() as i64,
                v => v.as_int().unwrap_or(1),
            };
            let mut with_task = values.clone();
            with_task.insert("task".into(), "{task}".into());
            let rt = |t: &String| {
                render(t, &with_task).with_context(|| format!("entry point `{name}` array"))
            };
            (count > 1).then(|| -> Result<TaskArray> {
                Ok(TaskArray {
                    count: u32::try_from(count).context("array count")?,
                    task: a.task.iter().map(rt).collect::<Result<_>>()?,
                    merge: a.merge.iter().map(rt).collect::<Result<_>>()?,
                })
            })
        }
        None => None,
    }
    .transpose()?;
    out.push(Task {
        key,
        entry: name.to_string(),
        round,
        argv,
        deps: paths(&e.deps)?,
        optional_deps: paths(&e.optional_deps)?,
        outs: paths(&e.outs)?,
        params,
        resources: spec.resources.overlaid(&e.resources),
        array,
    });
    Ok(())
}
