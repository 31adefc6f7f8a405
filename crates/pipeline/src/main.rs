use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use pipeline::guard::{ArtifactsLock, Interrupted, Stop};
use pipeline::plan::{plan, Task};
use pipeline::report::{self, ReportInput};
use pipeline::runner::{shell_words, Runner};
use pipeline::spec::{parse_override, Bindings, Param, Spec};
use pipeline::tracking::{self, Tracker};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::runs::{RunStatus, StageStatus};

/// Run the rebalance pipeline: the entry points of pipeline.toml as processes, skipping stages
/// whose command, parameters, program and inputs are unchanged (pipeline.lock), with a log per
/// stage and a record of every run in artifacts/runs/<id>/ (and on the MLflow server named by
/// MLFLOW_TRACKING_URI, when set).
#[derive(Parser)]
#[command(name = "pipeline", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
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
struct RunArgs {
    /// Entry point to run (as `mlflow run . -e`)
    #[arg(short = 'e', long = "entry", default_value = "main")]
    entry: String,
    /// Set a parameter: `name=value`, or `step.name=value` for one step of a chain (repeatable)
    #[arg(short = 'P', long = "param", value_name = "KEY=VALUE", value_parser = parse_override)]
    params: Vec<(String, String)>,
    /// Run every stage even when pipeline.lock says it is up to date
    #[arg(long)]
    force: bool,
    /// The pipeline manifest; commands run in its folder
    #[arg(short = 'f', long = "file", default_value = "pipeline.toml")]
    file: PathBuf,
    /// The lock file [default: pipeline.lock beside the manifest]
    #[arg(long)]
    lock: Option<PathBuf>,
    /// Print each stage's command and why it would run (or that it is cached); run nothing
    #[arg(long)]
    dry_run: bool,
    /// Keep stage output in the logs only
    #[arg(short, long)]
    quiet: bool,
    /// When another run holds the artifacts folder (its `.lock`), wait for it to end instead
    /// of failing at once
    #[arg(long)]
    wait: bool,
}

fn root_of(file: &Path) -> Result<PathBuf> {
    let file = std::fs::canonicalize(file).with_context(|| {
        format!(
            "no pipeline manifest at {} (run from the project folder, or give -f)",
            file.display()
        )
    })?;
    Ok(file.parent().expect("a file has a parent").to_path_buf())
}

