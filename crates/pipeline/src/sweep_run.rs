//! Running a sweep (`pipeline sweep`) and `-P <param>=auto` on either executor.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::{root_of, Executor, RunArgs, RunRequest, SweepArgs};
use crate::guard::{ArtifactsLock, Interrupted, Stop};
use crate::plan::{plan, Task};
use crate::report::{self, ReportInput};
use crate::runner::shell_words;
use crate::session::*;
use crate::spec::{Bindings, ParamType, Spec};
use crate::sweep::{self, SweepResult};
use crate::tracking::{self, Link, Tracker};
use rebalance_core::contract::classify::ClassifierMetrics;
use rebalance_core::contract::layout::file;
use rebalance_core::contract::read_json;
use rebalance_core::contract::runs::{RunStatus, StageStatus};

/// `pipeline sweep`: the entry point once per value of the swept parameter, in order, each a
/// run of its own (an MLflow child run of the sweep's run); the cache reruns only the stages the
/// parameter touches. Then the table and plots, and the report again with the sweep in it.
pub fn sweep(args: SweepArgs) -> Result<()> {
    let run_args = args.run;
    let spec = Spec::load(&run_args.file)?;
    spec.entry(&run_args.entry)?;
    let (fixed, swept) = sweep::split(&spec, &run_args.entry, &run_args.params)?;
    let name = sweep::slug(args.name.as_deref().unwrap_or(&swept.key));
    let Some(done) = run_sweep(&run_args, &spec, fixed, &swept, &name, false)? else {
        return Ok(());
    };
    println!("{}", done.result.markdown());
    drop(done.lock);
    Ok(())
}

/// `-P <param>=auto` for a string parameter whose choices include `auto`: the entry point once
/// per other choice (a sweep named `<param>-auto`), the choice with the best validation
/// macro-F1, then the entry point once more with it, so that the artifacts, the report and the
/// verdict are the chosen one's, on the test split.
pub fn auto(args: RunArgs, spec: &Spec, key: &str, candidates: Vec<String>) -> Result<()> {
    let fixed: Vec<(String, String)> = args
        .params
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect();
    let swept = sweep::Swept {
        key: key.to_string(),
        kind: ParamType::String,
        values: candidates,
    };
    let name = sweep::slug(&format!("{}-auto", key.rsplit('.').next().unwrap_or(key)));
    {
        let mut first = fixed.clone();
        first.push((key.to_string(), swept.values[0].clone()));
        let tasks = plan(
            spec,
            &args.entry,
            &Bindings::new(spec, &args.entry, &first)?,
        )?;
        if !tasks.iter().any(|t| t.entry == "classify") {
            bail!(
                "{key}=auto chooses by a classifier's validation macro-F1, and entry point `{}` \
                 trains none; run the whole chain (`-e main`), or give {key} one of: {}",
                args.entry,
                swept.values.join(", ")
            );
        }
    }
    eprintln!(
        "{key}=auto: trying {} and keeping the best on validation macro-F1",
        swept.values.join(", ")
    );
    let Some(done) = run_sweep(&args, spec, fixed.clone(), &swept, &name, true)? else {
        return Ok(());
    };
    let chosen = done
        .result
        .choice
        .as_ref()
        .map(|c| c.value.clone())
        .ok_or_else(|| anyhow::anyhow!("{key}=auto: no candidate has a validation macro-F1"))?;
    println!("{}", done.result.markdown());
    eprintln!("{key}=auto chose {chosen}; running it again so the artifacts are its own");
    let mut params = fixed;
    params.push((key.to_string(), chosen));
    let bindings = Bindings::new(spec, &args.entry, &params)?;
    let tasks = plan(spec, &args.entry, &bindings)?;
    let out = execute(
        &args,
        &done.root,
        spec,
        &tasks,
        &done.artifacts,
        tracking::new_run_id(),
        &done.stop,
        &Link {
            parent: done.parent_mlflow.clone(),
            name: Some(format!("{key}=auto → {}", params.last().unwrap().1)),
            tags: vec![("rebalance.auto".into(), key.to_string())],
        },
    )?;
    if let Err(e) = out.result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            exit_interrupted(i, &out.tracker, done.lock);
        }
        return Err(e);
    }
    // The report, whatever the cache did, with the choice in it.
    let report = rewrite_report(&tasks, &done.root, &done.artifacts, Some(key))?;
    if let Some(r) = report {
        println!("\n{}\nreport: {}", r.0, r.1.join(file::INDEX).display());
    }
    drop(done.lock);
    Ok(())
}

