//! Run tracking. Every run gets an id and a folder `artifacts/runs/<id>/` with `run.json`
//! (entry, parameters, stages, status, verdict), `metrics.jsonl` (key, value, step, timestamp)
//! and `logs/`. With `MLFLOW_TRACKING_URI` set to a tracking server, the same goes to MLflow.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use rebalance_core::contract::classify::{ClassifierMetrics, CurveRow};
use rebalance_core::contract::gan::LossRow;
use rebalance_core::contract::layout::{file, RUNS};
use rebalance_core::contract::runs::{
    MlflowRef, RunRecord, RunStatus, SlurmJob, StageRecord, StageStatus,
};
use rebalance_core::contract::{read_csv, read_json};
use rebalance_core::Manifest;
use serde::Serialize;
use serde_json::{json, Value};

use crate::mlflow::{Metric, Mlflow};
use crate::plan::Task;

pub struct Tracker {
    pub dir: PathBuf,
    pub record: RunRecord,
    metrics: std::fs::File,
    mlflow: Option<MlflowRun>,
}

struct MlflowRun {
    client: Mlflow,
    run_id: String,
    artifact_uri: String,
    /// Started by us (we end it) rather than handed over by `mlflow run` (MLFLOW_RUN_ID).
    owned: bool,
}

impl MlflowRun {
    /// Log into the run `mlflow run` handed over (MLFLOW_RUN_ID), or start one in the
    /// experiment MLFLOW_EXPERIMENT_NAME (default: the project); record it in `record`.
    /// A child run (`parent`: a sweep's run) is always a new run tagged with its parent.
    fn connect(
        client: Mlflow,
        record: &mut RunRecord,
        project: &str,
        entry: &str,
        link: &Link,
    ) -> Result<Self> {
        let id = record.id.clone();
        let experiment = std::env::var("MLFLOW_EXPERIMENT_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| project.to_string());
        let mut tags = vec![
            (
                "mlflow.runName".to_string(),
                link.name.clone().unwrap_or_else(|| format!("{entry} {id}")),
            ),
            ("rebalance.run_id".to_string(), id.clone()),
            ("rebalance.entry".to_string(), entry.to_string()),
            (
                "mlflow.source.name".to_string(),
                "rebalance pipeline".into(),
            ),
        ];
        tags.extend(link.tags.iter().cloned());
        if let Some(parent) = &link.parent {
            tags.push(("mlflow.parentRunId".to_string(), parent.clone()));
        }
        let handed = std::env::var("MLFLOW_RUN_ID")
            .ok()
            .filter(|_| link.parent.is_none());
        let (run_id, artifact_uri, owned) = match handed {
            Some(run_id) if !run_id.is_empty() => {
                let uri = client.artifact_uri(&run_id)?;
                client.log_batch(&run_id, &[], &[], &tags)?;
                (run_id, uri, false)
            }
            _ => {
                let exp = client.experiment_id(&experiment)?;
                let (run_id, uri) = client.create_run(&exp, &tags)?;
                (run_id, uri, true)
            }
        };
        let params: Vec<(String, String)> = record
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        client.log_batch(&run_id, &[], &params, &[])?;
        eprintln!(
            "tracking: MLflow run {run_id} at {} (experiment {experiment})",
            client.base
        );
        record.mlflow = Some(MlflowRef {
            tracking_uri: client.base.clone(),
            run_id: run_id.clone(),
            artifact_uri: artifact_uri.clone(),
        });
        Ok(Self {
            client,
            run_id,
            artifact_uri,
            owned,
        })
    }
}

/// How a run relates to others: a sweep's value runs are MLflow child runs of the sweep's run.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// The MLflow run id of the parent run.
    pub parent: Option<String>,
    /// MLflow run name [default: `<entry> <id>`].
    pub name: Option<String>,
    /// Extra MLflow tags.
    pub tags: Vec<(String, String)>,
}

use crate::util::now_ms;

