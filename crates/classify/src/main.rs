use clap::Parser;
use classify::{Cli, Command};

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Compare(args)) => rebalance_core::main_wrapper("classify compare", || {
            rebalance_core::cli::init_logging(args.quiet);
            classify::compare::run(&args)
        }),
        Some(Command::Train(args)) => train(*args),
        None => train(cli.train),
    }
}

fn train(args: classify::TrainArgs) -> std::process::ExitCode {
    rebalance_core::main_wrapper("classify", || {
        rebalance_core::cli::init_logging(args.common.quiet);
        classify::train::run(&args)
    })
}
