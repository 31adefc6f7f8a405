//! A stage's previous outputs while it runs. [`Aside::set`] moves each existing output to a
//! hidden sibling `.<name>.pipeline-prev`, so nothing stale survives in them (a swapped-in
//! program may write fewer files); [`Aside::commit`] deletes them when the stage succeeded,
//! and dropping the guard otherwise puts them back (whatever the stage left goes).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rebalance_core::remove_path;

use crate::plan::Task;

/// Where an output waits while its stage runs: `.<name>.pipeline-prev` beside it.
fn aside_of(root: &Path, out: &Path) -> Option<(PathBuf, PathBuf)> {
    let path = root.join(out);
    let name = path.file_name()?.to_string_lossy().into_owned();
    let backup = path.with_file_name(format!(".{name}.pipeline-prev"));
    Some((path, backup))
}

/// The outputs of one stage, set aside; restored when dropped uncommitted.
#[derive(Debug)]
pub struct Aside {
    moved: Vec<(PathBuf, PathBuf)>,
    settled: bool,
}

impl Aside {
    /// Outputs a runner killed outright (SIGKILL, power loss) left set aside: stages write
    /// their outputs atomically, so an output that is missing while its set-aside copy exists
    /// was never replaced, and the copy goes back. Without this the next run would drop it.
    pub fn recover(root: &Path, task: &Task) -> Result<()> {
        for (path, backup) in task.outs.iter().filter_map(|o| aside_of(root, o)) {
            if !path.exists() && backup.exists() {
                std::fs::rename(&backup, &path).with_context(|| {
                    format!("restoring {} from {}", path.display(), backup.display())
                })?;
                eprintln!(
                    "restored {} from {}, set aside by a run that did not finish",
                    path.display(),
                    backup.display()
                );
            }
        }
        Ok(())
    }

    /// Move each existing output of `task` (relative to `root`) aside.
    pub fn set(root: &Path, task: &Task) -> Result<Self> {
        let mut guard = Self {
            moved: Vec::new(),
            settled: false,
        };
        for (path, backup) in task.outs.iter().filter_map(|o| aside_of(root, o)) {
            remove_path(&backup)?;
            if path.exists() {
                std::fs::rename(&path, &backup).with_context(|| {
                    format!("moving {} aside to {}", path.display(), backup.display())
                })?;
                guard.moved.push((path, backup));
            }
        }
        Ok(guard)
    }

    /// Whether the stage had no earlier outputs.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty()
    }

    /// The stage succeeded: its earlier outputs go.
    pub fn commit(mut self) {
        self.settled = true;
        for (_, backup) in &self.moved {
            if let Err(e) = remove_path(backup) {
                eprintln!("warning: {e:#}");
            }
        }
    }

    /// The stage failed or was stopped: its earlier outputs come back, errors reported.
    pub fn restore(mut self) -> Result<()> {
        self.settled = true;
        self.put_back()
    }

    fn put_back(&self) -> Result<()> {
        for (path, backup) in &self.moved {
            remove_path(path)?;
            std::fs::rename(backup, path).with_context(|| {
                format!("restoring {} from {}", path.display(), backup.display())
            })?;
        }
        Ok(())
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if !self.settled {
            if let Err(e) = self.put_back() {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(outs: &[&str]) -> Task {
        Task {
            key: "s".into(),
            outs: outs.iter().map(PathBuf::from).collect(),
            ..Task::default()
        }
    }

    #[test]
    fn outputs_come_back_unless_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/a.txt"), "old").unwrap();
        let t = task(&["out", "missing"]);
        let guard = Aside::set(root, &t).unwrap();
        assert!(!root.join("out").exists());
        assert!(!guard.is_empty());
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/b.txt"), "half-written").unwrap();
        drop(guard);
        assert_eq!(
            std::fs::read_to_string(root.join("out/a.txt")).unwrap(),
            "old"
        );
        assert!(!root.join("out/b.txt").exists());

        let guard = Aside::set(root, &t).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/c.txt"), "new").unwrap();
        guard.commit();
        assert!(root.join("out/c.txt").exists());
        assert!(!root.join(".out.pipeline-prev").exists());

        // A runner killed while the stage ran: the set-aside copy is recovered.
        let guard = Aside::set(root, &t).unwrap();
        std::mem::forget(guard);
        Aside::recover(root, &t).unwrap();
        assert!(root.join("out/c.txt").exists());
    }
}
