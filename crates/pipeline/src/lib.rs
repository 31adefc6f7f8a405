//! The rebalance pipeline runner: `pipeline.toml` entry points run as processes, with caching in
//! `pipeline.lock`, per-stage logs, run tracking (`artifacts/runs/<id>/`, and MLflow's REST API
//! when `MLFLOW_TRACKING_URI` is set), the HTML report, and `export-mlproject`.
//! `--executor slurm` submits the stages to a Slurm cluster instead (`slurm`).
//! It links no libtorch.

pub mod cli;
pub mod commands;
pub mod guard;
pub mod mlflow;
pub mod mlproject;
pub mod plan;
pub mod report;
pub mod runner;
pub mod session;
pub mod slurm;
pub mod spec;
pub mod sweep;
pub mod sweep_run;
pub mod tracking;
