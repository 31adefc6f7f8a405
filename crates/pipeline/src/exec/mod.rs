//! Executors: where a stage's process runs. The [`crate::schedule`] decides what runs and does
//! the bookkeeping (the cache, the outputs set aside, the run record); an executor only starts
//! stages, says when they end and stops them.
//!
//! - [`local::Local`] runs one stage at a time as a child process of the runner;
//! - [`slurm::Slurm`] submits every stale stage at once as `sbatch` jobs with dependencies.

pub mod local;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use rebalance_core::contract::runs::SlurmJob;

use crate::cache::Stale;
use crate::plan::Task;

/// One stale stage to start.
pub struct Launch<'a> {
    /// The stage's place in the plan (its handle in [`Ended`]).
    pub index: usize,
    pub total: usize,
    pub task: &'a Task,
    pub program: &'a Path,
    pub log: &'a Path,
    /// The environment the stage gets (the run id).
    pub env: &'a [(String, String)],
    /// Launched stages (plan indices) this one must wait for.
    pub after: &'a [usize],
    pub why: &'a [Stale],
}

/// How a launched stage ended.
pub enum Outcome {
    /// It exited 0 (its outputs are still to be checked).
    Done,
    /// It failed; the error names its log.
    Failed(anyhow::Error),
    /// It was stopped by [`Executor::cancel`].
    Stopped,
}

/// A launched stage that ended.
pub struct Ended {
    pub index: usize,
    pub outcome: Outcome,
    pub wall_s: f64,
    /// The log to record: the stage's, or that of the array task that failed.
    pub log: PathBuf,
    /// The batch system's record of its jobs (empty when run here).
    pub jobs: Vec<SlurmJob>,
    /// Its job ids, for messages (empty when run here).
    pub ids: Vec<String>,
    /// How long it took, as the progress line says it.
    pub took: String,
}

/// Why stages are being stopped.
#[derive(Debug, Clone)]
pub enum Cancel {
    /// The runner got SIGINT/SIGTERM (the interruption, as words): wait until they stopped.
    Interrupted(String),
    /// They will not be needed (a stage they read from failed, say): the reason, as words.
    Dropped(String),
}

/// Starts stages, says when they end, stops them.
pub trait Executor {
    /// Whether stages can be launched before the stages they read from have ended (a batch
    /// queue with dependencies); otherwise one stage runs at a time, in order.
    fn queues(&self) -> bool;
    /// How long to wait between polls when nothing happened.
    fn idle(&self) -> Duration {
        Duration::from_millis(50)
    }
    /// Before anything runs: every stage that will, checked at once (an executor that can
    /// refuse a request says so here, before anything starts).
    fn check(&mut self, _tasks: &[&Task]) -> Result<()> {
        Ok(())
    }
    /// Start a stage.
    fn launch(&mut self, l: &Launch) -> Result<()>;
    /// The launched stages that ended since the last call.
    fn poll(&mut self) -> Result<Vec<Ended>>;
    /// Stop these launched stages (plan indices) and wait until they have stopped.
    fn cancel(&mut self, stages: &[usize], why: &Cancel) -> Result<Vec<Ended>>;
}
