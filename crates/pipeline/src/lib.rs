//! The rebalance pipeline runner: `pipeline.toml` entry points run as processes, with caching in
//! `pipeline.lock`, per-stage logs, run tracking (`artifacts/runs/<id>/`, and MLflow's REST API
//! when `MLFLOW_TRACKING_URI` is set), the HTML report, sweeps, and `export-mlproject`.
//! It links no libtorch.
//!
//! - [`cli`] — the command line; [`commands`] — `run`, `status`, `list`;
//! - [`spec`] — `pipeline.toml`; [`plan`] — an entry point as tasks, and their graph;
//! - [`session`] — what one command holds: the artifacts lock, the stop flag, the run record;
//! - [`schedule`] — what runs ([`cache`]: `pipeline.lock`) and each stage's bookkeeping
//!   ([`aside`]: its earlier outputs); [`exec`] — where it runs: here or on Slurm
//!   ([`resources`]: what a job asks for);
//! - [`sweep`] — sweeps and `-P <param>=auto` on either executor;
//! - [`tracking`] — run records, and [`mlflow`]; [`report`] — the HTML report and verdict;
//! - [`guard`] — the artifacts folder's lock and SIGINT/SIGTERM; [`util`] — small helpers.

pub mod aside;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod exec;
pub mod guard;
pub mod mlflow;
pub mod mlproject;
pub mod plan;
pub mod report;
pub mod resources;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod sweep;
pub mod tracking;
pub mod util;
