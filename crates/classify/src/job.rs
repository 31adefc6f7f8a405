//! What a `classify` run does, from its flags: train with one recipe ([`crate::train`]) or
//! train every `--candidates` recipe and choose ([`crate::candidates`]).

use anyhow::Result;
use rebalance_core::cli::StageCommand;

use crate::TrainArgs;

impl StageCommand for TrainArgs {
    const NAME: &'static str = "train";
    const ABOUT: &'static str = "Train and evaluate (the default when no subcommand is given)";
    fn label(&self) -> (&'static str, bool) {
        ("classify", self.common.quiet)
    }
    fn run(&self) -> Result<()> {
        run(self)
    }
}

/// Train as the flags ask.
pub fn run(args: &TrainArgs) -> Result<()> {
    if args.candidates.is_empty() {
        crate::train::run(args)
    } else {
        crate::candidates::run(args)
    }
}
