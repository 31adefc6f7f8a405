//! The on-disk contract that every rebalance stage reads and writes.
//!
//! See `docs/artifacts.md` for the contract in prose; [`CONTRACT_VERSION`] is its version.
//! This crate links no libtorch, so programs that only read or write artifacts stay light.

pub mod atomic;
pub mod chart;
pub mod cli;
pub mod contract;
pub mod grid;
pub mod hash;
pub mod imageset;
pub mod manifest;
pub mod memory;
pub mod stage_lock;
pub mod stats;
pub mod tensorboard;

pub use atomic::{partial_dir, remove_path, swap_into, write_atomic, StagedDir};
pub use cli::{CommonArgs, DeviceSpec};
pub use imageset::{ContractError, ImageSet};
pub use manifest::{FileRecord, Manifest};

/// Version of the artifact contract written into every manifest and image set.
/// Bump the major number when a reader of the old version could misread the new one.
pub const CONTRACT_VERSION: &str = "1.0";

/// Run a stage's `run()` and turn its error into a non-zero exit with the whole cause chain.
/// Signal dispositions every binary starts with; call it first in `main` (before argument
/// parsing, which may print `--help`). Idempotent.
/// - SIGXFSZ ignored: a file-size limit (`ulimit -f`) would otherwise kill the process midway
///   through a write; ignored, the write fails with EFBIG and the error names the file.
/// - SIGPIPE back to its default: Rust ignores it, so printing into a closed pipe
///   (`pipeline list | head`) panicked; now the process ends quietly, as Unix tools do.
pub fn process_setup() {
    // SAFETY: setting signal dispositions at start-up, before any thread is started.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn main_wrapper<F: FnOnce() -> anyhow::Result<()>>(
    stage: &str,
    run: F,
) -> std::process::ExitCode {
    process_setup();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{stage}: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