impl Tracker {
    /// Start a run under `artifacts/runs/<id>/`, and on the MLflow server when one is set.
    /// `id` comes from [`new_run_id`]; the caller holds the artifacts folder's lock under it.
    pub fn start(
        artifacts: &Path,
        id: String,
        project: &str,
        entry: &str,
        params: BTreeMap<String, String>,
        link: &Link,
    ) -> Result<Self> {
        let dir = artifacts.join(RUNS).join(&id);
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let metrics = std::fs::File::create(dir.join("metrics.jsonl"))
            .with_context(|| format!("creating {}", dir.join("metrics.jsonl").display()))?;
        let mut record = RunRecord {
            id: id.clone(),
            project: project.to_string(),
            entry: entry.to_string(),
            status: RunStatus::Running,
            pid: Some(std::process::id()),
            started_unix_ms: now_ms(),
            ended_unix_ms: None,
            params,
            stages: Vec::new(),
            verdict: None,
            mlflow: None,
        };
        let mlflow = match Mlflow::from_env()? {
            None => None,
            Some(client) => Some(MlflowRun::connect(
                client,
                &mut record,
                project,
                entry,
                link,
            )?),
        };
        let t = Self {
            dir,
            record,
            metrics,
            mlflow,
        };
        t.save()?;
        Ok(t)
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Set a tag on the MLflow run (nothing without MLflow); a failure is reported, not fatal.
    pub fn tag(&mut self, key: &str, value: &str) -> Result<()> {
        if let Some(m) = &self.mlflow {
            let tag = (key.to_string(), value.to_string());
            if let Err(e) = m.client.log_batch(&m.run_id, &[], &[], &[tag]) {
                eprintln!("tracking: MLflow: {e:#}");
            }
        }
        Ok(())
    }

    /// This run's MLflow run id, when it is tracked there.
    pub fn mlflow_run_id(&self) -> Option<&str> {
        self.mlflow.as_ref().map(|m| m.run_id.as_str())
    }

    /// Environment for stage processes.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("REBALANCE_RUN_ID".into(), self.record.id.clone())]
    }

    pub fn log_path(&self, task: &Task) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", task.key.replace('/', "_")))
    }

    fn save(&self) -> Result<()> {
        rebalance_core::contract::write_json(&self.dir.join(file::RUN), &self.record)
    }

    /// Record how a stage went (and its wall time as a metric when it ran).
    pub fn stage(
        &mut self,
        task: &Task,
        status: StageStatus,
        secs: f64,
        log: Option<&Path>,
    ) -> Result<()> {
        self.stage_jobs(task, status, secs, log, Vec::new())
    }

    /// [`Tracker::stage`] with the Slurm jobs that ran it (also the MLflow tag
    /// `slurm.<key>`: their ids).
    pub fn stage_jobs(
        &mut self,
        task: &Task,
        status: StageStatus,
        secs: f64,
        log: Option<&Path>,
        jobs: Vec<SlurmJob>,
    ) -> Result<()> {
        let mut tags = vec![(format!("stage.{}", task.key), status.as_str().to_string())];
        if !jobs.is_empty() {
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            tags.push((format!("slurm.{}", task.key), ids.join(",")));
        }
        self.record.stages.push(StageRecord {
            key: task.key.clone(),
            entry: task.entry.clone(),
            round: task.round,
            status,
            wall_s: (secs * 1000.0).round() / 1000.0,
            command: task.argv.clone(),
            log: log.map(|l| l.display().to_string()),
            outs: task.outs.iter().map(|o| o.display().to_string()).collect(),
            jobs,
        });
        if let Some(m) = &self.mlflow {
            if let Err(e) = m.client.log_batch(&m.run_id, &[], &[], &tags) {
                eprintln!("tracking: MLflow: {e:#}");
            }
        }
        self.save()?;
        if status == StageStatus::Ran {
            self.metric(&format!("{}.wall_s", task.entry), secs, task.round as i64)?;
        }
        Ok(())
    }

    pub fn metric(&mut self, key: &str, value: f64, step: i64) -> Result<()> {
        self.metrics_batch(&[Metric {
            key: key.to_string(),
            value,
            step,
        }])
    }

    fn metrics_batch(&mut self, batch: &[Metric]) -> Result<()> {
        let ts = now_ms();
        for m in batch {
            let line = json!({"key": m.key, "value": m.value, "step": m.step, "timestamp": ts});
            writeln!(self.metrics, "{line}")?;
        }
        if let Some(run) = &self.mlflow {
            if let Err(e) = run.client.log_batch(&run.run_id, batch, &[], &[]) {
                eprintln!("tracking: MLflow: {e:#}");
            }
        }
        Ok(())
    }

    /// Metrics a finished (or cached) stage left in its outputs: numeric `metrics` of each
    /// output's `manifest.json` (step = round), the test means of `metrics.json`, and curves
    /// with a step column (`losses.csv`: step; `curves.csv`: epoch of the first seed).
    pub fn collect_metrics(&mut self, task: &Task, root: &Path) -> Result<()> {
        let mut batch = Vec::new();
        let step = task.round as i64;
        for out in &task.outs {
            let dir = if out.is_absolute() {
                out.clone()
            } else {
                root.join(out)
            };
            if let Ok(m) = Manifest::read(&dir) {
                flatten(
                    &format!("{}.", task.entry),
                    &Value::Object(m.metrics),
                    step,
                    &mut batch,
                );
            }
            if let Ok(m) = read_json::<ClassifierMetrics>(&dir.join(file::METRICS)) {
                for (k, v) in &m.test.mean {
                    batch.push(Metric {
                        key: format!("{}.test.{k}", task.entry),
                        value: *v,
                        step,
                    });
                }
            }
            if let Ok(rows) = read_csv::<LossRow>(&dir.join(file::LOSSES)) {
                curve(&rows, |r| r.step as i64, &["step"], &task.entry, &mut batch);
            }
            if let Ok(rows) = read_csv::<CurveRow>(&dir.join(file::CURVES)) {
                let first = rows.first().map(|r| r.seed);
                let rows: Vec<_> = rows.into_iter().filter(|r| Some(r.seed) == first).collect();
                curve(
                    &rows,
                    |r| r.epoch as i64,
                    &["seed", "epoch"],
                    &task.entry,
                    &mut batch,
                );
            }
        }
        self.metrics_batch(&batch)
    }

    /// Record the verdict and the report, end the run.
    /// `upload`: (local file, artifact path) pairs sent to MLflow besides the run folder.
    pub fn finish(
        &mut self,
        status: RunStatus,
        verdict: Option<String>,
        upload: &[(PathBuf, String)],
    ) -> Result<()> {
        self.record.status = status;
        self.record.ended_unix_ms = Some(now_ms());
        self.record.verdict = verdict.clone();
        self.save()?;
        self.metrics.flush()?;
        if let Some(run) = &self.mlflow {
            let mut tags = Vec::new();
            if let Some(v) = verdict {
                tags.push(("rebalance.verdict".to_string(), v));
            }
            let result = (|| -> Result<()> {
                run.client.log_batch(&run.run_id, &[], &[], &tags)?;
                let mut files: Vec<(PathBuf, String)> = Vec::new();
                for name in ["run.json", "metrics.jsonl"] {
                    files.push((self.dir.join(name), format!("run/{name}")));
                }
                for entry in std::fs::read_dir(self.dir.join("logs"))?.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    files.push((entry.path(), format!("run/logs/{name}")));
                }
                files.extend(upload.iter().filter(|(p, _)| p.is_file()).cloned());
                let mut sent = 0;
                for (local, rel) in &files {
                    if run.client.log_artifact(&run.artifact_uri, local, rel)? {
                        sent += 1;
                    }
                }
                if sent == 0 && !files.is_empty() {
                    eprintln!(
                        "tracking: the server's artifact store ({}) takes no uploads from here; artifacts stay in {}",
                        run.artifact_uri,
                        self.dir.display()
                    );
                }
                if run.owned {
                    run.client
                        .set_terminated(&run.run_id, self.record.status.as_str())?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                eprintln!("tracking: MLflow logging failed at the end of the run: {e:#}");
            }
        }
        Ok(())
    }
}