/// The string parameter set to `auto` among the overrides, when its choices include `auto`:
/// (key, the other choices).
pub fn auto_param(
    spec: &Spec,
    entry: &str,
    params: &[(String, String)],
) -> Option<(String, Vec<String>)> {
    params.iter().find_map(|(k, v)| {
        if v != "auto" {
            return None;
        }
        let decl = sweep::declared(spec, entry, k)?;
        decl.choices.iter().any(|c| c == "auto").then(|| {
            (
                k.clone(),
                decl.choices
                    .iter()
                    .filter(|c| *c != "auto")
                    .cloned()
                    .collect(),
            )
        })
    })
}

/// Write the report of the entry point's `report` stage again (after a sweep or a choice):
/// (verdict, report folder).
pub fn rewrite_report(
    tasks: &[Task],
    root: &Path,
    artifacts: &Path,
    auto: Option<&str>,
) -> Result<Option<(String, PathBuf)>> {
    let Some(out) = tasks
        .iter()
        .find(|t| t.entry == "report")
        .and_then(|t| t.outs.first())
        .map(|o| root.join(o))
    else {
        return Ok(None);
    };
    let rounds = tasks.iter().map(|t| t.round).max().unwrap_or(1);
    let r = report::write(
        &ReportInput {
            artifacts: artifacts.to_path_buf(),
            rounds,
            auto: auto.map(str::to_string),
        },
        &out,
    )?;
    Ok(Some((r.verdict, out)))
}

/// A finished sweep, still holding the artifacts lock.
pub struct SweepDone {
    pub result: SweepResult,
    pub root: PathBuf,
    pub artifacts: PathBuf,
    pub lock: ArtifactsLock,
    pub stop: Stop,
    pub parent_mlflow: Option<String>,
}

