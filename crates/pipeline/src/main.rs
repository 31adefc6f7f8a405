use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use pipeline::guard::{ArtifactsLock, Interrupted, Stop};
use pipeline::plan::{plan, Task};
use pipeline::report::{self, ReportInput};
use pipeline::runner::{shell_words, Runner};
use pipeline::slurm::Overrides;
use pipeline::spec::{parse_override, Bindings, Param, ParamType, Spec};
use pipeline::sweep::{self, SweepResult};
use pipeline::tracking::{self, Link, Tracker};
use rebalance_core::contract::classify::ClassifierMetrics;
use rebalance_core::contract::layout::file;
use rebalance_core::contract::read_json;
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
    /// Where the stages run: `local` (here, one after another) or `slurm` (each stale stage
    /// an sbatch job, with its upstream jobs as afterok dependencies, so independent stages run
    /// at the same time; resources from pipeline.toml, `-P resources.cpus=4` or
    /// `-P gan-train.resources.gpus=1`). Needs Slurm's client commands and a folder shared
    /// with the nodes.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// The `-P resources.*` overrides (taken out of `params`).
    #[arg(skip)]
    resources: Overrides,
    /// Log the run in MLflow as a child of this MLflow run id (a value of a sweep on Slurm)
    #[arg(long, hide = true)]
    parent_run: Option<String>,
    /// The MLflow run name
    #[arg(long, hide = true)]
    run_name: Option<String>,
    /// An MLflow tag `key=value` (repeatable)
    #[arg(long = "run-tag", hide = true, value_parser = parse_override)]
    run_tags: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

/// Take `-P resources.<key>=…` and `-P <entry>.resources.<key>=…` out of the parameters.
fn take_resources(mut args: RunArgs) -> Result<RunArgs> {
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
struct SweepArgs {
    /// The sweep's folder name under <artifacts>/sweeps [default: the swept parameter]
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    run: RunArgs,
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
            print_presets(&spec);
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
            print_presets(&spec);
        }
    }
    Ok(())
}

