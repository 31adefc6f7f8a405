use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = augment::Args::parse();
    rebalance_core::main_wrapper("augment", || {
        rebalance_core::cli::init_logging(args.common.quiet);
        augment::run(&args)
    })
}