/// Mark every run record under `<artifacts>/runs` still RUNNING as KILLED, and end its MLflow
/// run (when the record names one and its server answers). Call it holding the folder's lock:
/// then no live run can own such a record, since every run holds that lock while it runs.
/// Returns the ids marked.
pub fn close_abandoned(artifacts: &Path) -> Result<Vec<String>> {
    let runs = artifacts.join(RUNS);
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(Vec::new());
    };
    let mut marked = Vec::new();
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let path = dir.join(file::RUN);
        let Ok(mut record) = read_json::<RunRecord>(&path) else {
            continue;
        };
        if record.status != RunStatus::Running {
            continue;
        }
        let ended = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or_else(now_ms);
        record.status = RunStatus::Killed;
        record.ended_unix_ms = Some(ended);
        rebalance_core::contract::write_json(&path, &record)?;
        let pid = record
            .pid
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        eprintln!(
            "run {}{pid} was left RUNNING by a runner that is gone; marked KILLED",
            record.id
        );
        if let Some(m) = &record.mlflow {
            let client = Mlflow::new(&m.tracking_uri, Mlflow::auth_from_env());
            match client.set_terminated(&m.run_id, RunStatus::Killed.as_str()) {
                Ok(()) => eprintln!("  its MLflow run {} is ended as KILLED", m.run_id),
                Err(e) => eprintln!("  its MLflow run {} could not be ended: {e:#}", m.run_id),
            }
        }
        marked.push(record.id);
    }
    Ok(marked)
}

fn flatten(prefix: &str, v: &Value, step: i64, out: &mut Vec<Metric>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push(Metric {
                    key: prefix.trim_end_matches('.').to_string(),
                    value: f,
                    step,
                });
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}{k}."), v, step, out);
            }
        }
        _ => {}
    }
}

/// The numeric fields of typed rows as metrics (`<entry>.<field>`), each at the row's step;
/// `skip` names the step and grouping fields.
fn curve<T: Serialize>(
    rows: &[T],
    step: impl Fn(&T) -> i64,
    skip: &[&str],
    entry: &str,
    out: &mut Vec<Metric>,
) {
    for row in rows {
        let Ok(Value::Object(fields)) = serde_json::to_value(row) else {
            continue;
        };
        for (k, v) in fields {
            match v.as_f64() {
                Some(v) if v.is_finite() && !skip.contains(&k.as_str()) => out.push(Metric {
                    key: format!("{entry}.{k}"),
                    value: v,
                    step: step(row),
                }),
                _ => {}
            }
        }
    }
}