/// The presets: when each applies and what it sets.
fn print_presets(spec: &Spec) {
    if spec.presets.is_empty() {
        return;
    }
    println!("presets (values for the parameters not given, while every `when` holds):");
    for (name, p) in &spec.presets {
        let show = |m: &std::collections::BTreeMap<String, toml::Value>| {
            m.iter()
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("  {name}: when {}: {}", show(&p.when), show(&p.values));
        if !p.help.is_empty() {
            println!("    {}", p.help);
        }
    }
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
    if !args.quiet {
        for line in bindings.describe_presets(&spec) {
            eprintln!("{line}");
        }
    }
    let tasks = plan(&spec, &args.entry, &bindings)?;
    Ok(Planned { root, spec, tasks })
}

fn runner(args: &RunArgs, root: &Path) -> Runner {
    let lock = args
        .lock
        .clone()
        .unwrap_or_else(|| root.join("pipeline.lock"));
    let mut r = Runner::new(root, lock, args.force, !args.quiet);
    if args.executor == Executor::Slurm {
        r.slurm = Some(args.resources.clone());
    }
    r
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

/// How one run of planned tasks went.
struct Outcome {
    tracker: Tracker,
    result: Result<()>,
    verdict: Option<String>,
    /// The report folder, when the run wrote a verdict.
    report: Option<PathBuf>,
}

/// Run `tasks` under a new run record (and MLflow run), the caller holding the artifacts lock.
#[allow(clippy::too_many_arguments)]
fn execute(
    args: &RunArgs,
    root: &Path,
    spec: &Spec,
    tasks: &[Task],
    artifacts: &Path,
    id: String,
    stop: &Stop,
    link: &Link,
) -> Result<Outcome> {
    let params = tasks
        .iter()
        .flat_map(|t| {
            t.rendered_params()
                .into_iter()
                .map(move |(k, v)| (format!("{}.{k}", t.key), v))
        })
        .collect();
    let mut runner = runner(args, root);
    runner.stop = stop.clone();
    let mut tracker = Tracker::start(artifacts, id, &spec.name, &args.entry, params, link)?;
    eprintln!(
        "run {}: {} stage(s) of `{}`; records in {}",
        tracker.id(),
        tasks.len(),
        args.entry,
        tracker.dir.display()
    );
    let result = runner.run_all(tasks, &mut tracker);
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
    let upload = uploads(tasks, root, artifacts);
    tracker.finish(status_of(&result), verdict.clone().filter(|_| ok), &upload)?;
    Ok(Outcome {
        tracker,
        result,
        verdict,
        report,
    })
}

fn status_of(result: &Result<()>) -> RunStatus {
    match result {
        Ok(()) => RunStatus::Finished,
        Err(e) => error_status(e),
    }
}

/// KILLED for a run stopped by a signal, FAILED for any other error.
fn error_status(e: &anyhow::Error) -> RunStatus {
    if e.is::<Interrupted>() {
        RunStatus::Killed
    } else {
        RunStatus::Failed
    }
}

/// After SIGINT/SIGTERM: say how to go on, release the lock and exit 130/143.
fn exit_interrupted(i: &Interrupted, tracker: &Tracker, lock: ArtifactsLock) -> ! {
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

/// A sweep value that failed or was stopped: the sweep's own run ends FAILED or KILLED, and a
/// stopped sweep exits as any stopped run does (pointing at `record`'s run, else its own).
fn stop_sweep(
    parent: &mut Tracker,
    record: Option<&Tracker>,
    lock: ArtifactsLock,
    e: anyhow::Error,
) -> Result<anyhow::Error> {
    parent.finish(error_status(&e), None, &[])?;
    if let Some(int) = e.downcast_ref::<Interrupted>() {
        exit_interrupted(int, record.unwrap_or(parent), lock);
    }
    Ok(e)
}

fn stages_ran(tracker: &Tracker) -> Vec<String> {
    tracker
        .record
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .map(|s| s.key.clone())
        .collect()
}

fn run(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    let spec = Spec::load(&args.file)?;
    if let Some((key, candidates)) = auto_param(&spec, &args.entry, &args.params) {
        return auto(args, &spec, &key, candidates);
    }
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
    let out = execute(
        &args,
        &root,
        &spec,
        &tasks,
        &artifacts,
        id,
        &stop,
        &Link {
            parent: args.parent_run.clone(),
            name: args.run_name.clone(),
            tags: args.run_tags.clone(),
        },
    )?;
    if let Err(e) = out.result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            exit_interrupted(i, &out.tracker, lock);
        }
        return Err(e);
    }
    let ran = stages_ran(&out.tracker).len();
    eprintln!(
        "run {}: {} stage(s) ran, {} cached, in {:.1} s",
        out.tracker.id(),
        ran,
        tasks.len() - ran,
        started.elapsed().as_secs_f64()
    );
    if let (Some(v), Some(d)) = (out.verdict, out.report) {
        println!("\n{v}\nreport: {}", d.join(file::INDEX).display());
    }
    Ok(())
}

/// `pipeline sweep`: the entry point once per value of the swept parameter, in order, each a
/// run of its own (an MLflow child run of the sweep's run); the cache reruns only the stages the
/// parameter touches. Then the table and plots, and the report again with the sweep in it.
fn sweep(args: SweepArgs) -> Result<()> {
    let run_args = args.run;
    let spec = Spec::load(&run_args.file)?;
    spec.entry(&run_args.entry)?;
    let (fixed, swept) = sweep::split(&spec, &run_args.entry, &run_args.params)?;
    let name = sweep::slug(args.name.as_deref().unwrap_or(&swept.key));
    let Some(done) = run_sweep(&run_args, &spec, fixed, &swept, &name, false)? else {
        return Ok(());
    };
    println!("{}", done.result.markdown());
    drop(done.lock);
    Ok(())
}

/// `-P <param>=auto` for a string parameter whose choices include `auto`: the entry point once
/// per other choice (a sweep named `<param>-auto`), the choice with the best validation
/// macro-F1, then the entry point once more with it, so that the artifacts, the report and the
/// verdict are the chosen one's, on the test split.
fn auto(args: RunArgs, spec: &Spec, key: &str, candidates: Vec<String>) -> Result<()> {
    let fixed: Vec<(String, String)> = args
        .params
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect();
    let swept = sweep::Swept {
        key: key.to_string(),
        kind: ParamType::String,
        values: candidates,
    };
    let name = sweep::slug(&format!("{}-auto", key.rsplit('.').next().unwrap_or(key)));
    {
        let mut first = fixed.clone();
        first.push((key.to_string(), swept.values[0].clone()));
        let tasks = plan(
            spec,
            &args.entry,
            &Bindings::new(spec, &args.entry, &first)?,
        )?;
        if !tasks.iter().any(|t| t.entry == "classify") {
            bail!(
                "{key}=auto chooses by a classifier's validation macro-F1, and entry point `{}` \
                 trains none; run the whole chain (`-e main`), or give {key} one of: {}",
                args.entry,
                swept.values.join(", ")
            );
        }
    }
    eprintln!(
        "{key}=auto: trying {} and keeping the best on validation macro-F1",
        swept.values.join(", ")
    );
    let Some(done) = run_sweep(&args, spec, fixed.clone(), &swept, &name, true)? else {
        return Ok(());
    };
    let chosen = done
        .result
        .choice
        .as_ref()
        .map(|c| c.value.clone())
        .ok_or_else(|| anyhow::anyhow!("{key}=auto: no candidate has a validation macro-F1"))?;
    println!("{}", done.result.markdown());
    eprintln!("{key}=auto chose {chosen}; running it again so the artifacts are its own");
    let mut params = fixed;
    params.push((key.to_string(), chosen));
    let bindings = Bindings::new(spec, &args.entry, &params)?;
    let tasks = plan(spec, &args.entry, &bindings)?;
    let out = execute(
        &args,
        &done.root,
        spec,
        &tasks,
        &done.artifacts,
        tracking::new_run_id(),
        &done.stop,
        &Link {
            parent: done.parent_mlflow.clone(),
            name: Some(format!("{key}=auto → {}", params.last().unwrap().1)),
            tags: vec![("rebalance.auto".into(), key.to_string())],
        },
    )?;
    if let Err(e) = out.result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            exit_interrupted(i, &out.tracker, done.lock);
        }
        return Err(e);
    }
    // The report, whatever the cache did, with the choice in it.
    let report = rewrite_report(&tasks, &done.root, &done.artifacts, Some(key))?;
    if let Some(r) = report {
        println!("\n{}\nreport: {}", r.0, r.1.join(file::INDEX).display());
    }
    drop(done.lock);
    Ok(())
}

