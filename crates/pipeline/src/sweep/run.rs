//! Running a sweep (`pipeline sweep`) and `-P <param>=auto`, on either executor: the first
//! value (every value, locally) a run of its own inside the sweep's session; on Slurm the
//! other values side by side as one job array ([`super::slurm`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rebalance_core::contract::classify::ClassifierMetrics;
use rebalance_core::contract::layout::file;
use rebalance_core::contract::read_json;
use rebalance_core::contract::runner::{
    Choice, SweepResult, SweepRow, SWEEPS, SWEEP_COLUMNS, SWEEP_JSON, TABLE_CSV, TABLE_MD,
};
use rebalance_core::contract::runs::RunStatus;

use super::rows::{collect_row, output_file, result_tasks, summarize};
use super::slurm::SlurmSweep;
use super::table::Tables;
use super::{declared, slug, split, Sweep, Swept};
use crate::cli::{ExecutorKind, RunArgs, SweepArgs};
use crate::guard::Interrupted;
use crate::plan::{artifacts_of, plan, Task};
use crate::report::{self, ReportInput};
use crate::session::{stages_ran, RunStart, Session};
use crate::spec::{Bindings, ParamType, Spec};
use crate::tracking::Link;
use crate::util::shell_words;

/// `pipeline sweep`: the entry point once per value of the swept parameter, in order, each a
/// run of its own (an MLflow child run of the sweep's run); the cache reruns only the stages the
/// parameter touches. Then the table and plots, and the report again with the sweep in it.
pub fn sweep(args: SweepArgs) -> Result<()> {
    let run_args = args.run;
    let spec = Spec::load(&run_args.file)?;
    spec.entry(&run_args.entry)?;
    let (fixed, swept) = split(&spec, &run_args.entry, &run_args.params)?;
    let name = slug(args.name.as_deref().unwrap_or(&swept.key));
    let Some(done) = run_sweep(&run_args, &spec, fixed, &swept, &name, false)? else {
        return Ok(());
    };
    println!("{}", done.result.markdown());
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
    let swept = Swept {
        key: key.to_string(),
        kind: ParamType::String,
        values: candidates,
    };
    let name = slug(&format!("{}-auto", key.rsplit('.').next().unwrap_or(key)));
    check_auto(&args, spec, &fixed, &swept)?;
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
        .ok_or_else(|| anyhow!("{key}=auto: no candidate has a validation macro-F1"))?;
    println!("{}", done.result.markdown());
    eprintln!("{key}=auto chose {chosen}; running it again so the artifacts are its own");
    let mut params = fixed;
    params.push((key.to_string(), chosen.clone()));
    let tasks = plan(
        spec,
        &args.entry,
        &Bindings::new(spec, &args.entry, &params)?,
    )?;
    let session = done.session;
    let link = Link {
        parent: session.tracker.mlflow_run_id().map(str::to_string),
        name: Some(format!("{key}=auto → {chosen}")),
        tags: vec![("rebalance.auto".into(), key.to_string())],
    };
    let mut record = session.child(spec, &args.entry, &tasks, &link)?;
    let out = session.run_child(&args, &tasks, &mut record)?;
    if let Err(e) = out.result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            session.exit_interrupted(i, Some(&record));
        }
        return Err(e);
    }
    // The report, whatever the cache did, with the choice in it.
    if let Some(r) = rewrite_report(&tasks, &session.root, &session.artifacts, Some(key))? {
        println!("\n{}\nreport: {}", r.0, r.1.join(file::INDEX).display());
    }
    Ok(())
}

