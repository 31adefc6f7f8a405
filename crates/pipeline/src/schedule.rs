//! The scheduler: which stages run (the cache), and each stage's bookkeeping whatever runs it
//! (outputs set aside, `pipeline.lock`, the run record). An [`Executor`] starts the stages.
//!
//! With an executor that runs one stage at a time, each stage is checked just before it would
//! run, against what the stages before it left. With one that queues (Slurm), every stage is
//! decided first (a stage downstream of one that runs runs too), every request checked, and
//! all of them launched at once with their dependencies; a failure cancels the stages that
//! depend on it and the others go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use rebalance_core::contract::runner::{LockedStage, PipelineLock};
use rebalance_core::contract::runs::{SlurmJob, StageStatus};

use crate::aside::Aside;
use crate::cache::{describe, Cache, Stale};
use crate::exec::{Cancel, Ended, Executor, Launch, Outcome};
use crate::guard::{Interrupted, Stop};
use crate::plan::{direct, downstream, upstream, Task};
use crate::tracking::Tracker;

/// A launched stage, until it is settled.
struct Open {
    aside: Aside,
    /// Its fingerprint, when it could be taken before it ran.
    now: Option<LockedStage>,
}

/// One run of planned tasks through an executor.
pub struct Scheduler<'a> {
    cache: &'a mut Cache,
    exec: &'a mut dyn Executor,
    tracker: &'a mut Tracker,
    stop: &'a Stop,
    tasks: &'a [Task],
    lock: PipelineLock,
    open: BTreeMap<usize, Open>,
}

impl<'a> Scheduler<'a> {
    pub fn new(
        cache: &'a mut Cache,
        exec: &'a mut dyn Executor,
        tracker: &'a mut Tracker,
        stop: &'a Stop,
        tasks: &'a [Task],
    ) -> Result<Self> {
        let mut lock = cache.read_lock()?;
        lock.version = 1;
        Ok(Self {
            cache,
            exec,
            tracker,
            stop,
            tasks,
            lock,
            open: BTreeMap::new(),
        })
    }

    /// Run every stale task, record every task in the run record.
    pub fn run(mut self) -> Result<()> {
        if self.exec.queues() {
            self.queued()
        } else {
            self.in_order()
        }
    }

    fn head(&self, i: usize) -> String {
        format!("[{}/{}] {}", i + 1, self.tasks.len(), self.tasks[i].key)
    }

    fn cached(&mut self, i: usize) -> Result<()> {
        let task = &self.tasks[i];
        eprintln!(
            "{}: cached (unchanged command, parameters, program and inputs)",
            self.head(i)
        );
        self.tracker.stage(task, StageStatus::Cached, 0.0, None)?;
        self.tracker.collect_metrics(task, &self.cache.root)
    }

    /// One stage at a time, each checked against what the ones before it left.
    fn in_order(&mut self) -> Result<()> {
        for (i, task) in self.tasks.iter().enumerate() {
            self.stop.check()?;
            Aside::recover(&self.cache.root, task)?;
            let (program, now, why) = self.cache.check(task, &self.lock)?;
            if why.is_empty() {
                self.cached(i)?;
                continue;
            }
            eprintln!("{}: running ({})", self.head(i), describe(&why));
            if let Err(e) = self.launch(i, &program, Some(now), &why, &[]) {
                return Err(self.settle_failed(i, e, 0.0, None, Vec::new()));
            }
            self.wait(false)?;
        }
        Ok(())
    }

