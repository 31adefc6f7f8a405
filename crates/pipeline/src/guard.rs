//! One run per artifacts folder, and runs that are stopped.
//!
//! [`ArtifactsLock`] holds an exclusive `flock` on `<artifacts>/.lock` for the whole run and
//! writes its holder (run id, pid) into it. The kernel lets go of the lock when its process
//! dies however it dies, so a second run either finds the lock held by a live run (refused,
//! or it waits with `--wait`), or takes it; a holder record still in the file then belongs to
//! a run that died without letting go, and the takeover is logged.
//!
//! [`Stop`] turns SIGINT and SIGTERM into a flag the runner polls: it stops the running
//! stage's process group, puts the stage's previous outputs back and marks the run KILLED.
//! A second signal of the same kind ends the runner at once.

use std::fs::{File, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rebalance_core::contract::runner::LockHolder;
use rebalance_core::stage_lock::{open_lock_file, read_holder};

/// The exclusive lock of one artifacts folder, held until dropped.
#[derive(Debug)]
pub struct ArtifactsLock {
    file: File,
    path: PathBuf,
    /// The holder of a lock that was found abandoned and taken over.
    pub took_over: Option<LockHolder>,
}

impl ArtifactsLock {
    /// Take the lock of `artifacts` for `run_id`. `shown` is the folder as the user named it,
    /// for messages. Without `wait`, a folder in use is an error naming its run and pid.
    pub fn acquire(artifacts: &Path, shown: &str, run_id: &str, wait: bool) -> Result<Self> {
        let (mut file, path) = open_lock_file(artifacts)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let who = read_holder(&mut file)
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| {
                        "a stage binary run on its own (it shares the lock), or a run just starting"
                            .to_string()
                    });
                let shown = shown.trim_end_matches('/');
                if !wait {
                    bail!(
                        "{shown}/ is in use by {who}; wait for it to end, rerun with --wait, or \
                         give this run its own folder with -P artifacts=DIR"
                    );
                }
                eprintln!("{shown}/ is in use by {who}; waiting for it to end (--wait)");
                file.lock()
                    .with_context(|| format!("waiting for the lock {}", path.display()))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // Held. A holder still recorded is a run that died without letting go.
        let took_over = read_holder(&mut file);
        if let Some(h) = &took_over {
            eprintln!(
                "took over {}: its holder, {h}, ended without releasing it",
                path.display()
            );
        }
        let me = LockHolder {
            run_id: run_id.to_string(),
            pid: std::process::id(),
            started_unix_ms: crate::util::now_ms(),
        };
        let json = serde_json::to_vec(&me).expect("holder serialises");
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&json)?;
            file.sync_data()
        })()
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            file,
            path,
            took_over,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ArtifactsLock {
    /// Clear the holder record, then let go: an empty file means a clean release.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// SIGINT/SIGTERM turned into a flag the runner polls.
#[derive(Clone, Debug)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

/// A run stopped by a signal; the error `run` returns so `main` can mark the run KILLED.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    pub fn name(&self) -> &'static str {
        match self.signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }
    /// The shell's exit status for death by this signal.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}", self.name())
    }
}

impl std::error::Error for Interrupted {}

impl Stop {
    /// Catch SIGINT and SIGTERM from now on; a second one of either ends the process at once.
    pub fn install() -> Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))
                .context("installing the signal handlers")?;
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)
                .context("installing the signal handlers")?;
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .context("installing the signal handlers")?;
        }
        Ok(Self { flag, signal })
    }

    /// A flag nothing sets (library use and tests).
    pub fn never() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<Interrupted> {
        self.flag.load(Ordering::SeqCst).then(|| Interrupted {
            signal: self.signal.load(Ordering::SeqCst) as i32,
        })
    }

    /// Fail with [`Interrupted`] once a signal came.
    pub fn check(&self) -> Result<()> {
        match self.requested() {
            Some(i) => Err(i.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_names_its_holder_and_a_dead_holder_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("artifacts");
        let first = ArtifactsLock::acquire(&dir, "artifacts", "run-a", false).unwrap();
        assert_eq!(first.took_over, None);
        let err = ArtifactsLock::acquire(&dir, "artifacts", "run-b", false)
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.starts_with(&format!("artifacts/ is in use by run run-a (pid {pid})")),
            "{err}"
        );
        drop(first);
        // A clean release leaves no holder behind.
        let second = ArtifactsLock::acquire(&dir, "artifacts", "run-b", false).unwrap();
        assert_eq!(second.took_over, None);
        drop(second);
        // A holder record left by a run that died: taken over and reported.
        let dead = LockHolder {
            run_id: "run-dead".into(),
            pid: 999_999_999,
            started_unix_ms: 1,
        };
        std::fs::write(dir.join(".lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let third = ArtifactsLock::acquire(&dir, "artifacts", "run-c", false).unwrap();
        assert_eq!(third.took_over, Some(dead));
        let held: LockHolder =
            serde_json::from_slice(&std::fs::read(third.path()).unwrap()).unwrap();
        assert_eq!((held.run_id.as_str(), held.pid), ("run-c", pid));
    }
}
