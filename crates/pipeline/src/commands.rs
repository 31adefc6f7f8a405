//! `pipeline run`, `status` and `list`.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::cache::Cache;
use crate::cli::RunArgs;
use crate::guard::Interrupted;
use crate::session::{planned, stages_ran, task_params, Planned, RunStart, Session};
use crate::spec::{Param, Spec};
use crate::sweep::run::{auto, auto_param};
use crate::tracking::Link;
use crate::util::shell_words;
use rebalance_core::contract::layout::file;

pub fn list(file: &Path, entry: Option<&str>) -> Result<()> {
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
pub fn print_presets(spec: &Spec) {
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

/// Every stage of the entry point with its state: cached, or each reason it would run. With
/// `commands`, the command line too (`--dry-run`).
pub fn status(args: &RunArgs, commands: bool) -> Result<()> {
    let p = planned(args)?;
    let mut cache = Cache::new(&p.root, args.lock_path(&p.root), args.force);
    for (task, (key, why)) in p.tasks.iter().zip(cache.status(&p.tasks)?) {
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

pub fn run(args: RunArgs) -> Result<()> {
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
    // One run per artifacts folder: held until this function returns (or exits).
    let start = RunStart {
        entry: &args.entry,
        params: task_params(&tasks),
        link: Link {
            parent: args.parent_run.clone(),
            name: args.run_name.clone(),
            tags: args.run_tags.clone(),
        },
    };
    let mut session = Session::open(&root, &spec, &tasks, args.wait, start)?;
    let out = session.run(&args, &tasks)?;
    if let Err(e) = out.result {
        if let Some(i) = e.downcast_ref::<Interrupted>() {
            session.exit_interrupted(i, None);
        }
        return Err(e);
    }
    let ran = stages_ran(&session.tracker.record).len();
    eprintln!(
        "run {}: {} stage(s) ran, {} cached, in {:.1} s",
        session.tracker.id(),
        ran,
        tasks.len() - ran,
        started.elapsed().as_secs_f64()
    );
    if let (Some(v), Some(d)) = (out.verdict, out.report) {
        println!("\n{v}\nreport: {}", d.join(file::INDEX).display());
    }
    Ok(())
}