/// Run the sweep; `choose`: pick the best value on validation macro-F1. None on --dry-run.
pub fn run_sweep(
    run_args: &RunArgs,
    spec: &Spec,
    fixed: Vec<(String, String)>,
    swept: &sweep::Swept,
    name: &str,
    choose: bool,
) -> Result<Option<SweepDone>> {
    let started = Instant::now();
    let root = root_of(&run_args.file)?;
    let name = name.to_string();
    let plan_for = |value: &str| -> Result<Vec<Task>> {
        let mut all = fixed.clone();
        all.push((swept.key.clone(), value.to_string()));
        let bindings = Bindings::new(spec, &run_args.entry, &all)?;
        plan(spec, &run_args.entry, &bindings)
    };
    let plans: Vec<Vec<Task>> = swept
        .values
        .iter()
        .map(|v| plan_for(v))
        .collect::<Result<_>>()?;
    for p in &plans {
        sweep::result_tasks(p)?;
    }
    let shown = artifacts_of(&plans[0]);
    let artifacts = root.join(&shown);
    let dir = artifacts.join(sweep::SWEEPS).join(&name);
    if run_args.dry_run {
        for (v, tasks) in swept.values.iter().zip(&plans) {
            println!("{}={v}:", swept.key);
            for t in tasks {
                println!("  $ {}", shell_words(&t.argv));
            }
        }
        println!("results: {}", dir.display());
        return Ok(None);
    }
    let Session { id, lock, stop, .. } = Session::open(&root, &plans[0], run_args.wait)?;
    let mut params: std::collections::BTreeMap<String, String> = fixed.iter().cloned().collect();
    params.insert(
        format!("sweep.{}", swept.key),
        swept.values.join(if swept.kind == ParamType::List {
            ";"
        } else {
            ","
        }),
    );
    let sweep_entry = format!("sweep:{}", run_args.entry);
    let mut parent = Tracker::start(
        &artifacts,
        id,
        &spec.name,
        &sweep_entry,
        params,
        &Link {
            name: Some(format!("sweep {name} ({})", swept.key)),
            tags: vec![("rebalance.sweep".into(), name.clone())],
            ..Link::default()
        },
    )?;
    eprintln!(
        "sweep {name}: {} = {} ({} values); records in {}",
        swept.key,
        swept.values.join(", "),
        swept.values.len(),
        parent.dir.display()
    );
    let mut rows = Vec::new();
    let mut rare = Vec::new();
    let mut baseline = None;
    for (i, (value, tasks)) in swept.values.iter().zip(&plans).enumerate() {
        if i == 1 && run_args.executor == Executor::Slurm {
            // The first value ran every stage; the others run side by side as one job array.
            let on_slurm = SlurmSweep {
                run_args,
                fixed: &fixed,
                swept,
                name: &name,
                plans: &plans,
                root: &root,
                dir: &dir,
            };
            let rest = match on_slurm.rest(&mut parent, &stop, &rare) {
                Ok(r) => r,
                Err(e) => return Err(stop_sweep(&mut parent, None, lock, e)?),
            };
            for (j, row) in rest.into_iter().enumerate() {
                for (k, s) in &row.metrics {
                    parent.metric(&format!("sweep.{k}"), s.mean, (j + 1) as i64)?;
                }
                rows.push(row);
            }
            break;
        }
        eprintln!(
            "sweep {name}: [{}/{}] {}={value}",
            i + 1,
            plans.len(),
            swept.key
        );
        let link = Link {
            parent: parent.mlflow_run_id().map(str::to_string),
            name: Some(format!("{}={value}", swept.key)),
            tags: vec![
                ("rebalance.sweep".into(), name.clone()),
                ("rebalance.sweep.param".into(), swept.key.clone()),
                ("rebalance.sweep.value".into(), value.clone()),
            ],
        };
        let out = execute(
            run_args,
            &root,
            spec,
            tasks,
            &artifacts,
            tracking::new_run_id(),
            &stop,
            &link,
        )?;
        if let Err(e) = out.result {
            let e = stop_sweep(&mut parent, Some(&out.tracker), lock, e)?;
            return Err(e.context(format!("sweep {name}: {}={value}", swept.key)));
        }
        let results = sweep::result_tasks(tasks)?;
        if rare.is_empty() {
            let m: ClassifierMetrics = read_json(
                &sweep::output_file(results.classify, &root, file::METRICS)
                    .ok_or_else(|| anyhow::anyhow!("{} left no metrics", results.classify.key))?,
            )?;
            rare = m.rare_classes.clone();
        }
        let row = sweep::collect_row(
            value,
            out.tracker.id(),
            stages_ran(&out.tracker),
            &results,
            &root,
            &rare,
            &dir.join(sweep::slug(&format!("{}={value}", swept.key))),
        )?;
        eprintln!("sweep {name}: {}={value}: {}", swept.key, row.summary());
        for (k, s) in &row.metrics {
            parent.metric(&format!("sweep.{k}"), s.mean, i as i64)?;
        }
        if baseline.is_none() {
            baseline = results
                .baseline
                .and_then(|(t, name)| sweep::output_file(t, &root, name))
                .and_then(|p| read_json::<ClassifierMetrics>(&p).ok())
                .map(|m| sweep::summarize(&m, &rare));
        }
        rows.push(row);
    }
    let mut result = SweepResult {
        name: name.clone(),
        entry: run_args.entry.clone(),
        param: swept.key.clone(),
        fixed,
        rare_classes: rare,
        baseline,
        rows,
        choice: None,
    };
    if choose {
        result.choice = result.best_on_validation().map(|r| sweep::Choice {
            value: r.value.clone(),
            by: "validation macro-F1, mean over seeds".into(),
        });
    }
    result.write(&dir)?;
    // The report again, now with the sweep's table and plots.
    let report = rewrite_report(&plans[0], &root, &artifacts, None)?;
    let mut upload: Vec<(PathBuf, String)> = ["sweep.json", "table.md", "table.csv"]
        .iter()
        .map(|f| (dir.join(f), format!("sweep/{f}")))
        .collect();
    for (k, _) in sweep::COLUMNS {
        upload.push((dir.join(format!("{k}.svg")), format!("sweep/{k}.svg")));
    }
    if let Some(c) = &result.choice {
        parent.tag(&format!("rebalance.choice.{}", swept.key), &c.value)?;
    }
    parent.finish(RunStatus::Finished, None, &upload)?;
    eprintln!(
        "sweep {name}: {} values in {:.1} s; table and plots in {}{}",
        result.rows.len(),
        started.elapsed().as_secs_f64(),
        dir.display(),
        report
            .map(|(_, d)| format!(", report {}", d.join(file::INDEX).display()))
            .unwrap_or_default()
    );
    Ok(Some(SweepDone {
        result,
        root,
        artifacts,
        lock,
        stop,
        parent_mlflow: parent.mlflow_run_id().map(str::to_string),
    }))
}

/// `pipeline sweep --executor slurm`, after the first value ran in the artifacts folder: every
/// other value in a folder of its own (`sweep::mirror`, so the stages the parameter does not
/// touch are cached there), run by one task of a Slurm job array each, at the same time.
pub struct SlurmSweep<'a> {
    run_args: &'a RunArgs,
    fixed: &'a [(String, String)],
    swept: &'a sweep::Swept,
    name: &'a str,
    plans: &'a [Vec<Task>],
    root: &'a Path,
    dir: &'a Path,
}

