//! A stage binary run on its own shares the artifacts folder's lock (`<artifacts>/.lock`, the
//! file the pipeline runner holds exclusively for a whole run): several stages may run side by
//! side, but none while a run holds the folder, and no run starts while one of them writes.
//! Stages the runner starts (it sets `REBALANCE_RUN_ID`) run under its lock and take none.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::contract::runner::{LockHolder, ARTIFACTS_LOCK};

/// The environment variable the runner sets for the stages it starts.
pub const RUN_ID_ENV: &str = "REBALANCE_RUN_ID";

/// Open (creating it and its folder) the lock file `<dir>/.lock`, for `flock`.
pub fn open_lock_file(dir: &Path) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(ARTIFACTS_LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    Ok((file, path))
}

/// The holder recorded in a lock file; None when it is empty (a clean release) or unreadable.
pub fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// A shared lock on an artifacts folder, held until dropped (`None` under the runner).
#[derive(Debug)]
pub struct StageLock {
    /// Kept open: the lock lives as long as the descriptor.
    _file: Option<File>,
}

impl StageLock {
    /// Share the lock of the artifacts folder that holds the output folder `out` (its parent).
    /// `stage` names the binary in the error when a run holds the folder.
    pub fn share(stage: &str, out: &Path) -> Result<Self> {
        if std::env::var_os(RUN_ID_ENV).is_some() {
            return Ok(Self { _file: None });
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let (mut file, path) = open_lock_file(dir)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Self { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => {
                let who = read_holder(&mut file)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "a pipeline run".to_string());
                bail!(
                    "{stage}: {}/ is in use by {who}; a stage run on its own would write beside it. \
                     Wait for the run to end, or give --out a folder elsewhere",
                    dir.display()
                )
            }
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_stages_share_and_a_held_folder_is_refused_by_name() {
        // The runner's variable may be set in the environment the tests run in.
        if std::env::var_os(RUN_ID_ENV).is_some() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("artifacts/augmented");
        let a = StageLock::share("augment", &out).unwrap();
        let b = StageLock::share("classify", &out).unwrap();
        drop((a, b));
        let lock = tmp.path().join("artifacts/.lock");
        std::fs::write(&lock, br#"{"run_id":"r1","pid":4242,"started_unix_ms":1}"#).unwrap();
        let held = File::open(&lock).unwrap();
        held.lock().unwrap();
        let e = StageLock::share("augment", &out).unwrap_err().to_string();
        assert!(e.contains("is in use by run r1 (pid 4242)"), "{e}");
        held.unlock().unwrap();
        StageLock::share("augment", &out).unwrap();
    }
}
