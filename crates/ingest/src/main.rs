use clap::Parser;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    rebalance_core::main_wrapper("ingest", || {
        let args = ingest::Args::parse();
        rebalance_core::cli::init_logging(args.common.quiet);
        let outcome = ingest::run(&args)?;
        print!("{}", outcome.summary);
        Ok(())
    })
}
