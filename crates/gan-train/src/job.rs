//! What a `gan-train` run trains, decided once from its flags, and the dispatch to it: one GAN
//! trained adversarially ([`crate::train`]), one dcgan per class ([`crate::per_class`]) or a
//! class-to-class translation ([`crate::cyclegan`]). The flags that belong to another job are
//! refused here, before any data is read.

use std::time::Instant;

use anyhow::{bail, Result};
use rebalance_core::cli::StageCommand;
use rebalance_core::contract::layout::{Layout, GAN};

use crate::args::{CycleganArgs, TrainArgs};
use crate::per_class::{self, PerClassJob};
use crate::plan::{prepare_work, Plan};

/// The training a run does.
#[derive(Debug, Clone)]
pub enum Job {
    /// One GAN (dcgan, cgan, wgan-gp or dagan), trained adversarially.
    Adversarial,
    /// `--per-class-gans`: one dcgan per class, in this process or as job-array tasks.
    PerClass(PerClassJob),
    /// `--model cyclegan`: unpaired translation of one class into another.
    Translate(CycleganArgs),
}

impl Job {
    /// The job the flags ask for, or why they do not fit together.
    pub fn resolve(args: &TrainArgs) -> Result<Self> {
        let classes = per_class::classes_of(args);
        if !classes.is_empty() {
            return PerClassJob::resolve(args, classes).map(Job::PerClass);
        }
        if args.per_class.class_task.is_some() || args.per_class.merge_classes {
            bail!("--class-task and --merge-classes go with --per-class-gans");
        }
        let cyclegan = &args.cyclegan;
        if !args.model.translates() {
            if cyclegan.from != "auto" || cyclegan.to != "auto" {
                bail!(
                    "--from/--to name the classes a cyclegan translates between; add --model cyclegan (this run is {})",
                    args.model
                );
            }
            return Ok(Job::Adversarial);
        }
        if cyclegan.pool_size > 10_000 {
            bail!(
                "--pool-size {} is larger than any use of it; the paper's is 50",
                cyclegan.pool_size
            );
        }
        if args.class.is_some() || !args.classes.is_empty() || args.minority.is_some() {
            bail!("cyclegan translates one class into another: name them with --from A --to B (not --class/--classes/--minority)");
        }
        Ok(Job::Translate(cyclegan.clone()))
    }
}

impl StageCommand for TrainArgs {
    const NAME: &'static str = "train";
    const ABOUT: &'static str = "Train (the default when no subcommand is given)";
    fn label(&self) -> (&'static str, bool) {
        ("gan-train", self.common.quiet)
    }
    fn run(&self) -> Result<()> {
        run(self)
    }
}

/// Train as the flags ask, holding the stage lock of the output folder.
pub fn run(args: &TrainArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Layout::new(&args.common.artifacts).dir(GAN));
    let _lock = rebalance_core::stage_lock::StageLock::share("gan-train", &out)?;
    match Job::resolve(args)? {
        // Each class is a run of its own, as `--class` would train it.
        Job::PerClass(job) => per_class::run(args, &job, run),
        Job::Adversarial => train(args, None),
        Job::Translate(cyclegan) => train(args, Some(&cyclegan)),
    }
}

/// One network's run: resolve, decide where it starts, train and write.
fn train(args: &TrainArgs, cyclegan: Option<&CycleganArgs>) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::resolve(args, cyclegan)?;
    let resume_from = prepare_work(&plan)?;
    match cyclegan {
        Some(opts) => crate::cyclegan::train(&plan, opts, resume_from, started),
        None => crate::train::train(&plan, resume_from, started),
    }
}
