//! Test tooling for the rebalance crates, used only as a `[dev-dependencies]` entry (and by
//! `fuzz/`): no stage or library depends on it, and it depends on no stage.
//!
//! - [`fixtures`]: tiny synthetic image sets, the `pipeline.toml` drift check, a TensorBoard
//!   log reader;
//! - [`ingest_inputs`]: a small valid input for every reader ingest has, what the mutation fuzz
//!   test and the cargo-fuzz target mutate.

pub mod fixtures;
pub mod ingest_inputs;
