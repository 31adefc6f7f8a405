//! `pipeline sweep --executor slurm`, after the first value ran in the artifacts folder: every
//! other value in a folder of its own ([`super::mirror`], so the stages the parameter does not
//! touch are cached there), run by one task of a Slurm job array each, at the same time.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rebalance_core::contract::runner::SweepRow;

use super::mirror::mirror;
use super::rows::{collect_row, result_tasks};
use super::Sweep;
use crate::cli::RunRequest;
use crate::exec::slurm::{job_comment, run_array, ArrayJob, JobInfo};
use crate::plan::{artifacts_of, upstream};
use crate::session::{newest_run, stages_ran, Session};
use crate::spec::Resources;
use crate::util::{last_lines, sh_quote};

/// The values after the first of a sweep, as one job array.
pub(super) struct SlurmSweep<'a, 'b> {
    pub sweep: &'a Sweep<'b>,
}

impl SlurmSweep<'_, '_> {
    /// Run the values after the first as a job array; their rows.
    pub fn rest(&self, session: &Session, rare: &[String]) -> Result<Vec<SweepRow>> {
        let sweep = self.sweep;
        let artifacts = PathBuf::from(artifacts_of(&sweep.plans[0]));
        let values = &sweep.swept.values[1..];
        let mut scripts = Vec::new();
        let mut folders = Vec::new();
        for value in values {
            let folder = sweep
                .dir
                .join("values")
                .join(super::slug(&sweep.label(value)));
            scripts.push(self.script(session, value, &artifacts, &folder)?);
            folders.push(folder);
        }
        let art_dir = session
            .artifacts
            .canonicalize()
            .unwrap_or(session.artifacts.clone());
        let job = ArrayJob {
            name: format!("sweep-{}", sweep.name),
            comment: job_comment(&art_dir, session.tracker.id()),
            scripts,
            resources: self.request(),
            root: session.root.clone(),
            logs: session.tracker.dir.join("logs"),
            env: session.tracker.env(),
            echo: !sweep.run_args.quiet,
        };
        let jobs = run_array(&job, &session.stop)?;
        let mut rows = Vec::new();
        for ((value, folder), (job, log)) in values.iter().zip(&folders).zip(&jobs) {
            rows.push(self.row(value, folder, &artifacts, job, log, rows.len() + 1, rare)?);
        }
        Ok(rows)
    }

    /// The shell command of one value's array task: the runner again, in its mirror folder.
    fn script(
        &self,
        session: &Session,
        value: &str,
        artifacts: &Path,
        folder: &Path,
    ) -> Result<String> {
        let sweep = self.sweep;
        let runner = std::env::current_exe().context("finding this runner's own path")?;
        let manifest = std::fs::canonicalize(&sweep.run_args.file)?;
        let lock = sweep.run_args.lock_path(&session.root);
        mirror(&session.root, &manifest, &lock, artifacts, folder)?;
        let argv = RunRequest {
            file: manifest
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            entry: sweep.run_args.entry.clone(),
            quiet: true,
            params: sweep
                .fixed
                .iter()
                .cloned()
                .chain(std::iter::once((
                    sweep.swept.key.clone(),
                    value.to_string(),
                )))
                .collect(),
            parent_run: session.tracker.mlflow_run_id().map(str::to_string),
            run_name: Some(sweep.label(value)),
            run_tags: sweep.tags(value),
        }
        .to_argv(&runner.display().to_string());
        let words: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
        Ok(format!(
            "cd {} && exec {}",
            sh_quote(&folder.display().to_string()),
            words.join(" ")
        ))
    }

    /// The row of the value that array task `k` (from 1) ran, from its mirror folder.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        value: &str,
        folder: &Path,
        artifacts: &Path,
        job: &JobInfo,
        log: &Path,
        k: usize,
        rare: &[String],
    ) -> Result<SweepRow> {
        let sweep = self.sweep;
        if job.state != "COMPLETED" {
            bail!(
                "sweep {}: {} failed: Slurm job {} ended {} (exit code {}). Its log: {}\n--- last lines ---\n{}",
                sweep.name,
                sweep.label(value),
                job.id,
                job.state,
                job.exit_code,
                log.display(),
                last_lines(log, 12)
            );
        }
        let record = newest_run(&folder.join(artifacts))?;
        let row = collect_row(
            value,
            &record.id,
            stages_ran(&record),
            &result_tasks(&sweep.plans[k])?,
            folder,
            rare,
            &sweep.value_dir(value),
        )?;
        eprintln!(
            "sweep {}: {} (Slurm {}): {}",
            sweep.name,
            sweep.label(value),
            job.id,
            row.summary()
        );
        Ok(row)
    }

    /// What each value's job asks for: the request of the heaviest stage the parameter touches
    /// (or that runs after one it touches).
    fn request(&self) -> Resources {
        let plans = &self.sweep.plans;
        let first = &plans[0];
        let mut best = Resources::default();
        for plan in &plans[1..] {
            let ups = upstream(plan);
            let mut touched = vec![false; plan.len()];
            for (i, t) in plan.iter().enumerate() {
                let same = first.iter().find(|f| f.key == t.key).is_some_and(|f| {
                    f.argv == t.argv && f.rendered_params() == t.rendered_params()
                });
                touched[i] = !same || ups[i].iter().any(|&j| touched[j]);
                if touched[i] {
                    let r = self.sweep.run_args.resources.resolve(t);
                    if (r.cpus, r.gpus) > (best.cpus, best.gpus) {
                        best = r;
                    }
                }
            }
        }
        best
    }
}
