//! `filter`: keep the synthetic images a classifier trusts.
//!
//! Not built yet: issue #5 fills this stage in. Until then the binary parses the shared
//! flags, resolves the device (proving libtorch loads) and exits with an error saying so.

use clap::Parser;
use rebalance_core::CommonArgs;

/// rebalance stage `filter`: keep the synthetic images a classifier trusts (not built yet, see issue #5).
#[derive(Debug, Parser, serde::Serialize)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = rebalance_nn::resolve_device(args.common.device)?;
    anyhow::bail!(
        "this stage is not built yet (issue #5); device {} would be used",
        rebalance_nn::device_name(device)
    )
}

fn main() -> std::process::ExitCode {
    rebalance_core::main_wrapper("filter", run)
}