/// The string parameter set to `auto` among the overrides, when its choices include `auto`:
/// (key, the other choices).
fn auto_param(
    spec: &Spec,
    entry: &str,
    params: &[(String, String)],
) -> Option<(String, Vec<String>)> {
    params.iter().find_map(|(k, v)| {
        if v != "auto" {
            return None;
        }
        let decl = sweep::declared(spec, entry, k)?;
        decl.choices.iter().any(|c| c == "auto").then(|| {
            (
                k.clone(),
                decl.choices
                    .iter()
                    .filter(|c| *c != "auto")
                    .cloned()
                    .collect(),
            )
        })
    })
}

/// Write the report of the entry point's `report` stage again (after a sweep or a choice):
/// (verdict, report folder).
fn rewrite_report(
    tasks: &[Task],
    root: &Path,
    artifacts: &Path,
    auto: Option<&str>,
) -> Result<Option<(String, PathBuf)>> {
    let Some(out) = tasks
        .iter()
        .find(|t| t.entry == "report")
        .and_then(|t| t.outs.first())
        .map(|o| root.join(o))
    else {
        return Ok(None);
    };
    let rounds = tasks.iter().map(|t| t.round).max().unwrap_or(1);
    let r = report::write(
        &ReportInput {
            artifacts: artifacts.to_path_buf(),
            rounds,
            auto: auto.map(str::to_string),
        },
        &out,
    )?;
    Ok(Some((r.verdict, out)))
}

/// A finished sweep, still holding the artifacts lock.
struct SweepDone {
    result: SweepResult,
    root: PathBuf,
    artifacts: PathBuf,
    lock: ArtifactsLock,
    stop: Stop,
    parent_mlflow: Option<String>,
}

