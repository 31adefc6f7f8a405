//! `--per-class-gans A,B,…`: one unconditional dcgan per class, each trained as `--class`
//! would train it, into `<out>/classes/<class>/`, with `<out>/classes.json` naming them.
//! `generate` then draws each class from its own generator.
//!
//! The classes train one after another in one process, or side by side as the tasks of a job
//! array: `--class-task I` trains the I-th class alone into the work folder, and
//! `--merge-classes` moves the finished classes into place. Both give the same folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rebalance_core::contract::gan::{GanKind, PerClassGans};
use rebalance_core::contract::layout::{file, Layout, DATASET, GAN};
use rebalance_core::contract::{class_index, write_json};
use rebalance_core::{partial_dir, remove_path, swap_into, FileRecord, ImageSet, Manifest};
use rebalance_nn::train::run_key::{Claim, RunKey};
use rebalance_nn::{device_name, resolve_device};
use tracing::info;

use crate::args::TrainArgs;

/// The folder of the per-class GANs inside a gan-train output.
pub const CLASSES: &str = "classes";

/// The classes named by `--per-class-gans` (empty entries dropped).
pub fn classes_of(args: &TrainArgs) -> Vec<String> {
    args.per_class
        .per_class_gans
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The arguments of one class's own run, written into `work/classes/<class>`.
fn one(args: &TrainArgs, class: &str, work: &Path) -> TrainArgs {
    let mut a = args.clone();
    a.per_class.per_class_gans.clear();
    a.per_class.class_task = None;
    a.per_class.merge_classes = false;
    a.class = Some(class.to_string());
    a.out = Some(work.join(CLASSES).join(class));
    a
}

/// Where a class task keeps its run key: a finished class is reused only by the same command.
fn task_key_dir(work: &Path, class: &str) -> PathBuf {
    work.join(CLASSES).join(format!(".{class}.task"))
}

fn finished(work: &Path, class: &str) -> bool {
    work.join(CLASSES)
        .join(class)
        .join(file::GENERATOR)
        .is_file()
}

/// A `--per-class-gans` run: its classes and how its work is split.
#[derive(Debug, Clone)]
pub struct PerClassJob {
    pub classes: Vec<String>,
    pub task: Task,
}

/// Which part of a per-class run this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Every class not trained yet, one after another, then the outputs.
    All,
    /// `--class-task I`: the I-th class alone, into the work folder; no outputs.
    Class(u64),
    /// `--merge-classes`: the outputs, from classes the tasks trained.
    Merge,
}

impl PerClassJob {
    /// The per-class job of `classes`, or why the other flags do not go with it.
    pub fn resolve(args: &TrainArgs, classes: Vec<String>) -> Result<Self> {
        if args.model != GanKind::Dcgan {
            bail!(
                "--per-class-gans trains one unconditional dcgan per class: use --model dcgan ({} already models every class in one network)",
                args.model
            );
        }
        if args.class.is_some() || !args.classes.is_empty() || args.minority.is_some() {
            bail!("--per-class-gans names the classes itself; leave out --class, --classes and --minority");
        }
        if args.resume.is_some() || args.init.is_some() {
            bail!("--per-class-gans resumes by itself (run the same command again); --resume and --init are for one GAN");
        }
        for (i, c) in classes.iter().enumerate() {
            if classes[..i].contains(c) {
                bail!("--per-class-gans names class `{c}` twice");
            }
        }
        let task = match (args.per_class.class_task, args.per_class.merge_classes) {
            (Some(i), _) => Task::Class(i),
            (None, true) => Task::Merge,
            (None, false) => Task::All,
        };
        Ok(Self { classes, task })
    }
}

