//! One run of planned tasks under the artifacts folder's lock: the run record, the MLflow run,
//! the outcome, and how a stopped run exits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{root_of, Executor, RunArgs};
use crate::guard::{ArtifactsLock, Interrupted, Stop};
use crate::plan::{plan, Task};
use crate::runner::Runner;
use crate::spec::{Bindings, Spec};
use crate::tracking::{Link, Tracker};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::read_json;
use rebalance_core::contract::runs::{RunStatus, StageStatus};

/// What a run holds from start to end: its artifacts folder's lock and the stop flag, with the
/// run id it took the lock for. Opening one also closes the records of runs that died.
pub struct Session {
    pub artifacts: PathBuf,
    pub id: String,
    pub lock: ArtifactsLock,
    pub stop: Stop,
}

impl Session {
    /// Take the lock of the tasks' artifacts folder (waiting for another run with `wait`),
    /// catch SIGINT and SIGTERM, and mark runs that died without ending as KILLED.
    pub fn open(root: &Path, tasks: &[Task], wait: bool) -> Result<Self> {
        let shown = artifacts_of(tasks);
        let artifacts = root.join(&shown);
        let id = crate::tracking::new_run_id();
        let lock = ArtifactsLock::acquire(&artifacts, &shown, &id, wait)?;
        let stop = Stop::install()?;
        crate::tracking::close_abandoned(&artifacts)?;
        Ok(Self {
            artifacts,
            id,
            lock,
            stop,
        })
    }
}

pub fn artifacts_of(tasks: &[Task]) -> String {
    tasks
        .iter()
        .find_map(|t| t.params.get("artifacts").map(|v| v.render()))
        .unwrap_or_else(|| "artifacts".to_string())
}

/// The manifest's folder, the spec and the planned tasks of an entry point.
pub struct Planned {
    pub root: PathBuf,
    pub spec: Spec,
    pub tasks: Vec<Task>,
}

pub fn planned(args: &RunArgs) -> Result<Planned> {
    let root = root_of(&args.file)?;
    let spec = Spec::load(&args.file)?;
    spec.entry(&args.entry)?;
    let bindings = Bindings::new(&spec, &args.entry, &args.params)?;
    if !args.quiet {
        for line in bindings.describe_presets(&spec) {
            eprintln!("{line}");
        }
    }
    let tasks = plan(&spec, &args.entry, &bindings)?;
    Ok(Planned { root, spec, tasks })
}

pub fn runner(args: &RunArgs, root: &Path) -> Runner {
    let lock = args
        .lock
        .clone()
        .unwrap_or_else(|| root.join("pipeline.lock"));
    let mut r = Runner::new(root, lock, args.force, !args.quiet);
    if args.executor == Executor::Slurm {
        r.slurm = Some(args.resources.clone());
    }
    r
}

/// How one run of planned tasks went.
pub struct Outcome {
    pub tracker: Tracker,
    pub result: Result<()>,
    pub verdict: Option<String>,
    /// The report folder, when the run wrote a verdict.
    pub report: Option<PathBuf>,
}