/// Run the sweep; `choose`: pick the best value on validation macro-F1. None on --dry-run.
fn run_sweep(
    run_args: &RunArgs,
    spec: &Spec,
    fixed: Vec<(String, String)>,
    swept: &sweep::Swept,
    name: &str,
    choose: bool,
) -> Result<Option<SweepDone>> {
    let started = Instant::now();
    let root = root_of(&run_args.file)?;
    let name = name.to_string();
    let plan_for = |value: &str| -> Result<Vec<Task>> {
        let mut all = fixed.clone();
        all.push((swept.key.clone(), value.to_string()));
        let bindings = Bindings::new(spec, &run_args.entry, &all)?;
        plan(spec, &run_args.entry, &bindings)
    };
    let plans: Vec<Vec<Task>> = swept
        .values
        .iter()
        .map(|v| plan_for(v))
        .collect::<Result<_>>()?;
    for p in &plans {
        sweep::result_tasks(p)?;
    }
    let shown = artifacts_of(&plans[0]);
    let artifacts = root.join(&shown);
    let dir = artifacts.join(sweep::SWEEPS).join(&name);
    if run_args.dry_run {
        for (v, tasks) in swept.values.iter().zip(&plans) {
            println!("{}={v}:", swept.key);
            for t in tasks {
                println!("  $ {}", shell_words(&t.argv));
            }
        }
        println!("results: {}", dir.display());
        return Ok(None);
    }
    let id = tracking::new_run_id();
    let lock = ArtifactsLock::acquire(&artifacts, &shown, &id, run_args.wait)?;
    let stop = Stop::install()?;
    tracking::close_abandoned(&artifacts)?;
    let mut params: std::collections::BTreeMap<String, String> = fixed.iter().cloned().collect();
    params.insert(
        format!("sweep.{}", swept.key),
        swept.values.join(if swept.kind == ParamType::List {
            ";"
        } else {
            ","
        }),
    );
    let sweep_entry = format!("sweep:{}", run_args.entry);
    let mut parent = Tracker::start(
        &artifacts,
        id,
        &spec.name,
        &sweep_entry,
        params,
        &Link {
            name: Some(format!("sweep {name} ({})", swept.key)),
            tags: vec![("rebalance.sweep".into(), name.clone())],
            ..Link::default()
        },
    )?;
    eprintln!(
        "sweep {name}: {} = {} ({} values); records in {}",
        swept.key,
        swept.values.join(", "),
        swept.values.len(),
        parent.dir.display()
    );
    let mut rows = Vec::new();
    let mut rare = Vec::new();
    let mut baseline = None;
    for (i, (value, tasks)) in swept.values.iter().zip(&plans).enumerate() {
        if i == 1 && run_args.executor == Executor::Slurm {
            // The first value ran every stage; the others run side by side as one job array.
            let on_slurm = SlurmSweep {
                run_args,
                fixed: &fixed,
                swept,
                name: &name,
                plans: &plans,
                root: &root,
                dir: &dir,
            };
            let rest = match on_slurm.rest(&mut parent, &stop, &rare) {
                Ok(r) => r,
                Err(e) => return Err(stop_sweep(&mut parent, None, lock, e)?),
            };
            for (j, row) in rest.into_iter().enumerate() {
                for (k, s) in &row.metrics {
                    parent.metric(&format!("sweep.{k}"), s.mean, (j + 1) as i64)?;
                }
                rows.push(row);
            }
            break;
        }
        eprintln!(
            "sweep {name}: [{}/{}] {}={value}",
            i + 1,
            plans.len(),
            swept.key
        );
        let link = Link {
            parent: parent.mlflow_run_id().map(str::to_string),
            name: Some(format!("{}={value}", swept.key)),
            tags: vec![
                ("rebalance.sweep".into(), name.clone()),
                ("rebalance.sweep.param".into(), swept.key.clone()),
                ("rebalance.sweep.value".into(), value.clone()),
            ],
        };
        let out = execute(
            run_args,
            &root,
            spec,
            tasks,
            &artifacts,
            tracking::new_run_id(),
            &stop,
            &link,
        )?;
        if let Err(e) = out.result {
            let e = stop_sweep(&mut parent, Some(&out.tracker), lock, e)?;
            return Err(e.context(format!("sweep {name}: {}={value}", swept.key)));
        }
        let results = sweep::result_tasks(tasks)?;
        if rare.is_empty() {
            let m: ClassifierMetrics = read_json(
                &sweep::output_file(results.classify, &root, file::METRICS)
                    .ok_or_else(|| anyhow::anyhow!("{} left no metrics", results.classify.key))?,
            )?;
            rare = m.rare_classes.clone();
        }
        let row = sweep::collect_row(
            value,
            out.tracker.id(),
            stages_ran(&out.tracker),
            &results,
            &root,
            &rare,
            &dir.join(sweep::slug(&format!("{}={value}", swept.key))),
        )?;
        eprintln!("sweep {name}: {}={value}: {}", swept.key, row.summary());
        for (k, s) in &row.metrics {
            parent.metric(&format!("sweep.{k}"), s.mean, i as i64)?;
        }
        if baseline.is_none() {
            baseline = results
                .baseline
                .and_then(|(t, name)| sweep::output_file(t, &root, name))
                .and_then(|p| read_json::<ClassifierMetrics>(&p).ok())
                .map(|m| sweep::summarize(&m, &rare));
        }
        rows.push(row);
    }
    let mut result = SweepResult {
        name: name.clone(),
        entry: run_args.entry.clone(),
        param: swept.key.clone(),
        fixed,
        rare_classes: rare,
        baseline,
        rows,
        choice: None,
    };
    if choose {
        result.choice = result.best_on_validation().map(|r| sweep::Choice {
            value: r.value.clone(),
            by: "validation macro-F1, mean over seeds".into(),
        });
    }
    result.write(&dir)?;
    // The report again, now with the sweep's table and plots.
    let report = rewrite_report(&plans[0], &root, &artifacts, None)?;
    let mut upload: Vec<(PathBuf, String)> = ["sweep.json", "table.md", "table.csv"]
        .iter()
        .map(|f| (dir.join(f), format!("sweep/{f}")))
        .collect();
    for (k, _) in sweep::COLUMNS {
        upload.push((dir.join(format!("{k}.svg")), format!("sweep/{k}.svg")));
    }
    if let Some(c) = &result.choice {
        parent.tag(&format!("rebalance.choice.{}", swept.key), &c.value)?;
    }
    parent.finish(RunStatus::Finished, None, &upload)?;
    eprintln!(
        "sweep {name}: {} values in {:.1} s; table and plots in {}{}",
        result.rows.len(),
        started.elapsed().as_secs_f64(),
        dir.display(),
        report
            .map(|(_, d)| format!(", report {}", d.join(file::INDEX).display()))
            .unwrap_or_default()
    );
    Ok(Some(SweepDone {
        result,
        root,
        artifacts,
        lock,
        stop,
        parent_mlflow: parent.mlflow_run_id().map(str::to_string),
    }))
}

