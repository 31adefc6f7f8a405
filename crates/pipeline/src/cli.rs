//! The runner's command line: `pipeline [run|list|report|sweep|status|export-mlproject]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::resources::Overrides;
use crate::spec::{parse_override, Spec};

/// Run the rebalance pipeline: the entry points of pipeline.toml as processes, skipping stages
/// whose command, parameters, program and inputs are unchanged (pipeline.lock), with a log per
/// stage and a record of every run in artifacts/runs/<id>/ (and on the MLflow server named by
/// MLFLOW_TRACKING_URI, when set).
#[derive(Parser)]
#[command(name = "pipeline", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run an entry point (the default when no subcommand is given)
    Run(RunArgs),
    /// List the entry points, or one entry point's parameters with types, defaults and help
    List {
        /// An entry point
        entry: Option<String>,
        #[arg(short = 'f', long = "file", default_value = "pipeline.toml")]
        file: PathBuf,
    },
    /// Write the HTML report (index.html, verdict.txt) from the stage outputs
    Report {
        /// Folder that holds the stage outputs
        #[arg(long, default_value = "artifacts")]
        artifacts: PathBuf,
        /// Refinement rounds to show (round r ≥ 2 lives in <artifacts>/rounds/<r>)
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        /// Output folder [default: <artifacts>/report]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run an entry point once per value of one parameter (`-P add=0,250,500,1000`; values
    /// that hold commas separated by `;`), rerunning only the stages it touches; writes a
    /// table (loss, accuracy, precision, recall, macro-F1, rare recall, mean ± std over seeds)
    /// and a plot per metric to <artifacts>/sweeps/<name>/ and into the report
    Sweep(SweepArgs),
    /// Show, for every stage of an entry point, whether it would run and every reason why
    /// (command, parameters, program, inputs, outputs), as `dvc status` does; runs nothing
    Status(RunArgs),
    /// Write an MLflow MLproject file whose entry points call this runner
    ExportMlproject {
        #[arg(short = 'f', long = "file", default_value = "pipeline.toml")]
        file: PathBuf,
        /// Where to write it [default: MLproject beside pipeline.toml]
        #[arg(long)]
        out: Option<PathBuf>,
        /// The runner command MLflow calls, from the project folder
        #[arg(long, default_value = "target/release/pipeline")]
        runner: String,
    },
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Entry point to run (as `mlflow run . -e`)
    #[arg(short = 'e', long = "entry", default_value = "main")]
    pub entry: String,
    /// Set a parameter: `name=value`, or `step.name=value` for one step of a chain (repeatable)
    #[arg(short = 'P', long = "param", value_name = "KEY=VALUE", value_parser = parse_override)]
    pub params: Vec<(String, String)>,
    /// Run every stage even when pipeline.lock says it is up to date
    #[arg(long)]
    pub force: bool,
    /// The pipeline manifest; commands run in its folder
    #[arg(short = 'f', long = "file", default_value = "pipeline.toml")]
    pub file: PathBuf,
    /// The lock file [default: pipeline.lock beside the manifest]
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Print each stage's command and why it would run (or that it is cached); run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep stage output in the logs only
    #[arg(short, long)]
    pub quiet: bool,
    /// When another run holds the artifacts folder (its `.lock`), wait for it to end instead
    /// of failing at once
    #[arg(long)]
    pub wait: bool,
    /// Where the stages run: `local` (here, one after another) or `slurm` (each stale stage
    /// an sbatch job, with its upstream jobs as afterok dependencies, so independent stages run
    /// at the same time; resources from pipeline.toml, `-P resources.cpus=4` or
    /// `-P gan-train.resources.gpus=1`). Needs Slurm's client commands and a folder shared
    /// with the nodes.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    /// The `-P resources.*` overrides (taken out of `params`).
    #[arg(skip)]
    pub resources: Overrides,
    /// Log the run in MLflow as a child of this MLflow run id (a value of a sweep on Slurm)
    #[arg(long, hide = true)]
    pub parent_run: Option<String>,
    /// The MLflow run name
    #[arg(long, hide = true)]
    pub run_name: Option<String>,
    /// An MLflow tag `key=value` (repeatable)
    #[arg(long = "run-tag", hide = true, value_parser = parse_override)]
    pub run_tags: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

impl RunArgs {
    /// `--lock`, else `pipeline.lock` beside the manifest (in `root`).
    pub fn lock_path(&self, root: &Path) -> PathBuf {
        self.lock
            .clone()
            .unwrap_or_else(|| root.join(rebalance_core::contract::runner::PIPELINE_LOCK))
    }
}

/// Take `-P resources.<key>=…` and `-P <entry>.resources.<key>=…` out of the parameters.
pub fn take_resources(mut args: RunArgs) -> Result<RunArgs> {
    if args
        .params
        .iter()
        .any(|(k, _)| k.starts_with("resources.") || k.contains(".resources."))
    {
        let spec = Spec::load(&args.file)?;
        let (rest, over) = Overrides::split(&spec, &args.params)?;
        args.params = rest;
        args.resources = over;
    }
    Ok(args)
}

#[derive(Args, Clone)]
pub struct SweepArgs {
    /// The sweep's folder name under <artifacts>/sweeps [default: the swept parameter]
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn root_of(file: &Path) -> Result<PathBuf> {
    let file = std::fs::canonicalize(file).with_context(|| {
        format!(
            "no pipeline manifest at {} (run from the project folder, or give -f)",
            file.display()
        )
    })?;
    Ok(file.parent().expect("a file has a parent").to_path_buf())
}

/// A nested run of this runner (a sweep value's Slurm array task): the command line that
/// `pipeline run` parses back into the same request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRequest {
    /// The manifest, from the folder the run starts in.
    pub file: String,
    pub entry: String,
    pub quiet: bool,
    pub params: Vec<(String, String)>,
    pub parent_run: Option<String>,
    pub run_name: Option<String>,
    pub run_tags: Vec<(String, String)>,
}

impl RunRequest {
    /// `runner run -f FILE -e ENTRY [-q] -P k=v… [--parent-run ID] [--run-name N] [--run-tag k=v]…`
    pub fn to_argv(&self, runner: &str) -> Vec<String> {
        let mut argv: Vec<String> =
            vec![runner.into(), "run".into(), "-f".into(), self.file.clone()];
        argv.extend(["-e".into(), self.entry.clone()]);
        if self.quiet {
            argv.push("-q".into());
        }
        for (k, v) in &self.params {
            argv.extend(["-P".into(), format!("{k}={v}")]);
        }
        if let Some(p) = &self.parent_run {
            argv.extend(["--parent-run".into(), p.clone()]);
        }
        if let Some(n) = &self.run_name {
            argv.extend(["--run-name".into(), n.clone()]);
        }
        for (k, v) in &self.run_tags {
            argv.extend(["--run-tag".into(), format!("{k}={v}")]);
        }
        argv
    }

    /// The request a parsed `pipeline run` carries.
    pub fn of(args: &RunArgs) -> Self {
        Self {
            file: args.file.display().to_string(),
            entry: args.entry.clone(),
            quiet: args.quiet,
            params: args.params.clone(),
            parent_run: args.parent_run.clone(),
            run_name: args.run_name.clone(),
            run_tags: args.run_tags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_back_into_itself() {
        let r = RunRequest {
            file: "pipeline.toml".into(),
            entry: "main".into(),
            quiet: true,
            params: vec![
                ("add".into(), "250".into()),
                ("keep".into(), "2=10,5=10".into()),
            ],
            parent_run: Some("abc123".into()),
            run_name: Some("add=250".into()),
            run_tags: vec![("rebalance.sweep".into(), "add".into())],
        };
        let argv = r.to_argv("pipeline");
        let Cli {
            cmd: Some(Cmd::Run(args)),
            ..
        } = Cli::try_parse_from(&argv).unwrap()
        else {
            panic!("not a run: {argv:?}");
        };
        assert_eq!(RunRequest::of(&args), r);
        let plain = RunRequest {
            file: "p.toml".into(),
            entry: "e".into(),
            ..Default::default()
        };
        let Cli {
            cmd: Some(Cmd::Run(args)),
            ..
        } = Cli::try_parse_from(plain.to_argv("pipeline")).unwrap()
        else {
            panic!()
        };
        assert_eq!(RunRequest::of(&args), plain);
    }
}
