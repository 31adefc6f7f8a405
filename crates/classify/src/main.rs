use clap::Parser;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    classify::Cli::parse().args.main()
}
