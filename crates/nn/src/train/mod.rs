//! The training kit both loops (`gan-train`, `classify`) share, in small pieces with their own
//! tests: a checkpoint holding weights and owned Adam state ([`checkpoint`]), the run key that
//! decides whether an interrupted run is resumed ([`run_key`]), a CSV log rewritten atomically
//! ([`csv_log`]), early stopping ([`early_stopping`]), the GAN failure monitor ([`monitor`]) and
//! the skeleton of a GAN loop that steps, logs, samples and checkpoints on a cadence
//! ([`cadence`]).

pub mod cadence;
pub mod checkpoint;
pub mod csv_log;
pub mod early_stopping;
pub mod monitor;
pub mod run_key;

pub use cadence::{Cadence, Hooks, Steps};
pub use csv_log::CsvLog;
pub use early_stopping::EarlyStopping;
pub use monitor::{Failure, FailureMonitor};
pub use run_key::RunKey;