/// `pipeline sweep --executor slurm`, after the first value ran in the artifacts folder: every
/// other value in a folder of its own (`sweep::mirror`, so the stages the parameter does not
/// touch are cached there), run by one task of a Slurm job array each, at the same time.
struct SlurmSweep<'a> {
    run_args: &'a RunArgs,
    fixed: &'a [(String, String)],
    swept: &'a sweep::Swept,
    name: &'a str,
    plans: &'a [Vec<Task>],
    root: &'a Path,
    dir: &'a Path,
}

impl SlurmSweep<'_> {
    /// The values after the first, as a job array; their rows.
    fn rest(
        &self,
        parent: &mut Tracker,
        stop: &Stop,
        rare: &[String],
    ) -> Result<Vec<sweep::SweepRow>> {
        let runner = std::env::current_exe().context("finding this runner's own path")?;
        let manifest = std::fs::canonicalize(&self.run_args.file)?;
        let lock = self
            .run_args
            .lock
            .clone()
            .unwrap_or_else(|| self.root.join("pipeline.lock"));
        let artifacts = PathBuf::from(artifacts_of(&self.plans[0]));
        let key = &self.swept.key;
        let values = &self.swept.values[1..];
        let mut scripts = Vec::new();
        let mut folders = Vec::new();
        for value in values {
            let slug = sweep::slug(&format!("{key}={value}"));
            let folder = self.dir.join("values").join(&slug);
            sweep::mirror(self.root, &manifest, &lock, &artifacts, &folder)?;
            let mut argv: Vec<String> = vec![
                runner.display().to_string(),
                "run".into(),
                "-f".into(),
                manifest
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                "-e".into(),
                self.run_args.entry.clone(),
                "-q".into(),
            ];
            for (k, v) in self
                .fixed
                .iter()
                .chain(std::iter::once(&(key.clone(), value.clone())))
            {
                argv.extend(["-P".into(), format!("{k}={v}")]);
            }
            if let Some(p) = parent.mlflow_run_id() {
                argv.extend(["--parent-run".into(), p.to_string()]);
            }
            argv.extend(["--run-name".into(), format!("{key}={value}")]);
            for (k, v) in [
                ("rebalance.sweep", self.name.to_string()),
                ("rebalance.sweep.param", key.clone()),
                ("rebalance.sweep.value", value.clone()),
            ] {
                argv.extend(["--run-tag".into(), format!("{k}={v}")]);
            }
            let words: Vec<String> = argv.iter().map(|a| pipeline::slurm::sh_quote(a)).collect();
            scripts.push(format!(
                "cd {} && exec {}",
                pipeline::slurm::sh_quote(&folder.display().to_string()),
                words.join(" ")
            ));
            folders.push(folder);
        }
        let request = self.request();
        let art_dir = self.root.join(artifacts_of(&self.plans[0]));
        let comment =
            pipeline::slurm::job_comment(&art_dir.canonicalize().unwrap_or(art_dir), parent.id());
        let jobs = pipeline::slurm::run_array(
            &format!("sweep-{}", self.name),
            &comment,
            &scripts,
            &request,
            self.root,
            &parent.dir.join("logs"),
            &parent.env(),
            stop,
            !self.run_args.quiet,
        );
        let jobs = jobs?;
        let mut rows = Vec::new();
        for ((value, folder), (job, log)) in values.iter().zip(&folders).zip(&jobs) {
            if job.state != "COMPLETED" {
                bail!(
                    "sweep {}: {key}={value} failed: Slurm job {} ended {} (exit code {}). Its log: {}\n--- last lines ---\n{}",
                    self.name,
                    job.id,
                    job.state,
                    job.exit_code,
                    log.display(),
                    pipeline::runner::last_lines(log, 12)
                );
            }
            let plan = &self.plans[1 + rows.len()];
            let record = newest_run(&folder.join(&artifacts))?;
            let ran = record
                .stages
                .iter()
                .filter(|s| s.status == StageStatus::Ran)
                .map(|s| s.key.clone())
                .collect();
            let row = sweep::collect_row(
                value,
                &record.id,
                ran,
                &sweep::result_tasks(plan)?,
                folder,
                rare,
                &self.dir.join(sweep::slug(&format!("{key}={value}"))),
            )?;
            eprintln!(
                "sweep {}: {key}={value} (Slurm {}): {}",
                self.name,
                job.id,
                row.summary()
            );
            rows.push(row);
        }
        Ok(rows)
    }

    /// What each value's job asks for: the request of the heaviest stage the parameter touches
    /// (or that runs after one it touches).
    fn request(&self) -> pipeline::spec::Resources {
        let first = &self.plans[0];
        let mut best = pipeline::spec::Resources::default();
        for plan in &self.plans[1..] {
            let ups = pipeline::slurm::upstream(plan);
            let mut touched = vec![false; plan.len()];
            for (i, t) in plan.iter().enumerate() {
                let same = first.iter().find(|f| f.key == t.key).is_some_and(|f| {
                    f.argv == t.argv && f.rendered_params() == t.rendered_params()
                });
                touched[i] = !same || ups[i].iter().any(|&j| touched[j]);
                if touched[i] {
                    let r = self.run_args.resources.resolve(t);
                    if (r.cpus, r.gpus) > (best.cpus, best.gpus) {
                        best = r;
                    }
                }
            }
        }
        best
    }
}

/// The newest run record under `<artifacts>/runs`.
fn newest_run(artifacts: &Path) -> Result<rebalance_core::contract::runs::RunRecord> {
    let runs = artifacts.join("runs");
    let mut best: Option<rebalance_core::contract::runs::RunRecord> = None;
    for e in std::fs::read_dir(&runs).with_context(|| format!("listing {}", runs.display()))? {
        let p = e?.path().join(file::RUN);
        if let Ok(r) = read_json::<rebalance_core::contract::runs::RunRecord>(&p) {
            if best
                .as_ref()
                .is_none_or(|b| r.started_unix_ms > b.started_unix_ms)
            {
                best = Some(r);
            }
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no run record in {}", runs.display()))
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