/// Train the classes of `job` (each with `train_one`, on the arguments of its own run) and,
/// unless this is one task of a job array, write the outputs.
pub fn run(
    args: &TrainArgs,
    job: &PerClassJob,
    train_one: fn(&TrainArgs) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let classes = &job.classes;
    let layout = Layout::new(&args.common.artifacts);
    let out = args.out.clone().unwrap_or_else(|| layout.dir(GAN));
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| layout.file(DATASET, file::TRAIN));
    let set = ImageSet::read(&data)?;
    for c in classes {
        class_index(&set.classes, c)
            .with_context(|| format!("--per-class-gans: {}", data.display()))?;
    }
    let device = device_name(resolve_device(args.common.device)?);
    let work = partial_dir(&out);
    let key = RunKey::new(
        serde_json::to_value(args)?,
        &["/common/quiet"],
        vec![FileRecord::of_file(&data, &data.display().to_string())?],
        &device,
    );
    match job.task {
        Task::Class(i) => return class_task(args, classes, i, &work, &key, train_one),
        Task::Merge => check_merge(classes, &work, &key)?,
        Task::All => train_all(args, classes, &work, &key, train_one)?,
    }
    write_outputs(args, classes, &work, &data, &device, started)?;
    swap_into(&work, &out)?;
    println!(
        "gan-train: {} dcgans, one per class ({}), in {}",
        classes.len(),
        classes.join(", "),
        out.display()
    );
    Ok(())
}

/// `--class-task I`: train the I-th class into the work folder, unless this same command
/// already did.
fn class_task(
    args: &TrainArgs,
    classes: &[String],
    i: u64,
    work: &Path,
    key: &RunKey,
    train_one: fn(&TrainArgs) -> Result<()>,
) -> Result<()> {
    let class = classes.get(i as usize).ok_or_else(|| {
        anyhow!(
            "--class-task {i}: --per-class-gans names {} classes, numbered from 0",
            classes.len()
        )
    })?;
    let claim = key.claim(&task_key_dir(work, class))?;
    if claim == Claim::Resume && finished(work, class) {
        info!("class {class}: already trained in {}", work.display());
        return Ok(());
    }
    if claim != Claim::Resume {
        // Whatever another command left for this class goes.
        remove_path(&work.join(CLASSES).join(class))?;
    }
    train_one(&one(args, class, work))?;
    info!("class {class} (task {i}) trained; `--merge-classes` writes the outputs");
    Ok(())
}

/// `--merge-classes`: every class must have been trained by a task of this same command.
fn check_merge(classes: &[String], work: &Path, key: &RunKey) -> Result<()> {
    for (i, c) in classes.iter().enumerate() {
        if !finished(work, c) || RunKey::read(&task_key_dir(work, c)).as_ref() != Some(key) {
            bail!(
                "--merge-classes: class {c} has not been trained by this command in {} (run it with --class-task {i} first)",
                work.display()
            );
        }
    }
    Ok(())
}

/// Every class in turn, keeping those an interrupted run of this same command finished.
fn train_all(
    args: &TrainArgs,
    classes: &[String],
    work: &Path,
    key: &RunKey,
    train_one: fn(&TrainArgs) -> Result<()>,
) -> Result<()> {
    if key.claim(work)? == Claim::Resume {
        info!(
            "{} holds an interrupted run of this same command: finished classes are kept",
            work.display()
        );
    }
    for c in classes {
        if finished(work, c) {
            info!("class {c}: already trained, keeping it");
            continue;
        }
        info!("class {c}: training its own dcgan");
        train_one(&one(args, c, work))?;
    }
    Ok(())
}

/// Keep only the classes' folders, then write `classes.json` and the manifest.
fn write_outputs(
    args: &TrainArgs,
    classes: &[String],
    work: &Path,
    data: &Path,
    device: &str,
    started: Instant,
) -> Result<()> {
    for dir in [work.to_path_buf(), work.join(CLASSES)] {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = if dir == work {
                name == CLASSES
            } else {
                classes.contains(&name)
            };
            if !keep {
                remove_path(&entry.path())?;
            }
        }
    }
    write_json(
        &work.join(file::PER_CLASS),
        &PerClassGans {
            model: args.model,
            classes: classes.to_vec(),
        },
    )?;
    Manifest::new(
        "gan-train",
        serde_json::to_value(args)?,
        device,
        args.common.seed,
    )
    .with_input_files([data])?
    .write_into(work, started)
}
