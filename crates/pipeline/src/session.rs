//! A session: what one `pipeline` command holds from start to end. It is opened once, and
//! owns the project folder, the artifacts folder and its lock, the stop flag (SIGINT and
//! SIGTERM) and the run record it started; a sweep starts more run records inside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rebalance_core::contract::layout::{file, RUNS};
use rebalance_core::contract::read_json;
use rebalance_core::contract::runs::{RunRecord, RunStatus, StageStatus};

use crate::cache::Cache;
use crate::cli::{root_of, ExecutorKind, RunArgs};
use crate::exec::local::Local;
use crate::exec::slurm::Slurm;
use crate::exec::Executor;
use crate::guard::{ArtifactsLock, Interrupted, Stop};
use crate::plan::{artifacts_of, plan, Task};
use crate::schedule::Scheduler;
use crate::spec::{Bindings, Spec};
use crate::tracking::{Link, Tracker};
use crate::util::new_run_id;

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

/// The run record a session starts with: its entry (as shown), parameters and MLflow link.
pub struct RunStart<'a> {
    pub entry: &'a str,
    pub params: BTreeMap<String, String>,
    pub link: Link,
}

/// Every task's rendered parameters as `<stage>.<param>`.
pub fn task_params(tasks: &[Task]) -> BTreeMap<String, String> {
    tasks
        .iter()
        .flat_map(|t| {
            t.rendered_params()
                .into_iter()
                .map(move |(k, v)| (format!("{}.{k}", t.key), v))
        })
        .collect()
}

/// What a command holds from start to end (see the module doc).
pub struct Session {
    pub root: PathBuf,
    pub artifacts: PathBuf,
    pub lock: ArtifactsLock,
    pub stop: Stop,
    /// The session's own run record.
    pub tracker: Tracker,
}

/// How one run of planned tasks went.
pub struct Outcome {
    pub result: Result<()>,
    pub verdict: Option<String>,
    /// The report folder, when the run wrote a verdict.
    pub report: Option<PathBuf>,
}

impl Session {
    /// Take the lock of the tasks' artifacts folder (waiting for another run with `wait`),
    /// catch SIGINT and SIGTERM, mark runs that died without ending as KILLED, and start the
    /// session's run record.
    pub fn open(
        root: &Path,
        spec: &Spec,
        tasks: &[Task],
        wait: bool,
        start: RunStart,
    ) -> Result<Self> {
        let shown = artifacts_of(tasks);
        let artifacts = root.join(&shown);
        let id = new_run_id();
        let lock = ArtifactsLock::acquire(&artifacts, &shown, &id, wait)?;
        let stop = Stop::install()?;
        crate::tracking::close_abandoned(&artifacts)?;
        let tracker = Tracker::start(
            &artifacts,
            id,
            &spec.name,
            start.entry,
            start.params,
            &start.link,
        )?;
        Ok(Self {
            root: root.to_path_buf(),
            artifacts,
            lock,
            stop,
            tracker,
        })
    }

    /// Another run record inside this session (a sweep's value, `auto`'s final run).
    pub fn child(&self, spec: &Spec, entry: &str, tasks: &[Task], link: &Link) -> Result<Tracker> {
        Tracker::start(
            &self.artifacts,
            new_run_id(),
            &spec.name,
            entry,
            task_params(tasks),
            link,
        )
    }

    /// Run `tasks` under the session's own run record.
    pub fn run(&mut self, args: &RunArgs, tasks: &[Task]) -> Result<Outcome> {
        execute(
            args,
            &self.root,
            &self.artifacts,
            &self.stop,
            tasks,
            &mut self.tracker,
        )
    }

    /// Run `tasks` under `tracker` (from [`Session::child`]).
    pub fn run_child(
        &self,
        args: &RunArgs,
        tasks: &[Task],
        tracker: &mut Tracker,
    ) -> Result<Outcome> {
        execute(
            args,
            &self.root,
            &self.artifacts,
            &self.stop,
            tasks,
            tracker,
        )
    }

    /// After SIGINT/SIGTERM: say how to go on (about `record`'s run, else the session's),
    /// release the lock and exit 130/143.
    pub fn exit_interrupted(self, i: &Interrupted, record: Option<&Tracker>) -> ! {
        let tracker = record.unwrap_or(&self.tracker);
        eprintln!(
            "run {}: {i}; recorded as KILLED in {}. The same command again goes on from \
             here: finished stages are cached, and gan-train and classify resume from \
             their last checkpoint.",
            tracker.id(),
            tracker.dir.join(file::RUN).display()
        );
        let code = i.exit_code();
        drop(self.lock);
        std::process::exit(code.into());
    }

    /// A run inside the session that failed or was stopped (`record`, when it is not the
    /// session's own): the session's run ends FAILED or KILLED, and a stopped session exits
    /// as any stopped run does. Otherwise the error, to return.
    pub fn fail(mut self, record: Option<&Tracker>, e: anyhow::Error) -> Result<anyhow::Error> {
        self.tracker.finish(error_status(&e), None, &[])?;
        if let Some(int) = e.downcast_ref::<Interrupted>() {
            self.exit_interrupted(int, record);
        }
        Ok(e)
    }
}

/// The executor `--executor` names, for one run of `tasks`.
fn executor(
    args: &RunArgs,
    root: &Path,
    tasks: &[Task],
    run_id: &str,
) -> Result<Box<dyn Executor>> {
    Ok(match args.executor {
        ExecutorKind::Local => Box::new(Local::new(root, !args.quiet)),
        ExecutorKind::Slurm => Box::new(Slurm::new(
            root,
            args.resources.clone(),
            !args.quiet,
            tasks,
            run_id,
        )?),
    })
}

/// Run `tasks` under `tracker`, the caller holding the artifacts lock; finish the record.
fn execute(
    args: &RunArgs,
    root: &Path,
    artifacts: &Path,
    stop: &Stop,
    tasks: &[Task],
    tracker: &mut Tracker,
) -> Result<Outcome> {
    eprintln!(
        "run {}: {} stage(s) of `{}`; records in {}",
        tracker.id(),
        tasks.len(),
        args.entry,
        tracker.dir.display()
    );
    let mut cache = Cache::new(root, args.lock_path(root), args.force);
    let result = executor(args, root, tasks, tracker.id()).and_then(|mut exec| {
        Scheduler::new(&mut cache, exec.as_mut(), tracker, stop, tasks)?.run()
    });
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

/// The stages of a run record that ran (rather than were cached).
pub fn stages_ran(record: &RunRecord) -> Vec<String> {
    record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .map(|s| s.key.clone())
        .collect()
}

/// The newest run record under `<artifacts>/runs`.
pub fn newest_run(artifacts: &Path) -> Result<RunRecord> {
    let runs = artifacts.join(RUNS);
    let mut best: Option<RunRecord> = None;
    for e in std::fs::read_dir(&runs).with_context(|| format!("listing {}", runs.display()))? {
        let p = e?.path().join(file::RUN);
        if let Ok(r) = read_json::<RunRecord>(&p) {
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
    let names = [
        file::INDEX,
        file::VERDICT,
        file::METRICS,
        file::ACCEPTANCE,
        file::COMPOSITION,
    ];
    let mut upload = Vec::new();
    for t in tasks {
        for dir in t.outs.iter().map(|o| root.join(o)) {
            for name in names {
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
