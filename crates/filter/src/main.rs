use clap::Parser;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    let args = filter::Args::parse();
    rebalance_core::main_wrapper("filter", || {
        rebalance_core::cli::init_logging(args.common.quiet);
        filter::run(&args)
    })
}
