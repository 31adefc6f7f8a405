//! The skeleton of a training loop: steps on a cadence (log, sample and checkpoint every N
//! steps, and all three at the last), the failures the [`FailureMonitor`](super::FailureMonitor)
//! reports handled in one place, and the run's end. The loop's own work sits in [`Hooks`].
//!
//! Per step the order is fixed: the step (timed), [`Hooks::after_step`], then on a log step
//! [`Hooks::log`], on a sample step [`Hooks::sample`], then the failures, then on a checkpoint
//! step [`Hooks::checkpoint`] unless the weights diverged. A failure that is not a divergence is
//! warned about once and training goes on (or stops, with `stop_on_failure`); a divergence is
//! never checkpointed and ends the run with an error once the steps are done.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::ProgressBar;

use super::Failure;

/// How many steps a run takes and how often it logs, samples and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub steps: u64,
    pub log_every: u64,
    pub sample_every: u64,
    pub checkpoint_every: u64,
}

impl Cadence {
    /// Whether `step` is one of every `every` steps, or the last.
    pub fn due(&self, every: u64, step: u64) -> bool {
        step.is_multiple_of(every) || step == self.steps
    }
}

/// Where a run stands, carried from step to step.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    /// The last step done.
    pub step: u64,
    /// The step this process started at: 0, or the resumed checkpoint's.
    pub at_start: u64,
    /// Seconds this process spent in training steps.
    pub train_time: f64,
    /// The last step checkpointed (or resumed from).
    pub last_good_ckpt: Option<u64>,
    /// A failure still in force: only a divergence stays (the others warn once).
    pub failure: Option<Failure>,
}

impl Steps {
    /// A run that starts at `step`; `resumed` when that step's checkpoint is the one it continues.
    pub fn new(step: u64, resumed: bool) -> Self {
        Self {
            step,
            at_start: step,
            train_time: 0.0,
            last_good_ckpt: resumed.then_some(step),
            failure: None,
        }
    }
}

/// What a loop does at each point of its [`Cadence`].
pub trait Hooks {
    /// What a step hands to the hooks that follow it.
    type Out;
    /// One training step.
    fn step(&mut self, step: u64) -> Self::Out;
    /// After every step: the failure it shows, if any; an error ends the run at once.
    fn after_step(
        &mut self,
        at: &Steps,
        out: &Self::Out,
        bar: &ProgressBar,
    ) -> Result<Option<Failure>>;
    /// A log step: write the step's metrics; a failure they show, if any.
    fn log(
        &mut self,
        at: &Steps,
        out: &mut Self::Out,
        bar: &ProgressBar,
    ) -> Result<Option<Failure>>;
    /// A sample step: write samples; a failure they show, if any.
    fn sample(&mut self, step: u64) -> Result<Option<Failure>>;
    /// Write a checkpoint of `step` (to [`Settings::checkpoint`]).
    fn checkpoint(&mut self, step: u64) -> Result<()>;
}

/// How a loop runs: its cadence, its progress bar, and what it does on a failure.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub cadence: Cadence,
    /// The progress bar's message.
    pub label: &'a str,
    pub quiet: bool,
    /// End the run at the first failure, keeping the last good checkpoint.
    pub stop_on_failure: bool,
    /// The folder the checkpoints are in, named when the run stops.
    pub work: &'a Path,
    /// The checkpoint file: a run with no step left to train writes one when it is missing.
    pub checkpoint: PathBuf,
}

/// Train from `at` to the last step of the cadence.
pub fn run<H: Hooks>(settings: &Settings, at: &mut Steps, hooks: &mut H) -> Result<()> {
    let cadence = settings.cadence;
    let bar = rebalance_core::cli::progress(
        cadence.steps.saturating_sub(at.step),
        settings.label,
        settings.quiet,
    );
    while at.step < cadence.steps {
        at.step += 1;
        let step = at.step;
        let t0 = Instant::now();
        let mut out = hooks.step(step);
        at.train_time += t0.elapsed().as_secs_f64();
        bar.inc(1);
        let mut found = hooks.after_step(at, &out, &bar)?;
        if cadence.due(cadence.log_every, step) {
            found = found.or(hooks.log(at, &mut out, &bar)?);
        }
        if cadence.due(cadence.sample_every, step) {
            found = found.or(hooks.sample(step)?);
        }
        handle_failure(settings, at, found, &bar)?;
        let diverged = at.failure.as_ref().is_some_and(Failure::diverged);
        if cadence.due(cadence.checkpoint_every, step) && !diverged {
            hooks.checkpoint(step)?;
            at.last_good_ckpt = Some(step);
        }
    }
    bar.finish_and_clear();
    if let Some(f) = &at.failure {
        bail!("training diverged ({f}); no checkpoint of diverged weights was written");
    }
    if at.step == at.at_start && !settings.checkpoint.exists() {
        hooks.checkpoint(at.step)?;
    }
    Ok(())
}

