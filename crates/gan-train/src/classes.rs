//! Which classes a run trains on, from the flags and the training set.

use std::path::Path;

use anyhow::{bail, Result};
use rebalance_core::contract::class_index;
use rebalance_core::contract::dataset::rare_classes_of;
use rebalance_core::ImageSet;

use crate::args::{CycleganArgs, TrainArgs};

/// The classes a run trains on: `--class`, `--classes`, `--minority` or all; for dagan those
/// with pairs to learn from, for cyclegan `--from` and `--to`.
pub(crate) fn choose_classes(
    set: &ImageSet,
    data: &Path,
    args: &TrainArgs,
    cyclegan: Option<&CycleganArgs>,
) -> Result<Vec<i64>> {
    let counts = set.counts();
    let find = |name: &str| class_index(&set.classes, name).map(|i| i as i64);
    let chosen: Vec<i64> = if let Some(c) = &args.class {
        vec![find(c)?]
    } else if !args.classes.is_empty() {
        args.classes
            .iter()
            .map(|c| find(c))
            .collect::<Result<_>>()?
    } else if let Some(n) = args.minority {
        let v: Vec<i64> = (0..counts.len())
            .filter(|&i| counts[i] < n)
            .map(|i| i as i64)
            .collect();
        if v.is_empty() {
            bail!(
                "--minority {n}: no class has fewer than {n} training images (counts: {counts:?})"
            );
        }
        v
    } else {
        (0..counts.len() as i64).collect()
    };
    set.ensure_classes_have_images(
        data,
        chosen.iter().map(|&c| c as usize),
        "leave it out with --classes (the classes to train on)",
    )?;
    if args.model.image_conditioned() {
        return dagan_classes(set, data, args, chosen);
    }
    if let Some(cyclegan) = cyclegan {
        return translation_classes(set, data, cyclegan);
    }
    Ok(chosen)
}

/// DAGAN learns from same-class pairs of the common classes (all chosen classes when the user
/// named them), and is then applied to the rare ones.
fn dagan_classes(
    set: &ImageSet,
    data: &Path,
    args: &TrainArgs,
    chosen: Vec<i64>,
) -> Result<Vec<i64>> {
    let counts = set.counts();
    let named = args.class.is_some() || !args.classes.is_empty() || args.minority.is_some();
    let dir = data.parent().unwrap_or(Path::new("."));
    let rare = rare_classes_of(dir, &set.classes, &counts);
    let pairs: Vec<i64> = chosen
        .into_iter()
        .filter(|&c| counts[c as usize] >= 2)
        .filter(|&c| named || !rare.contains(&set.classes[c as usize]))
        .collect();
    if pairs.is_empty() {
        bail!(
            "dagan learns from pairs of images of one class: no chosen class has 2 or more training images (counts: {counts:?})"
        );
    }
    Ok(pairs)
}

/// [A, B]: `--from` (default: the class with the most training images, other than B) and `--to`
/// (default: the one with the fewest).
fn translation_classes(set: &ImageSet, data: &Path, args: &CycleganArgs) -> Result<Vec<i64>> {
    let counts = set.counts();
    let pick = |flag: &str, name: &str| -> Result<Option<i64>> {
        if name == "auto" {
            return Ok(None);
        }
        class_index(&set.classes, name)
            .map(|i| Some(i as i64))
            .map_err(|e| e.context(format!("--{flag} {name}")))
    };
    let present: Vec<i64> = (0..counts.len() as i64)
        .filter(|&c| counts[c as usize] > 0)
        .collect();
    let to = match pick("to", &args.to)? {
        Some(c) => c,
        None => *present
            .iter()
            .min_by_key(|&&c| counts[c as usize])
            .ok_or_else(|| anyhow::anyhow!("{}: no class has images", data.display()))?,
    };
    let from = match pick("from", &args.from)? {
        Some(c) => c,
        None => *present
            .iter()
            .filter(|&&c| c != to)
            .max_by_key(|&&c| (counts[c as usize], std::cmp::Reverse(c)))
            .ok_or_else(|| {
                anyhow::anyhow!("{}: cyclegan needs two classes with images", data.display())
            })?,
    };
    if from == to {
        bail!(
            "--from and --to are both class {}: cyclegan translates one class into another",
            set.classes[from as usize]
        );
    }
    set.ensure_classes_have_images(
        data,
        [from as usize, to as usize],
        "cyclegan learns from images of both classes",
    )?;
    tracing::info!(
        "cyclegan: {} ({} images) → {} ({} images)",
        set.classes[from as usize],
        counts[from as usize],
        set.classes[to as usize],
        counts[to as usize]
    );
    Ok(vec![from, to])
}
