//! Expand an entry point into the tasks it runs: command entries with their parameters bound and
//! templates rendered; chains in order; repeated chains once per refinement round.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::spec::{render, ArraySpec, Bindings, Resources, Spec, Value};

#[derive(Debug, Clone, Default)]
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

/// The artifacts folder of a run's tasks, as the manifest names it (`artifacts` by default).
pub fn artifacts_of(tasks: &[Task]) -> String {
    tasks
        .iter()
        .find_map(|t| t.params.get("artifacts").map(|v| v.render()))
        .unwrap_or_else(|| "artifacts".to_string())
}

/// The earlier tasks each task reads the outputs of (its deps, optional deps or command-line
/// paths lie in or above their outputs).
pub fn upstream(tasks: &[Task]) -> Vec<Vec<usize>> {
    let touches = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let inputs: Vec<PathBuf> = t
                .deps
                .iter()
                .chain(&t.optional_deps)
                .cloned()
                .chain(
                    t.argv[1..]
                        .iter()
                        .filter(|a| !a.is_empty())
                        .map(PathBuf::from),
                )
                .filter(|p| !t.outs.iter().any(|o| p.starts_with(o)))
                .collect();
            (0..i)
                .filter(|&j| {
                    tasks[j]
                        .outs
                        .iter()
                        .any(|o| inputs.iter().any(|p| touches(p, o)))
                })
                .collect()
        })
        .collect()
}

/// `upstream` without the stages that are also upstream of another of the same task's
/// upstream stages: the stages a stage must wait for directly.
pub fn direct(ups: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut ancestors: Vec<BTreeSet<usize>> = Vec::with_capacity(ups.len());
    for u in ups {
        let mut a = BTreeSet::new();
        for &k in u {
            a.insert(k);
            a.extend(ancestors[k].iter().copied());
        }
        ancestors.push(a);
    }
    ups.iter()
        .map(|u| {
            u.iter()
                .copied()
                .filter(|&j| !u.iter().any(|&k| k != j && ancestors[k].contains(&j)))
                .collect()
        })
        .collect()
}

/// Every task downstream of `from` (itself included), through `ups`.
pub fn downstream(from: usize, ups: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut down = BTreeSet::from([from]);
    for (t, u) in ups.iter().enumerate() {
        if u.iter().any(|j| down.contains(j)) {
            down.insert(t);
        }
    }
    down
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
        // A repeated chain runs once per refinement round from round 2.
        let rounds = match &e.repeat {
            None => round..=round,
            Some(r) => {
                let n = params[r].as_int().unwrap_or(1);
                if n < 1 {
                    bail!("parameter {name}.{r} must be at least 1, not {n}");
                }
                2..=n as u32
            }
        };
        for round in rounds {
            for s in steps {
                expand(spec, s, b, round, out)?;
            }
        }
        return Ok(());
    }
    let values = template_values(&params, round);
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
        Some(a) => task_array(name, a, &params, &values)?,
        None => None,
    };
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

/// What a command's templates may name: the parameters, `round`, `round_dir` and `prev_dir`.
fn template_values(params: &BTreeMap<String, Value>, round: u32) -> BTreeMap<String, String> {
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
    values
}

/// The stage as a job array, when its `array.over` parameter has more than one item.
fn task_array(
    name: &str,
    a: &ArraySpec,
    params: &BTreeMap<String, Value>,
    values: &BTreeMap<String, String>,
) -> Result<Option<TaskArray>> {
    let count = match &params[&a.over] {
        Value::List(items) => items.len() as i64,
        v => v.as_int().unwrap_or(1),
    };
    if count <= 1 {
        return Ok(None);
    }
    let mut with_task = values.clone();
    with_task.insert("task".into(), "{task}".into());
    let rt =
        |t: &String| render(t, &with_task).with_context(|| format!("entry point `{name}` array"));
    Ok(Some(TaskArray {
        count: u32::try_from(count).context("array count")?,
        task: a.task.iter().map(rt).collect::<Result<_>>()?,
        merge: a.merge.iter().map(rt).collect::<Result<_>>()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
[entry_points.a]
command = ["prog", "--classes", "{classes}", "--w", "{w}", "--flag", "{flag}", "--out", "{round_dir}/a"]
[entry_points.a.parameters]
classes = { type = "list", items = "int", default = [1, 2] }
w = { type = "float", default = 1 }
flag = { type = "bool", default = false }
[entry_points.b]
command = ["prog", "{w}"]
[entry_points.b.parameters]
w = { type = "int", default = 3 }
[entry_points.chain]
steps = ["a", "b"]
"#;

    #[test]
    fn a_name_steps_declare_differently_must_be_qualified() {
        let spec = Spec::parse(SPEC).unwrap();
        let over = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let err = Bindings::new(&spec, "chain", &over("w", "2")).unwrap_err();
        assert!(err.to_string().contains("a.w, b.w"), "{err}");
        let b = Bindings::new(&spec, "chain", &over("b.w", "7")).unwrap();
        let tasks = plan(&spec, "chain", &b).unwrap();
        assert_eq!(tasks[0].argv[4], "1", "a.w keeps its default");
        assert_eq!(tasks[1].argv, ["prog", "7"]);
        assert_eq!(
            tasks[0].argv[8], "artifacts/a",
            "round_dir without an artifacts param"
        );
        let err = Bindings::new(&spec, "chain", &over("b.w", "2.5")).unwrap_err();
        assert!(err.to_string().contains("`2.5` is not an int"), "{err}");
    }

    #[test]
    fn stages_depend_on_the_stages_whose_outputs_they_read() {
        let spec = Spec::parse(
            r#"
name = "t"
[entry_points.a]
command = ["p", "--out", "{artifacts}/a"]
outs = ["{artifacts}/a"]
[entry_points.a.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.b]
command = ["p", "--empty", "", "--out", "{artifacts}/b"]
outs = ["{artifacts}/b"]
[entry_points.b.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.c]
command = ["p", "--in", "{artifacts}/a/x.bin", "--out", "{artifacts}/c"]
deps = ["{artifacts}/b"]
outs = ["{artifacts}/c"]
[entry_points.c.parameters]
artifacts = { type = "path", default = "art" }
[entry_points.main]
steps = ["a", "b", "c"]
"#,
        )
        .unwrap();
        let b = Bindings::new(&spec, "main", &[]).unwrap();
        let tasks = plan(&spec, "main", &b).unwrap();
        // b's empty argument is no path: b does not wait for a.
        assert_eq!(upstream(&tasks), vec![vec![], vec![], vec![0, 1]]);
        assert_eq!(artifacts_of(&tasks), "art");
    }

    #[test]
    fn stages_wait_only_for_their_direct_upstream_stages() {
        // 0 → 1 → 2, 0 → 2, 0 → 3
        let ups = vec![vec![], vec![0], vec![0, 1], vec![0]];
        assert_eq!(direct(&ups), vec![vec![], vec![0], vec![1], vec![0]]);
        assert_eq!(downstream(1, &ups), BTreeSet::from([1, 2]));
    }
}
