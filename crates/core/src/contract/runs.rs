//! The runner's run record, `runs/<id>/run.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a run ended (MLflow's run statuses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    #[default]
    Running,
    Finished,
    Failed,
    /// Stopped by SIGINT/SIGTERM, or found RUNNING after its runner died.
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// What happened to one stage in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    #[default]
    Ran,
    /// Skipped: `pipeline.lock` said its command, parameters, program and inputs are unchanged.
    Cached,
    Failed,
    /// Stopped by a signal to the runner; its previous outputs were put back.
    Killed,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Failed => "failed",
            StageStatus::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub key: String,
    pub entry: String,
    pub round: u32,
    pub status: StageStatus,
    pub wall_s: f64,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    pub outs: Vec<String>,
    /// The Slurm jobs that ran the stage (`--executor slurm`): one, or an array's tasks and
    /// its merge job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<SlurmJob>,
}

/// One Slurm job (or array task) of a stage, as `scontrol show job` last reported it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmJob {
    /// `1234`, or `1234_0` for an array task.
    pub id: String,
    /// COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …
    pub state: String,
    /// Slurm's StartTime and EndTime (`2026-11-24T19:39:26`, the controller's local time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The job's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// Where the run was also logged in MLflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MlflowRef {
    pub tracking_uri: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// `run.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub project: String,
    pub entry: String,
    pub status: RunStatus,
    /// The runner's process id (a RUNNING record whose runner is gone is marked KILLED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub started_unix_ms: u128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_unix_ms: Option<u128>,
    /// `<stage>.<param>` → value.
    pub params: BTreeMap<String, String>,
    pub stages: Vec<StageRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRef>,
}