fn main() -> std::process::ExitCode {
    rebalance_core::main_wrapper("pipeline", || {
        let cli = Cli::parse();
        match cli.cmd {
            None => run(cli.run),
            Some(Cmd::Run(args)) => run(args),
            Some(Cmd::List { entry, file }) => list(&file, entry.as_deref()),
            Some(Cmd::Status(args)) => status(&args, false),
            Some(Cmd::Report {
                artifacts,
                rounds,
                out,
            }) => {
                let out = out.unwrap_or_else(|| artifacts.join("report"));
                if !artifacts.is_dir() {
                    bail!("no artifacts folder at {}", artifacts.display());
                }
                let r = report::write(&ReportInput { artifacts, rounds }, &out)?;
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

fn list(file: &Path, entry: Option<&str>) -> Result<()> {
    let spec = Spec::load(file)?;
    match entry {
        None => {
            println!("entry points of {} ({}):", spec.name, file.display());
            for (name, e) in &spec.entry_points {
                let kind = match &e.steps {
                    Some(s) => format!(" [{}]", s.join(" → ")),
                    None => String::new(),
                };
                println!("  {name:<13} {}{kind}", e.help);
            }
            println!("`pipeline list <entry>` shows its parameters.");
        }
        Some(name) => {
            let e = spec.entry(name)?;
            println!("{name}: {}", e.help);
            for (p, kind) in spec.params_of(name)? {
                match kind {
                    Param::Shared(s) => println!("  -P {p}=…  {}  {}", s.describe(), s.help),
                    Param::Ambiguous(owners) => {
                        for o in owners {
                            let s = &spec.entry_points[&o].parameters[&p];
                            println!("  -P {o}.{p}=…  {}  {}", s.describe(), s.help);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn artifacts_of(tasks: &[Task]) -> String {
    tasks
        .iter()
        .find_map(|t| t.params.get("artifacts").map(|v| v.render()))
        .unwrap_or_else(|| "artifacts".to_string())
}

/// The manifest's folder, the spec and the planned tasks of an entry point.
struct Planned {
    root: PathBuf,
    spec: Spec,
    tasks: Vec<Task>,
}

fn planned(args: &RunArgs) -> Result<Planned> {
    let root = root_of(&args.file)?;
    let spec = Spec::load(&args.file)?;
    spec.entry(&args.entry)?;
    let bindings = Bindings::new(&spec, &args.entry, &args.params)?;
    let tasks = plan(&spec, &args.entry, &bindings)?;
    Ok(Planned { root, spec, tasks })
}

fn runner(args: &RunArgs, root: &Path) -> Runner {
    let lock = args
        .lock
        .clone()
        .unwrap_or_else(|| root.join("pipeline.lock"));
    Runner::new(root, lock, args.force, !args.quiet)
}

/// Every stage of the entry point with its state: cached, or each reason it would run. With
/// `commands`, the command line too (`--dry-run`).
fn status(args: &RunArgs, commands: bool) -> Result<()> {
    let p = planned(args)?;
    let mut runner = runner(args, &p.root);
    for (task, (key, why)) in p.tasks.iter().zip(runner.status(&p.tasks)?) {
        match why {
            Ok(why) if why.is_empty() => println!("{key}: cached"),
            Ok(why) => {
                println!("{key}: would run");
                for w in why {
                    println!("  - {w}");
                }
            }
            // Inputs an earlier stage of this run makes do not exist yet.
            Err(e) => println!("{key}: would run\n  - {e:#}"),
        }
        if commands {
            println!("  $ {}", shell_words(&task.argv));
        }
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    if args.dry_run {
        return status(&args, true);
    }
    let Planned { root, spec, tasks } = planned(&args)?;
    if tasks.is_empty() {
        eprintln!(
            "entry point `{}` has nothing to run with these parameters",
            args.entry
        );
        return Ok(());
    }
    let shown = artifacts_of(&tasks);
    let artifacts = root.join(&shown);
    // One run per artifacts folder: held until this function returns (or exits).
    let id = tracking::new_run_id();
    let lock = ArtifactsLock::acquire(&artifacts, &shown, &id, args.wait)?;
    let stop = Stop::install()?;
    tracking::close_abandoned(&artifacts)?;
    let params = tasks
        .iter()
        .flat_map(|t| {
            t.rendered_params()
                .into_iter()
                .map(move |(k, v)| (format!("{}.{k}", t.key), v))
        })
        .collect();
    let mut runner = runner(&args, &root);
    runner.stop = stop;
    let mut tracker = Tracker::start(&artifacts, id, &spec.name, &args.entry, params)?;
    eprintln!(
        "run {}: {} stage(s) of `{}`; records in {}",
        tracker.id(),
        tasks.len(),
        args.entry,
        tracker.dir.display()
    );
    let result = runner.run_all(&tasks, &mut tracker);
    let report = tasks
        .iter()
        .flat_map(|t| t.outs.iter())
        .map(|o| root.join(o))
        .find(|d| d.join(file::VERDICT).is_file());
    let verdict = report.as_ref().and_then(|d| {
        std::fs::read_to_string(d.join(file::VERDICT))
            .ok()
            .map(|s| s.trim().to_string())
    });
    let ok = result.is_ok();
    let upload = uploads(&tasks, &root, &artifacts);
    let status = match &result {
        Ok(()) => RunStatus::Finished,
        Err(e) if e.is::<Interrupted>() => RunStatus::Killed,
        Err(_) => RunStatus::Failed,
    };
    tracker.finish(status, verdict.clone().filter(|_| ok), &upload)?;
    if let Err(e) = result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            eprintln!(
                "run {}: {i}; recorded as KILLED in {}. The same command again goes on from \
                 here: finished stages are cached, and gan-train and classify resume from \
                 their last checkpoint.",
                tracker.id(),
                tracker.dir.join(file::RUN).display()
            );
            let code = i.exit_code();
            drop(lock);
            std::process::exit(code.into());
        }
        return Err(e);
    }
    let ran = tracker
        .record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .count();
    eprintln!(
        "run {}: {} stage(s) ran, {} cached, in {:.1} s",
        tracker.id(),
        ran,
        tasks.len() - ran,
        started.elapsed().as_secs_f64()
    );
    if let (Some(v), Some(d)) = (verdict, report) {
        println!("\n{v}\nreport: {}", d.join(file::INDEX).display());
    }
    Ok(())
}

/// What to send to MLflow besides the run folder: the report and each stage's metrics, as
/// (local file, artifact path).
fn uploads(tasks: &[Task], root: &Path, artifacts: &Path) -> Vec<(PathBuf, String)> {
    let mut upload = Vec::new();
    for t in tasks {
        for out in &t.outs {
            let dir = root.join(out);
            for name in [
                file::INDEX,
                file::VERDICT,
                file::METRICS,
                file::ACCEPTANCE,
                file::COMPOSITION,
            ] {
                let p = dir.join(name);
                if p.is_file() {
                    let rel = p
                        .strip_prefix(artifacts)
                        .map(|r| r.display().to_string())
                        .unwrap_or_else(|_| format!("{}/{name}", t.key));
                    upload.push((p, rel));
                }
            }
        }
    }
    upload
}
