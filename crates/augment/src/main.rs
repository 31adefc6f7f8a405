use clap::Parser;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    let args = augment::Args::parse();
    rebalance_core::main_wrapper("augment", || {
        rebalance_core::cli::init_logging(args.common.quiet);
        augment::run(&args)
    })
}
