//! What makes an interrupted run "the same run", so that running the same command again after
//! a kill resumes it (what the pipeline runner relies on) while any other command starts afresh:
//! the resolved parameters (less those that do not change the result, such as `--quiet`), the
//! inputs' hashes and the device. Kept as `.run-key.json` in the run's work folder.

use std::path::Path;

use anyhow::{Context, Result};
use rebalance_core::FileRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const FILE: &str = ".run-key.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    pub params: Value,
    pub inputs: Vec<FileRecord>,
    pub device: String,
}

/// What [`RunKey::claim`] found in the work folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// An interrupted run with this key: resume it.
    Resume,
    /// Nothing there: a fresh run.
    Fresh,
    /// An interrupted run of another command or data, now removed: a fresh run.
    Replaced,
}

impl RunKey {
    /// `params` with the fields at the JSON pointers in `ignore` (e.g. `/common/quiet`) nulled.
    pub fn new(mut params: Value, ignore: &[&str], inputs: Vec<FileRecord>, device: &str) -> Self {
        for p in ignore {
            if let Some(v) = params.pointer_mut(p) {
                *v = Value::Null;
            }
        }
        Self {
            params,
            inputs,
            device: device.to_string(),
        }
    }

    /// The key of the run in `work`, if one is recorded and readable.
    pub fn read(work: &Path) -> Option<Self> {
        let bytes = std::fs::read(work.join(FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Take `work` for this run: keep it when it holds an interrupted run with this key,
    /// otherwise clear it. The folder exists and carries this key afterwards.
    pub fn claim(&self, work: &Path) -> Result<Claim> {
        let claim = if !work.exists() {
            Claim::Fresh
        } else if Self::read(work).as_ref() == Some(self) {
            Claim::Resume
        } else {
            std::fs::remove_dir_all(work)
                .with_context(|| format!("clearing {}", work.display()))?;
            Claim::Replaced
        };
        self.write(work)?;
        Ok(claim)
    }

    /// Record this key in `work` (creating the folder).
    pub fn write(&self, work: &Path) -> Result<()> {
        std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        let json = serde_json::to_vec_pretty(self).expect("a run key serialises");
        rebalance_core::write_atomic(&work.join(FILE), &json)
    }

    /// Remove the key from a finished run's folder before it becomes the stage output.
    pub fn release(work: &Path) -> Result<()> {
        match std::fs::remove_file(work.join(FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", work.join(FILE).display()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(steps: u64, quiet: bool) -> RunKey {
        RunKey::new(
            json!({ "steps": steps, "common": { "quiet": quiet } }),
            &["/common/quiet"],
            vec![],
            "cpu",
        )
    }

    #[test]
    fn the_same_key_resumes_and_another_clears_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join(".run.partial");
        assert_eq!(key(10, false).claim(&work).unwrap(), Claim::Fresh);
        std::fs::write(work.join("checkpoint"), b"x").unwrap();
        assert_eq!(
            key(10, true).claim(&work).unwrap(),
            Claim::Resume,
            "--quiet is ignored"
        );
        assert!(work.join("checkpoint").exists());
        assert_eq!(key(20, false).claim(&work).unwrap(), Claim::Replaced);
        assert!(!work.join("checkpoint").exists());
        assert_eq!(RunKey::read(&work), Some(key(20, false)));
        RunKey::release(&work).unwrap();
        assert_eq!(RunKey::read(&work), None);
        RunKey::release(&work).unwrap();
    }
}
