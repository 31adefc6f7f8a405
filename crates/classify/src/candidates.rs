//! `classify --candidates`: train several named recipes with the same seeds, choose the best on
//! the real validation split, and write the chosen one's outputs with every candidate's results
//! beside them (`recipes.json`, `recipes/<name>/`). The pipeline's judge is this choice: the best
//! cheap alternative, which is also the bar the verdict holds synthetic images to.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rebalance_core::contract::classify::{
    find_preset, MeanStd, Pool, Preset, RecipeResult, RecipeSelection, SeedRun,
};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::write_json;
use rebalance_core::{partial_dir, swap_into, write_atomic, FileRecord};
use rebalance_nn::device_name;
use rebalance_nn::train::run_key::{Claim, RunKey};
use tracing::info;

use crate::recipe::{Choice, RECIPES_JSON};
use crate::train::{pm, train_seeds, write_manifest, write_outputs, Plan};
use crate::TrainArgs;

/// The files of the chosen candidate that become the folder's own.
const TOP_LEVEL: [&str; 8] = [
    file::MODEL,
    file::CONFIG,
    file::METRICS,
    file::CURVES,
    "curves.svg",
    "confusion.csv",
    "confusion.png",
    "summary.txt",
];

/// The value the choice is made by.
const BY: &str = "macro_f1";