impl SlurmSweep<'_> {
    /// The values after the first, as a job array; their rows.
    fn rest(
        &self,
        parent: &mut Tracker,
        stop: &Stop,
        rare: &[String],
    ) -> Result<Vec<sweep::SweepRow>> {
        let runner = std::env::current_exe().context("finding this runner's own path")?;
        let manifest = std::fs::canonicalize(&self.run_args.file)?;
        let lock = self
            .run_args
            .lock
            .clone()
            .unwrap_or_else(|| self.root.join("pipeline.lock"));
        let artifacts = PathBuf::from(artifacts_of(&self.plans[0]));
        let key = &self.swept.key;
        let values = &self.swept.values[1..];
        let mut scripts = Vec::new();
        let mut folders = Vec::new();
        for value in values {
            let slug = sweep::slug(&format!("{key}={value}"));
            let folder = self.dir.join("values").join(&slug);
            sweep::mirror(self.root, &manifest, &lock, &artifacts, &folder)?;
            let argv = RunRequest {
                file: manifest
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                entry: self.run_args.entry.clone(),
                quiet: true,
                params: self
                    .fixed
                    .iter()
                    .cloned()
                    .chain(std::iter::once((key.clone(), value.clone())))
                    .collect(),
                parent_run: parent.mlflow_run_id().map(str::to_string),
                run_name: Some(format!("{key}={value}")),
                run_tags: vec![
                    ("rebalance.sweep".into(), self.name.to_string()),
                    ("rebalance.sweep.param".into(), key.clone()),
                    ("rebalance.sweep.value".into(), value.clone()),
                ],
            }
            .to_argv(&runner.display().to_string());
            let words: Vec<String> = argv.iter().map(|a| crate::slurm::sh_quote(a)).collect();
            scripts.push(format!(
                "cd {} && exec {}",
                crate::slurm::sh_quote(&folder.display().to_string()),
                words.join(" ")
            ));
            folders.push(folder);
        }
        let request = self.request();
        let art_dir = self.root.join(artifacts_of(&self.plans[0]));
        let comment =
            crate::slurm::job_comment(&art_dir.canonicalize().unwrap_or(art_dir), parent.id());
        let jobs = crate::slurm::run_array(
            &format!("sweep-{}", self.name),
            &comment,
            &scripts,
            &request,
            self.root,
            &parent.dir.join("logs"),
            &parent.env(),
            stop,
            !self.run_args.quiet,
        );
        let jobs = jobs?;
        let mut rows = Vec::new();
        for ((value, folder), (job, log)) in values.iter().zip(&folders).zip(&jobs) {
            if job.state != "COMPLETED" {
                bail!(
                    "sweep {}: {key}={value} failed: Slurm job {} ended {} (exit code {}). Its log: {}\n--- last lines ---\n{}",
                    self.name,
                    job.id,
                    job.state,
                    job.exit_code,
                    log.display(),
                    crate::runner::last_lines(log, 12)
                );
            }
            let plan = &self.plans[1 + rows.len()];
            let record = newest_run(&folder.join(&artifacts))?;
            let ran = record
                .stages
                .iter()
                .filter(|s| s.status == StageStatus::Ran)
                .map(|s| s.key.clone())
                .collect();
            let row = sweep::collect_row(
                value,
                &record.id,
                ran,
                &sweep::result_tasks(plan)?,
                folder,
                rare,
                &self.dir.join(sweep::slug(&format!("{key}={value}"))),
            )?;
            eprintln!(
                "sweep {}: {key}={value} (Slurm {}): {}",
                self.name,
                job.id,
                row.summary()
            );
            rows.push(row);
        }
        Ok(rows)
    }

    /// What each value's job asks for: the request of the heaviest stage the parameter touches
    /// (or that runs after one it touches).
    fn request(&self) -> crate::spec::Resources {
        let first = &self.plans[0];
        let mut best = crate::spec::Resources::default();
        for plan in &self.plans[1..] {
            let ups = crate::slurm::upstream(plan);
            let mut touched = vec![false; plan.len()];
            for (i, t) in plan.iter().enumerate() {
                let same = first.iter().find(|f| f.key == t.key).is_some_and(|f| {
                    f.argv == t.argv && f.rendered_params() == t.rendered_params()
                });
                touched[i] = !same || ups[i].iter().any(|&j| touched[j]);
                if touched[i] {
                    let r = self.run_args.resources.resolve(t);
                    if (r.cpus, r.gpus) > (best.cpus, best.gpus) {
                        best = r;
                    }
                }
            }
        }
        best
    }
}