    /// Every stage decided, checked and launched at once (see the module doc).
    fn queued(&mut self) -> Result<()> {
        let ups = upstream(self.tasks);
        let mut decided: Vec<(PathBuf, Option<LockedStage>, Vec<Stale>)> = Vec::new();
        for (i, task) in self.tasks.iter().enumerate() {
            self.stop.check()?;
            Aside::recover(&self.cache.root, task)?;
            let program = self.cache.resolve_program(task)?;
            let reruns: Vec<String> = ups[i]
                .iter()
                .filter(|&&j| !decided[j].2.is_empty())
                .map(|&j| self.tasks[j].key.clone())
                .collect();
            decided.push(if reruns.is_empty() {
                let now = self.cache.fingerprint(task, &program)?;
                let why = self.cache.staleness(task, &now, &self.lock)?;
                (program, Some(now), why)
            } else {
                (program, None, vec![Stale::Upstream { stages: reruns }])
            });
        }
        let to_run: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| !decided[i].2.is_empty())
            .collect();
        for i in (0..self.tasks.len()).filter(|i| !to_run.contains(i)) {
            self.cached(i)?;
        }
        if to_run.is_empty() {
            return Ok(());
        }
        self.exec
            .check(&to_run.iter().map(|&i| &self.tasks[i]).collect::<Vec<_>>())?;
        // A stage downstream of a rerun one reruns too, so its direct upstream stages are
        // enough to wait for.
        let waits = direct(&ups);
        for &i in &to_run {
            let (program, now, why) = std::mem::take(&mut decided[i]);
            if let Err(e) = self.launch(i, &program, now, &why, &waits[i]) {
                let launched: Vec<usize> = self.open.keys().copied().collect();
                let why = Cancel::Dropped("cancelled: a stage could not be submitted".into());
                self.exec.cancel(&launched, &why)?;
                // Dropping the guards puts the earlier outputs back.
                self.open.clear();
                return Err(e);
            }
        }
        self.wait(true)
    }

    /// Set the task's outputs aside and launch it.
    fn launch(
        &mut self,
        i: usize,
        program: &Path,
        now: Option<LockedStage>,
        why: &[Stale],
        after: &[usize],
    ) -> Result<()> {
        let task = &self.tasks[i];
        let log = self.tracker.log_path(task);
        let aside = Aside::set(&self.cache.root, task)?;
        self.exec.launch(&Launch {
            index: i,
            total: self.tasks.len(),
            task,
            program,
            log: &log,
            env: &self.tracker.env(),
            after,
            why,
        })?;
        self.open.insert(i, Open { aside, now });
        Ok(())
    }

    /// Until every launched stage is settled. In order, the first failure ends the run; when
    /// queued, it cancels the stages that depend on it and the others go on.
    fn wait(&mut self, queued: bool) -> Result<()> {
        let mut failure: Option<anyhow::Error> = None;
        while !self.open.is_empty() {
            if let Some(i) = self.stop.requested() {
                return Err(self.interrupted(i)?);
            }
            let mut ended = self.exec.poll()?;
            let idle = ended.is_empty();
            while !ended.is_empty() {
                let e = ended.remove(0);
                let (i, key) = (e.index, self.tasks[e.index].key.clone());
                let Err(err) = self.settle(e) else {
                    continue;
                };
                if !queued {
                    return Err(err);
                }
                let cancelled = self.cancel_dependants(i, &mut ended)?;
                let open = self.open.len();
                eprintln!(
                    "{key}: failed{}",
                    if open > 0 {
                        format!("; waiting for the {open} stage(s) that do not depend on it")
                    } else {
                        String::new()
                    }
                );
                failure.get_or_insert(anyhow!("{err:#}{cancelled}"));
            }
            if idle {
                std::thread::sleep(self.exec.idle());
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A launched stage that ended: its outputs hashed into the lock, or its earlier outputs
    /// back and its entry dropped.
    fn settle(&mut self, e: Ended) -> Result<()> {
        let Open { aside, now } = self.open.remove(&e.index).expect("launched");
        let task = &self.tasks[e.index];
        let result = match e.outcome {
            Outcome::Done => self.finished(task, now, &e.log),
            Outcome::Failed(err) => Err(err),
            Outcome::Stopped => Err(anyhow!("stage `{}` was stopped", task.key)),
        };
        match result {
            Ok(now) => {
                aside.commit();
                eprintln!("{}: done in {}", self.head(e.index), e.took);
                self.tracker
                    .stage_jobs(task, StageStatus::Ran, e.wall_s, Some(&e.log), e.jobs)?;
                self.lock.stages.insert(task.key.clone(), now);
                self.cache.write_lock(&self.lock)?;
                self.tracker.collect_metrics(task, &self.cache.root)
            }
            Err(err) => {
                aside.restore()?;
                Err(self.settle_failed(e.index, err, e.wall_s, Some(e.log), e.jobs))
            }
        }
    }

    /// The fingerprint of a stage that exited 0, with its outputs (each must exist).
    fn finished(
        &mut self,
        task: &Task,
        now: Option<LockedStage>,
        log: &Path,
    ) -> Result<LockedStage> {
        let mut now = match now {
            Some(now) => now,
            None => {
                let program = self.cache.resolve_program(task)?;
                self.cache.fingerprint(task, &program)?
            }
        };
        now.outs = self.cache.finished_outs(task, log)?;
        Ok(now)
    }

    /// Record a stage that failed (its earlier outputs already back) and drop its entry.
    fn settle_failed(
        &mut self,
        i: usize,
        err: anyhow::Error,
        secs: f64,
        log: Option<PathBuf>,
        jobs: Vec<SlurmJob>,
    ) -> anyhow::Error {
        let task = &self.tasks[i];
        let log = log.unwrap_or_else(|| self.tracker.log_path(task));
        let recorded = self
            .tracker
            .stage_jobs(task, StageStatus::Failed, secs, Some(&log), jobs)
            .and_then(|()| {
                self.lock.stages.remove(&task.key);
                self.cache.write_lock(&self.lock)
            });
        match recorded {
            Ok(()) => err,
            Err(e) => e.context(format!("{err:#}")),
        }
    }

    /// Cancel every launched stage downstream of `failed`, its earlier outputs back; the
    /// sentence that names them. Those among `ended` (the same poll's, not yet settled: the
    /// batch system may have cancelled them itself, their dependency failing) are dropped too.
    fn cancel_dependants(&mut self, failed: usize, ended: &mut Vec<Ended>) -> Result<String> {
        let down = downstream(failed, &upstream(self.tasks));
        let targets: Vec<usize> = self
            .open
            .keys()
            .copied()
            .filter(|k| *k != failed && down.contains(k))
            .collect();
        let why = Cancel::Dropped("cancelled: an upstream stage failed".into());
        let mut stopped = self.exec.cancel(&targets, &why)?;
        let (gone, rest): (Vec<Ended>, Vec<Ended>) = std::mem::take(ended)
            .into_iter()
            .partition(|e| targets.contains(&e.index));
        *ended = rest;
        stopped.extend(gone);
        stopped.sort_by_key(|e| e.index);
        let mut dropped = Vec::new();
        for e in stopped {
            if let Some(o) = self.open.remove(&e.index) {
                o.aside.restore()?;
            }
            dropped.push(format!(
                "{} (job {})",
                self.tasks[e.index].key,
                e.ids.join(",")
            ));
        }
        Ok(if dropped.is_empty() {
            String::new()
        } else {
            format!(
                "\nCancelled, as they depend on it (their earlier outputs are kept): {}",
                dropped.join(", ")
            )
        })
    }

    /// SIGINT/SIGTERM: stop every launched stage, put back their earlier outputs and record
    /// them KILLED; the interruption as the run's error.
    fn interrupted(&mut self, i: Interrupted) -> Result<anyhow::Error> {
        let launched: Vec<usize> = self.open.keys().copied().collect();
        for e in self
            .exec
            .cancel(&launched, &Cancel::Interrupted(i.to_string()))?
        {
            let Some(Open { aside, .. }) = self.open.remove(&e.index) else {
                continue;
            };
            let back = if aside.is_empty() {
                "it had no earlier outputs"
            } else {
                "its earlier outputs are back in place"
            };
            aside.restore()?;
            eprintln!(
                "{}: {i} after {:.1} s; {back}",
                self.head(e.index),
                e.wall_s
            );
            let task = &self.tasks[e.index];
            self.tracker
                .stage_jobs(task, StageStatus::Killed, e.wall_s, Some(&e.log), e.jobs)?;
            self.lock.stages.remove(&task.key);
            self.cache.write_lock(&self.lock)?;
        }
        Ok(i.into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::tracking::Link;

    /// A queueing executor whose first poll reports the first stage failed and the second
    /// ended too (as Slurm cancels a job whose dependency failed, before the runner does).
    struct BothEnd {
        launched: Vec<usize>,
    }

    impl Executor for BothEnd {
        fn queues(&self) -> bool {
            true
        }
        fn launch(&mut self, l: &Launch) -> Result<()> {
            self.launched.push(l.index);
            Ok(())
        }
        fn poll(&mut self) -> Result<Vec<Ended>> {
            let end = |index: usize, why: &str| Ended {
                index,
                outcome: Outcome::Failed(anyhow!("{why}")),
                wall_s: 0.0,
                log: PathBuf::from("log"),
                jobs: Vec::new(),
                ids: vec![format!("{}", 10 + index)],
                took: String::new(),
            };
            Ok(vec![
                end(0, "stage `a` failed"),
                end(1, "stage `b` ended CANCELLED"),
            ])
        }
        fn cancel(&mut self, _stages: &[usize], _why: &Cancel) -> Result<Vec<Ended>> {
            // Both already ended: nothing left to stop.
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_dependant_that_ended_with_its_failed_upstream_is_dropped_not_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let task = |key: &str, deps: &[&str]| Task {
            key: key.into(),
            entry: key.into(),
            round: 1,
            argv: vec!["true".into(), format!("out/{key}")],
            deps: deps.iter().map(PathBuf::from).collect(),
            outs: vec![PathBuf::from(format!("out/{key}"))],
            ..Task::default()
        };
        let tasks = vec![task("a", &[]), task("b", &["out/a"])];
        let mut cache = Cache::new(root, root.join("pipeline.lock"), true);
        let mut tracker = Tracker::start(
            root,
            "run-1".into(),
            "t",
            "main",
            BTreeMap::new(),
            &Link::default(),
        )
        .unwrap();
        let mut exec = BothEnd {
            launched: Vec::new(),
        };
        let stop = Stop::never();
        let err = Scheduler::new(&mut cache, &mut exec, &mut tracker, &stop, &tasks)
            .unwrap()
            .run()
            .unwrap_err()
            .to_string();
        assert_eq!(exec.launched, [0, 1]);
        assert!(err.starts_with("stage `a` failed"), "{err}");
        assert!(
            err.contains(
                "Cancelled, as they depend on it (their earlier outputs are kept): b (job 11)"
            ),
            "{err}"
        );
        let recorded: Vec<(&str, StageStatus)> = tracker
            .record
            .stages
            .iter()
            .map(|s| (s.key.as_str(), s.status))
            .collect();
        assert_eq!(recorded, [("a", StageStatus::Failed)]);
    }
}