/// `auto` chooses by a classifier's validation macro-F1: the entry point must train one.
fn check_auto(
    args: &RunArgs,
    spec: &Spec,
    fixed: &[(String, String)],
    swept: &Swept,
) -> Result<()> {
    let mut first = fixed.to_vec();
    first.push((swept.key.clone(), swept.values[0].clone()));
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
            swept.values.join(", "),
            key = swept.key
        );
    }
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
        let decl = declared(spec, entry, k)?;
        decl.choices.iter().any(|c| c == "auto").then(|| {
            let others = decl.choices.iter().filter(|c| *c != "auto").cloned();
            (k.clone(), others.collect())
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
    let input = ReportInput {
        artifacts: artifacts.to_path_buf(),
        rounds,
        auto: auto.map(str::to_string),
    };
    let r = report::write(&input, &out)?;
    Ok(Some((r.verdict, out)))
}

/// A finished sweep, its session (the artifacts lock) still open.
pub struct SweepDone {
    pub result: SweepResult,
    pub session: Session,
}

/// What the rows so far found: the rare classes and the real-only baseline.
#[derive(Default)]
struct Found {
    rare: Vec<String>,
    baseline: Option<BTreeMap<String, rebalance_core::contract::runner::Stat>>,
}

/// Run the sweep; `choose`: pick the best value on validation macro-F1. None on --dry-run.
pub fn run_sweep(
    run_args: &RunArgs,
    spec: &Spec,
    fixed: Vec<(String, String)>,
    swept: &Swept,
    name: &str,
    choose: bool,
) -> Result<Option<SweepDone>> {
    let started = Instant::now();
    let root = crate::cli::root_of(&run_args.file)?;
    let plans = swept
        .values
        .iter()
        .map(|v| {
            let mut all = fixed.clone();
            all.push((swept.key.clone(), v.to_string()));
            plan(
                spec,
                &run_args.entry,
                &Bindings::new(spec, &run_args.entry, &all)?,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for p in &plans {
        result_tasks(p)?;
    }
    let dir = root.join(artifacts_of(&plans[0])).join(SWEEPS).join(name);
    let sweep = Sweep {
        run_args,
        spec,
        fixed,
        swept,
        name: name.to_string(),
        plans,
        dir,
    };
    if run_args.dry_run {
        dry_run(&sweep);
        return Ok(None);
    }
    let mut session = open(&sweep, &root)?;
    let (rows, found) = match run_values(&sweep, &mut session) {
        Ok(r) => r,
        Err((record, e)) => return Err(session.fail(record.as_deref(), e)?),
    };
    let mut result = SweepResult {
        name: sweep.name.clone(),
        entry: run_args.entry.clone(),
        param: swept.key.clone(),
        fixed: sweep.fixed.clone(),
        rare_classes: found.rare,
        baseline: found.baseline,
        rows,
        choice: None,
    };
    if choose {
        result.choice = result.best_on_validation().map(|r| Choice {
            value: r.value.clone(),
            by: "validation macro-F1, mean over seeds".into(),
        });
    }
    finish(&sweep, &mut session, &result, started)?;
    Ok(Some(SweepDone { result, session }))
}

/// `--dry-run`: each value's commands.
fn dry_run(sweep: &Sweep) {
    for (v, tasks) in sweep.swept.values.iter().zip(&sweep.plans) {
        println!("{}:", sweep.label(v));
        for t in tasks {
            println!("  $ {}", shell_words(&t.argv));
        }
    }
    println!("results: {}", sweep.dir.display());
}

/// The sweep's session, its own run record (`sweep:<entry>`) named after it.
fn open(sweep: &Sweep, root: &Path) -> Result<Session> {
    let swept = sweep.swept;
    let mut params: BTreeMap<String, String> = sweep.fixed.iter().cloned().collect();
    let sep = if swept.kind == ParamType::List {
        ";"
    } else {
        ","
    };
    params.insert(format!("sweep.{}", swept.key), swept.values.join(sep));
    let entry = format!("sweep:{}", sweep.run_args.entry);
    let start = RunStart {
        entry: &entry,
        params,
        link: Link {
            name: Some(format!("sweep {} ({})", sweep.name, swept.key)),
            tags: vec![("rebalance.sweep".into(), sweep.name.clone())],
            ..Link::default()
        },
    };
    let session = Session::open(
        root,
        sweep.spec,
        &sweep.plans[0],
        sweep.run_args.wait,
        start,
    )?;
    eprintln!(
        "sweep {}: {} = {} ({} values); records in {}",
        sweep.name,
        swept.key,
        swept.values.join(", "),
        swept.values.len(),
        session.tracker.dir.display()
    );
    Ok(session)
}

/// A value's failure: the run record to point at (the value's own, when it had one).
type ValueError = (Option<Box<crate::tracking::Tracker>>, anyhow::Error);

/// Every value in turn (on Slurm: the first here, the rest as one job array); the rows.
fn run_values(sweep: &Sweep, session: &mut Session) -> Result<(Vec<SweepRow>, Found), ValueError> {
    let mut rows = Vec::new();
    let mut found = Found::default();
    for (i, value) in sweep.swept.values.iter().enumerate() {
        if i == 1 && sweep.run_args.executor == ExecutorKind::Slurm {
            let rest = SlurmSweep { sweep }
                .rest(session, &found.rare)
                .map_err(|e| (None, e))?;
            for (j, row) in rest.into_iter().enumerate() {
                log_row(session, &row, j + 1).map_err(|e| (None, e))?;
                rows.push(row);
            }
            break;
        }
        eprintln!(
            "sweep {}: [{}/{}] {}",
            sweep.name,
            i + 1,
            sweep.plans.len(),
            sweep.label(value)
        );
        let row = run_value(sweep, session, i, &mut found)?;
        log_row(session, &row, i).map_err(|e| (None, e))?;
        rows.push(row);
    }
    Ok((rows, found))
}

/// One value as a run of its own inside the session; its row.
fn run_value(
    sweep: &Sweep,
    session: &Session,
    i: usize,
    found: &mut Found,
) -> Result<SweepRow, ValueError> {
    let (value, tasks) = (&sweep.swept.values[i], &sweep.plans[i]);
    let link = Link {
        parent: session.tracker.mlflow_run_id().map(str::to_string),
        name: Some(sweep.label(value)),
        tags: sweep.tags(value),
    };
    let entry = &sweep.run_args.entry;
    let mut record = session
        .child(sweep.spec, entry, tasks, &link)
        .map_err(|e| (None, e))?;
    let out = session
        .run_child(sweep.run_args, tasks, &mut record)
        .map_err(|e| (None, e))?;
    if let Err(e) = out.result {
        let e = e.context(format!("sweep {}: {}", sweep.name, sweep.label(value)));
        return Err((Some(Box::new(record)), e));
    }
    let row = (|| {
        let results = result_tasks(tasks)?;
        if found.rare.is_empty() {
            let m: ClassifierMetrics = read_json(
                &output_file(results.classify, &session.root, file::METRICS)
                    .ok_or_else(|| anyhow!("{} left no metrics", results.classify.key))?,
            )?;
            found.rare = m.rare_classes.clone();
        }
        if found.baseline.is_none() {
            found.baseline = results
                .baseline
                .and_then(|(t, name)| output_file(t, &session.root, name))
                .and_then(|p| read_json::<ClassifierMetrics>(&p).ok())
                .map(|m| summarize(&m, &found.rare));
        }
        let ran = stages_ran(&record.record);
        let dir = sweep.value_dir(value);
        collect_row(
            value,
            record.id(),
            ran,
            &results,
            &session.root,
            &found.rare,
            &dir,
        )
    })();
    let row = row.map_err(|e| (None, e))?;
    eprintln!(
        "sweep {}: {}: {}",
        sweep.name,
        sweep.label(value),
        row.summary()
    );
    Ok(row)
}

/// A row's metrics on the sweep's own run, at step `step`.
fn log_row(session: &mut Session, row: &SweepRow, step: usize) -> Result<()> {
    for (k, s) in &row.metrics {
        session
            .tracker
            .metric(&format!("sweep.{k}"), s.mean, step as i64)?;
    }
    Ok(())
}

/// The table and plots, the report again with the sweep in it, and the sweep's run finished.
fn finish(
    sweep: &Sweep,
    session: &mut Session,
    result: &SweepResult,
    started: Instant,
) -> Result<()> {
    let dir = &sweep.dir;
    result.write(dir)?;
    let report = rewrite_report(&sweep.plans[0], &session.root, &session.artifacts, None)?;
    let mut upload: Vec<(PathBuf, String)> = [SWEEP_JSON, TABLE_MD, TABLE_CSV]
        .iter()
        .map(|f| (dir.join(f), format!("sweep/{f}")))
        .collect();
    for (k, _) in SWEEP_COLUMNS {
        upload.push((dir.join(format!("{k}.svg")), format!("sweep/{k}.svg")));
    }
    if let Some(c) = &result.choice {
        let tag = format!("rebalance.choice.{}", sweep.swept.key);
        session.tracker.tag(&tag, &c.value)?;
    }
    session.tracker.finish(RunStatus::Finished, None, &upload)?;
    eprintln!(
        "sweep {}: {} values in {:.1} s; table and plots in {}{}",
        sweep.name,
        result.rows.len(),
        started.elapsed().as_secs_f64(),
        dir.display(),
        report
            .map(|(_, d)| format!(", report {}", d.join(file::INDEX).display()))
            .unwrap_or_default()
    );
    Ok(())
}
