use clap::Parser;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    gan_train::Cli::parse().args.main()
}
