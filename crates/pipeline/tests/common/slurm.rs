//! A real single-node Slurm cluster for tests (`scripts/slurm-local`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{repo, BIN};

/// The cluster: started on creation, stopped (by the pids in its folder) on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        for p in ["sbatch", "scontrol", "squeue", "scancel"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {p}")])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "{p} is missing: run `scripts/setup --test` (it installs Debian's slurmctld slurmd slurm-client munge)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        // Two CPUs, as on the machines this suite runs on: two 1-CPU jobs at a time.
        let out = Command::new(repo().join("scripts/slurm-local"))
            .args(["start", dir.path().to_str().unwrap(), "2"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting the test cluster failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { dir }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// Job ids still queued or running.
    pub fn queue(&self) -> Vec<String> {
        let out = self
            .cmd("squeue")
            .args(["-h", "-o", "%i %j %T"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The runner with this cluster's config; one thread per job, here and locally alike.
    pub fn pipeline(&self, dir: &Path, args: &[&str], params: &[String]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(dir)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .env("OMP_NUM_THREADS", "1")
            .env_remove("MLFLOW_TRACKING_URI");
        for p in params {
            c.args(["-P", p]);
        }
        c
    }

    pub fn run(&self, dir: &Path, args: &[&str], params: &[String]) -> Output {
        self.pipeline(dir, args, params).output().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/slurm-local"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status();
    }
}
