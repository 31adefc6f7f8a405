use clap::Parser;
use gan_train::{Cli, Command};

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => rebalance_core::main_wrapper("gan-train generate", || {
            rebalance_core::cli::init_logging(args.common.quiet);
            gan_train::generate::run(&args)
        }),
        Some(Command::Train(args)) => train(*args),
        None => train(cli.train),
    }
}

fn train(args: gan_train::TrainArgs) -> std::process::ExitCode {
    rebalance_core::main_wrapper("gan-train", || {
        rebalance_core::cli::init_logging(args.common.quiet);
        gan_train::job::run(&args)
    })
}