/// Warn about a failure (once, unless the weights diverged), or stop on it.
fn handle_failure(
    settings: &Settings,
    at: &mut Steps,
    found: Option<Failure>,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(f) = found {
        at.failure.get_or_insert(f);
    }
    if let Some(f) = &at.failure {
        tracing::warn!("{f}");
        if settings.stop_on_failure {
            bar.finish_and_clear();
            match at.last_good_ckpt {
                Some(s) => bail!("stopped on failure: {f}. The last good checkpoint (step {s}) is in {}; continue with --resume latest", settings.work.display()),
                None => bail!("stopped on failure: {f}. No checkpoint was written yet"),
            }
        }
        // Warn once per kind; keep going, but never checkpoint diverged weights.
        if !f.diverged() {
            at.failure = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the skeleton asks for; the losses of step `nan_at` are not finite, and the
    /// samples of step `collapse_at` collapsed.
    struct Probe {
        calls: Vec<String>,
        nan_at: u64,
        collapse_at: u64,
    }

    impl Hooks for Probe {
        type Out = f64;
        fn step(&mut self, step: u64) -> f64 {
            self.calls.push(format!("step {step}"));
            if step == self.nan_at {
                f64::NAN
            } else {
                1.0
            }
        }
        fn after_step(
            &mut self,
            at: &Steps,
            out: &f64,
            _: &ProgressBar,
        ) -> Result<Option<Failure>> {
            let f = (!out.is_finite()).then_some(Failure::NonFinite {
                step: at.step,
                d_real: *out,
                d_fake: 0.0,
                g: 0.0,
            });
            Ok(f)
        }
        fn log(&mut self, at: &Steps, _: &mut f64, _: &ProgressBar) -> Result<Option<Failure>> {
            self.calls.push(format!("log {}", at.step));
            Ok(None)
        }
        fn sample(&mut self, step: u64) -> Result<Option<Failure>> {
            self.calls.push(format!("sample {step}"));
            Ok((step == self.collapse_at).then_some(Failure::Collapsed {
                step,
                diversity: 0.0,
                real: 1.0,
            }))
        }
        fn checkpoint(&mut self, step: u64) -> Result<()> {
            self.calls.push(format!("checkpoint {step}"));
            Ok(())
        }
    }

    fn settings(steps: u64, stop_on_failure: bool) -> Settings<'static> {
        Settings {
            cadence: Cadence {
                steps,
                log_every: 2,
                sample_every: 2,
                checkpoint_every: 3,
            },
            label: "test",
            quiet: true,
            stop_on_failure,
            work: Path::new("work"),
            checkpoint: PathBuf::from("/nonexistent/checkpoint"),
        }
    }

    fn probe(nan_at: u64, collapse_at: u64) -> Probe {
        Probe {
            calls: Vec::new(),
            nan_at,
            collapse_at,
        }
    }

    #[test]
    fn steps_log_sample_and_checkpoint_on_the_cadence_and_at_the_end() {
        let mut p = probe(0, 2);
        let mut at = Steps::new(0, false);
        run(&settings(4, false), &mut at, &mut p).unwrap();
        let want =
            "step 1|step 2|log 2|sample 2|step 3|checkpoint 3|step 4|log 4|sample 4|checkpoint 4";
        assert_eq!(p.calls.join("|"), want);
        assert_eq!((at.step, at.at_start, at.last_good_ckpt), (4, 0, Some(4)));
        assert_eq!(at.failure, None, "a collapse warns once and is not kept");
    }

    #[test]
    fn a_run_with_no_step_left_checkpoints_only_when_none_is_there() {
        let mut p = probe(0, 0);
        run(&settings(4, false), &mut Steps::new(4, true), &mut p).unwrap();
        assert_eq!(p.calls, ["checkpoint 4"]);
        p.calls.clear();
        let here = settings(4, false);
        let there = Settings {
            checkpoint: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            ..here
        };
        run(&there, &mut Steps::new(4, true), &mut p).unwrap();
        assert!(p.calls.is_empty());
    }

    #[test]
    fn diverged_weights_are_never_checkpointed_and_end_the_run() {
        let mut p = probe(3, 0);
        let mut at = Steps::new(0, false);
        let e = run(&settings(6, false), &mut at, &mut p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("training diverged (step 3: a loss is not finite"),
            "{e}"
        );
        assert!(
            !p.calls.iter().any(|c| c.starts_with("checkpoint")),
            "{:?}",
            p.calls
        );
        assert_eq!(at.step, 6, "training goes on to the last step");
    }

    #[test]
    fn stop_on_failure_names_the_last_good_checkpoint() {
        let mut p = probe(0, 2);
        let e = run(&settings(4, true), &mut Steps::new(0, false), &mut p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("stopped on failure: step 2: sample diversity collapsed"),
            "{e}"
        );
        assert!(
            e.to_string().ends_with("No checkpoint was written yet"),
            "{e}"
        );
        let mut p = probe(4, 0);
        let e = run(&settings(6, true), &mut Steps::new(0, false), &mut p).unwrap_err();
        assert!(
            e.to_string()
                .contains("The last good checkpoint (step 3) is in work"),
            "{e}"
        );
    }
}