/// Run `tasks` under a new run record (and MLflow run), the caller holding the artifacts lock.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    args: &RunArgs,
    root: &Path,
    spec: &Spec,
    tasks: &[Task],
    artifacts: &Path,
    id: String,
    stop: &Stop,
    link: &Link,
) -> Result<Outcome> {
    let params = tasks
        .iter()
        .flat_map(|t| {
            t.rendered_params()
                .into_iter()
                .map(move |(k, v)| (format!("{}.{k}", t.key), v))
        })
        .collect();
    let mut runner = runner(args, root);
    runner.stop = stop.clone();
    let mut tracker = Tracker::start(artifacts, id, &spec.name, &args.entry, params, link)?;
    eprintln!(
        "run {}: {} stage(s) of `{}`; records in {}",
        tracker.id(),
        tasks.len(),
        args.entry,
        tracker.dir.display()
    );
    let result = runner.run_all(tasks, &mut tracker);
    let report = tasks
        .iter()
        .flat_map(|t| t.outs.iter())
        .map(|o| root.join(o))
        .find(|d| d.join(file::VERDICT).is_file());
    let verdict = report.as_ref().and_then(|d| {
        std::fs::read_to_string(d.join(file::VERDICT))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let ok = result.is_ok();
    let upload = uploads(tasks, root, artifacts);
    tracker.finish(status_of(&result), verdict.clone().filter(|_| ok), &upload)?;
    Ok(Outcome {
        tracker,
        result,
        verdict,
        report,
    })
}

pub fn status_of(result: &Result<()>) -> RunStatus {
    match result {
        Ok(()) => RunStatus::Finished,
        Err(e) => error_status(e),
    }
}

/// KILLED for a run stopped by a signal, FAILED for any other error.
pub fn error_status(e: &anyhow::Error) -> RunStatus {
    if e.is::<Interrupted>() {
        RunStatus::Killed
    } else {
        RunStatus::Failed
    }
}

/// After SIGINT/SIGTERM: say how to go on, release the lock and exit 130/143.
pub fn exit_interrupted(i: &Interrupted, tracker: &Tracker, lock: ArtifactsLock) -> ! {
    eprintln!(
        "run {}: {i}; recorded as KILLED in {}. The same command again goes on from \
         here: finished stages are cached, and gan-train and classify resume from \
         their last checkpoint.",
        tracker.id(),
        tracker.dir.join(file::RUN).display()
    );
    let code = i.exit_code();
    drop(lock);
    std::process::exit(code.into());
}

/// A sweep value that failed or was stopped: the sweep's own run ends FAILED or KILLED, and a
/// stopped sweep exits as any stopped run does (pointing at `record`'s run, else its own).
pub fn stop_sweep(
    parent: &mut Tracker,
    record: Option<&Tracker>,
    lock: ArtifactsLock,
    e: anyhow::Error,
) -> Result<anyhow::Error> {
    parent.finish(error_status(&e), None, &[])?;
    if let Some(int) = e.downcast_ref::<Interrupted>() {
        exit_interrupted(int, record.unwrap_or(parent), lock);
    }
    Ok(e)
}

pub fn stages_ran(tracker: &Tracker) -> Vec<String> {
    tracker
        .record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .map(|s| s.key.clone())
        .collect()
}

/// The newest run record under `<artifacts>/runs`.
pub fn newest_run(artifacts: &Path) -> Result<rebalance_core::contract::runs::RunRecord> {
    let runs = artifacts.join("runs");
    let mut best: Option<rebalance_core::contract::runs::RunRecord> = None;
    for e in std::fs::read_dir(&runs).with_context(|| format!("listing {}", runs.display()))? {
        let p = e?.path().join(file::RUN);
        if let Ok(r) = read_json::<rebalance_core::contract::runs::RunRecord>(&p) {
            if best
                .as_ref()
                .is_none_or(|b| r.started_unix_ms > b.started_unix_ms)
            {
                best = Some(r);
            }
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no run record in {}", runs.display()))
}

/// What to send to MLflow besides the run folder: the report and each stage's metrics, as
/// (local file, artifact path).
pub fn uploads(tasks: &[Task], root: &Path, artifacts: &Path) -> Vec<(PathBuf, String)> {
    let mut upload = Vec::new();
    for t in tasks {
        for out in &t.outs {
            let dir = root.join(out);
            for name in [
                file::INDEX,
                file::VERDICT,
                file::METRICS,
                file::ACCEPTANCE,
                file::COMPOSITION,
            ] {
                let p = dir.join(name);
                if p.is_file() {
                    let rel = p
                        .strip_prefix(artifacts)
                        .map(|r| r.display().to_string())
                        .unwrap_or_else(|_| format!("{}/{name}", t.key));
                    upload.push((p, rel));
                }
            }
        }
    }
    upload
}
