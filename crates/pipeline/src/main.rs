//! The `pipeline` binary: the command line and dispatch; the work is in the library.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use pipeline::cli::{take_resources, Cli, Cmd};
use pipeline::commands::{list, run, status};
use pipeline::report::{self, ReportInput};
use pipeline::spec::Spec;
use pipeline::sweep::run::sweep;

fn main() -> std::process::ExitCode {
    rebalance_core::process_setup();
    rebalance_core::main_wrapper("pipeline", || {
        let cli = Cli::parse();
        match cli.cmd {
            None => run(take_resources(cli.run)?),
            Some(Cmd::Run(args)) => run(take_resources(args)?),
            Some(Cmd::List { entry, file }) => list(&file, entry.as_deref()),
            Some(Cmd::Status(args)) => status(&take_resources(args)?, false),
            Some(Cmd::Sweep(mut args)) => {
                args.run = take_resources(args.run)?;
                sweep(args)
            }
            Some(Cmd::Report {
                artifacts,
                rounds,
                out,
            }) => {
                let out = out.unwrap_or_else(|| artifacts.join("report"));
                if !artifacts.is_dir() {
                    bail!("no artifacts folder at {}", artifacts.display());
                }
                let r = report::write(
                    &ReportInput {
                        artifacts,
                        rounds,
                        auto: None,
                    },
                    &out,
                )?;
                println!("{}", r.verdict);
                eprintln!("report: {}", out.join("index.html").display());
                Ok(())
            }
            Some(Cmd::ExportMlproject { file, out, runner }) => {
                let spec = Spec::load(&file)?;
                let out = out.unwrap_or_else(|| {
                    file.parent()
                        .map(|p| p.join("MLproject"))
                        .unwrap_or_else(|| PathBuf::from("MLproject"))
                });
                let text = pipeline::mlproject::export(&spec, &runner)?;
                rebalance_core::write_atomic(&out, text.as_bytes())?;
                eprintln!(
                    "wrote {} ({} entry points); try: mlflow run . -e gan-train -P steps=500 --env-manager local",
                    out.display(),
                    spec.entry_points.len()
                );
                Ok(())
            }
        }
    })
}