/// Each candidate's plan, in the order given; every name once.
fn resolve(args: &TrainArgs) -> Result<Vec<(&'static Preset, Plan)>> {
    if args.seed_task.is_some() || args.merge_seeds {
        bail!(
            "--candidates trains every recipe in one run; it takes no --seed-task or --merge-seeds"
        );
    }
    let mut plans: Vec<(&'static Preset, Plan)> = Vec::new();
    for name in &args.candidates {
        let p = find_preset(name.trim())?;
        if plans.iter().any(|(q, _)| q.name == p.name) {
            bail!("--candidates names `{}` twice", p.name);
        }
        let train = match p.pool {
            Pool::Real => Plan::paths(args).0,
            Pool::Classical => args.classical_train.clone().with_context(|| {
                "the `classical` candidate trains on static classical copies: pass \
                 --classical-train FILE (augment --strategy classical writes one)"
            })?,
        };
        let plan = Plan::resolve_with(args, train, Choice::of_preset(p, args.tau))?;
        if let Some((_, first)) = plans.first() {
            plan.data.train.ensure_matches(
                &plan.data.train_path,
                &first.data.train,
                &first.data.train_path,
            )?;
        }
        plans.push((p, plan));
    }
    Ok(plans)
}

/// The candidate with the best mean validation macro-F1; the earlier one on a tie.
pub fn choose(results: &[RecipeResult]) -> Option<&RecipeResult> {
    let f1 = |r: &RecipeResult| r.val.get(BY).map(|v| v.0).unwrap_or(f64::NEG_INFINITY);
    results
        .iter()
        .fold(None, |best: Option<&RecipeResult>, r| match best {
            Some(b) if f1(b) >= f1(r) => Some(b),
            _ => Some(r),
        })
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let plans = resolve(args)?;
    let out = plans[0].1.out.clone();
    let _lock = rebalance_core::stage_lock::StageLock::share("classify", &out)?;
    let inputs = union_inputs(&plans);
    let device = device_name(plans[0].1.device);
    info!(
        "classify: {} recipe(s), {} seed(s) each, chosen on val macro-F1 → {}, device {device}",
        plans.len(),
        args.seeds,
        out.display()
    );
    let work = partial_dir(&out);
    let key = RunKey::new(
        serde_json::to_value(args)?,
        &["/common/quiet"],
        inputs.clone(),
        &device,
    );
    if key.claim(&work)? == Claim::Resume {
        info!(
            "{} holds an interrupted run of this same command: resuming it",
            work.display()
        );
    }
    let (results, all_runs) = train_all(&plans, &work)?;
    let (selection, table) = write_selection(&work, results, args.seeds as usize)?;
    RunKey::release(&work)?;
    let at = selection
        .candidates
        .iter()
        .position(|r| r.name == selection.chosen)
        .expect("chosen");
    write_manifest(&plans[at].1, &all_runs[at], &work, started, |m| {
        m.inputs = inputs;
        m.metrics
            .insert("recipe".into(), serde_json::json!(selection.chosen));
        for r in &selection.candidates {
            for (split, v) in [("val", &r.val), ("test", &r.test)] {
                if let Some((mean, _)) = v.get(BY) {
                    m.metrics
                        .insert(format!("{}/{split}_{BY}", r.name), serde_json::json!(mean));
                }
            }
        }
    })?;
    swap_into(&work, &out)?;
    println!("{table}");
    println!(
        "classify: chose `{}` on validation; outputs in {}",
        selection.chosen,
        out.display()
    );
    Ok(())
}

/// Every candidate's input files, each once.
fn union_inputs(plans: &[(&'static Preset, Plan)]) -> Vec<FileRecord> {
    let mut inputs: Vec<FileRecord> = Vec::new();
    for (_, p) in plans {
        for r in &p.inputs {
            if !inputs.iter().any(|i| i.path == r.path) {
                inputs.push(r.clone());
            }
        }
    }
    inputs
}

/// Train (or reuse) every candidate's seeds in `work/recipes/<name>/` and write its outputs
/// there; each one's result and runs.
fn train_all(
    plans: &[(&'static Preset, Plan)],
    work: &Path,
) -> Result<(Vec<RecipeResult>, Vec<Vec<SeedRun>>)> {
    let mut results = Vec::new();
    let mut all_runs = Vec::new();
    for (preset, plan) in plans {
        let dir = work.join("recipes").join(preset.name);
        info!(
            "recipe {}: {} on {}",
            preset.name,
            plan.recipe.contract().describe(),
            plan.data.train_path.display()
        );
        let runs = train_seeds(plan, &dir)?;
        write_outputs(plan, &runs, &dir)?;
        results.push(result_of(preset, plan, &runs));
        all_runs.push(runs);
    }
    Ok((results, all_runs))
}

/// Choose, copy the chosen candidate's files to the top of `work`, and write `recipes.json` and
/// `recipes.txt`; the selection and its table.
fn write_selection(
    work: &Path,
    results: Vec<RecipeResult>,
    seeds: usize,
) -> Result<(RecipeSelection, String)> {
    let chosen = choose(&results)
        .expect("at least one candidate")
        .name
        .clone();
    let src = work.join("recipes").join(&chosen);
    for f in TOP_LEVEL {
        std::fs::copy(src.join(f), work.join(f))
            .with_context(|| format!("copying {}", src.join(f).display()))?;
    }
    let selection = RecipeSelection {
        chosen,
        by: format!("val {BY} (mean over seeds; ties go to the earlier candidate)"),
        candidates: results,
    };
    write_json(&work.join(RECIPES_JSON), &selection)?;
    let table = table(&selection, seeds);
    write_atomic(&work.join("recipes.txt"), table.as_bytes())?;
    Ok((selection, table))
}

fn result_of(preset: &Preset, plan: &Plan, runs: &[SeedRun]) -> RecipeResult {
    RecipeResult {
        name: preset.name.to_string(),
        about: preset.about.to_string(),
        train: plan.data.train_path.display().to_string(),
        recipe: plan.recipe.contract(),
        val: MeanStd::of(&runs.iter().map(|r| &r.val).collect::<Vec<_>>()),
        test: MeanStd::of(&runs.iter().map(|r| &r.test).collect::<Vec<_>>()),
        seeds: runs.iter().map(|r| r.seed).collect(),
    }
}

/// Every candidate's val and test macro-F1, the chosen one marked.
fn table(sel: &RecipeSelection, k: usize) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "recipe".to_string(),
        format!("val macro-F1 ({k} seed(s))"),
        "test macro-F1".to_string(),
        "what it is".to_string(),
    ]);
    for r in &sel.candidates {
        let g = |m: &MeanStd| {
            m.get(BY)
                .map(|(a, b)| pm(a, b, k))
                .unwrap_or_else(|| "—".into())
        };
        let name = if r.name == sel.chosen {
            format!("{} (chosen)", r.name)
        } else {
            r.name.clone()
        };
        t.add_row(vec![name, g(&r.val), g(&r.test), r.about.clone()]);
    }
    format!(
        "{t}\nchosen by {}; test is reported, never chosen by",
        sel.by
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rebalance_core::contract::classify::TrainingRecipe;

    fn r(name: &str, val: f64) -> RecipeResult {
        let mut m = MeanStd::default();
        m.mean.insert(BY.into(), val);
        RecipeResult {
            name: name.into(),
            about: String::new(),
            train: String::new(),
            recipe: TrainingRecipe {
                augment: Default::default(),
                ranges: None,
                sampler: Default::default(),
                epoch_size: 1,
                loss: Default::default(),
                tau: 0.0,
                class_weighted: false,
                mixup: 0.0,
                synthetic: None,
            },
            val: m.clone(),
            test: m,
            seeds: vec![1],
        }
    }

    #[test]
    fn the_best_val_wins_and_ties_go_to_the_earlier() {
        let rs = [r("a", 0.9), r("b", 0.95), r("c", 0.95), r("d", 0.5)];
        assert_eq!(choose(&rs).unwrap().name, "b");
        assert_eq!(choose(&rs[..1]).unwrap().name, "a");
        assert!(choose(&[]).is_none());
    }
}
