//! The stratified, seeded train/val/test split and the per-class caps on the train split.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rebalance_core::ImageSet;

use crate::prepare::Target;
use crate::sources::{Problem, Split};
use crate::Args;

/// A decoded image with its class and the split its source gave it.
pub struct Sample {
    pub origin: String,
    pub label: usize,
    pub source_split: Option<Split>,
    pub pixels: Vec<u8>,
}

/// Drop classes that ended up with no images (listing each as a problem) and renumber labels.
pub fn drop_empty_classes(
    names: Vec<String>,
    samples: Vec<Sample>,
    problems: &mut Vec<Problem>,
) -> (Vec<String>, Vec<Sample>) {
    let mut counts = vec![0usize; names.len()];
    for s in &samples {
        counts[s.label] += 1;
    }
    if counts.iter().all(|&c| c > 0) {
        return (names, samples);
    }
    let mut remap = vec![None; names.len()];
    let mut kept = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        if counts[i] == 0 {
            problems.push(Problem::new(
                format!("class `{name}`"),
                "empty class: no usable images; the class is left out",
            ));
        } else {
            remap[i] = Some(kept.len());
            kept.push(name);
        }
    }
    let samples = samples
        .into_iter()
        .map(|mut s| {
            s.label = remap[s.label].expect("non-empty class");
            s
        })
        .collect();
    (kept, samples)
}

#[derive(Debug)]
/// Where every sample goes: `Some(split)`, or `None` when a cap left it out.
pub struct Assignment {
    pub split: Vec<Option<Split>>,
    /// Splits made from the source's training images because it has none of its own.
    pub carved: Vec<Split>,
    /// Things the user should know (shortfalls, ignored options), shown in the summary.
    pub notes: Vec<String>,
}

/// Split stratified by class and seeded; then cap the train split per class.
pub fn assign(samples: &[Sample], names: &[String], args: &Args) -> Result<Assignment> {
    for (class, _) in &args.keep.0 {
        if !names.contains(class) {
            bail!(
                "--keep {class}=…: there is no class `{class}`; the classes are {}",
                names.join(", ")
            );
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.common.seed);
    let mut split = vec![None; samples.len()];
    let (f_train, f_val, _) = args.split;
    let use_source = !args.resplit && samples.iter().any(|s| s.source_split.is_some());
    let source_has = |split| use_source && samples.iter().any(|s| s.source_split == Some(split));
    let (source_has_val, source_has_test) = (source_has(Split::Val), source_has(Split::Test));
    let (carved, mut notes) = made_splits(args, use_source, source_has_val, source_has_test);
    for (c, name) in names.iter().enumerate() {
        let of_class: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].label == c)
            .collect();
        let (own, mut free): (Vec<usize>, Vec<usize>) = of_class
            .iter()
            .partition(|&&i| use_source && samples[i].source_split.is_some());
        // The source's own split; validation carved from its train part when it has none.
        let mut own_train = Vec::new();
        for &i in &own {
            let s = samples[i].source_split.expect("own split");
            split[i] = Some(s);
            if s == Split::Train {
                own_train.push(i);
            }
        }
        if (!source_has_test || !source_has_val) && !own_train.is_empty() {
            own_train.shuffle(&mut rng);
        }
        if !source_has_test && !own_train.is_empty() {
            let n_test = count(own_train.len(), args.test_n(), args.split.2);
            for i in own_train.drain(..n_test) {
                split[i] = Some(Split::Test);
            }
        }
        if !source_has_val && !own_train.is_empty() {
            let n_val = count(
                own_train.len(),
                args.val_n(),
                f_val / (f_train + f_val).max(1e-12),
            );
            for &i in &own_train[..n_val] {
                split[i] = Some(Split::Val);
            }
        }
        // Items without a split of their own: test first, then validation, the rest train.
        if !free.is_empty() {
            free.shuffle(&mut rng);
            split_free(&free, name, args, &mut split, &mut notes);
        }
        cap_train(&of_class, name, args, &mut split, &mut notes, &mut rng);
        if !of_class.iter().any(|&i| split[i] == Some(Split::Train)) {
            let msg = format!(
                "class `{name}` has no training image (none of its {} images is left in train); gan-train, augment and classify refuse it unless it is left out with --classes",
                of_class.len()
            );
            tracing::warn!("{msg}");
            notes.push(msg);
        }
    }
    Ok(Assignment {
        split,
        carved,
        notes,
    })
}

/// The splits ingest makes itself rather than take from the source, and the notes that say so.
fn made_splits(
    args: &Args,
    use_source: bool,
    source_has_val: bool,
    source_has_test: bool,
) -> (Vec<Split>, Vec<String>) {
    let per = |n: Option<usize>, f: f64| match n {
        Some(n) => format!("{n} per class"),
        None => format!("{:.0}%", 100.0 * f),
    };
    let (mut carved, mut notes) = (Vec::new(), Vec::new());
    if !use_source {
        // No split of its own (a folder of classes, a labels CSV), or --resplit.
        notes.push(format!(
            "{}: stratified test ({}) and validation ({}) splits were made from its images",
            if args.resplit {
                "--resplit"
            } else {
                "the source has no split of its own"
            },
            per(args.test_n(), args.split.2),
            per(args.val_n(), args.split.1),
        ));
        return (vec![Split::Test, Split::Val], notes);
    }
    if source_has_test && args.test_n().is_some() {
        notes.push("the source has its own split: --test-per-class was not used (pass --resplit to split anew)".into());
    }
    if !source_has_test {
        // A training-only source (GTSRB without Final_Test, an IDX or pickle train file
        // alone): without a test split every metric downstream would be meaningless.
        carved.push(Split::Test);
        notes.push(format!(
            "the source has no test split of its own: a stratified test split was carved from its training images ({})",
            per(args.test_n(), args.split.2)
        ));
    }
    if !source_has_val {
        carved.push(Split::Val);
    }
    (carved, notes)
}

/// Shuffled items of one class without a split of their own: test first, then validation, the
/// rest train.
fn split_free(
    free: &[usize],
    name: &str,
    args: &Args,
    split: &mut [Option<Split>],
    notes: &mut Vec<String>,
) {
    let (_, f_val, f_test) = args.split;
    let n = free.len();
    let n_test = count(n, args.test_n(), f_test);
    let n_val = count(n, args.val_n(), f_val).min(n - n_test);
    let asked = args.test_n().unwrap_or(0) + args.val_n().unwrap_or(0);
    if n_test + n_val == n && asked >= n {
        notes.push(format!(
            "class `{name}`: only {n} images for the {asked} asked for test + val; train gets none"
        ));
    }
    for (k, &i) in free.iter().enumerate() {
        split[i] = Some(if k < n_test {
            Split::Test
        } else if k < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        });
    }
}

/// Cap one class's train split (`--keep`, else `--max-per-class`): a seeded random subset is
/// kept.
fn cap_train(
    of_class: &[usize],
    name: &str,
    args: &Args,
    split: &mut [Option<Split>],
    notes: &mut Vec<String>,
    rng: &mut ChaCha8Rng,
) {
    let kept_by_name = args
        .keep
        .0
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, n)| *n);
    let Some(cap) = kept_by_name.or(args.max_n()) else {
        return;
    };
    let mut train: Vec<usize> = of_class
        .iter()
        .copied()
        .filter(|&i| split[i] == Some(Split::Train))
        .collect();
    if train.len() > cap {
        train.shuffle(rng);
        for &i in &train[cap..] {
            split[i] = None;
        }
    } else if kept_by_name.is_some() && train.len() < cap {
        notes.push(format!(
            "class `{name}`: --keep {cap} but only {} train images",
            train.len()
        ));
    }
}

/// `per_class` when given, else the fraction `frac` of `n`, at least 1 when `frac > 0` and
/// the class has 3 or more images (so a small class still gets a test and a val image and
/// keeps one for training); at most `n`.
fn count(n: usize, per_class: Option<usize>, frac: f64) -> usize {
    let by_fraction = || {
        let k = (n as f64 * frac).round() as usize;
        if frac > 0.0 && n >= 3 {
            k.max(1)
        } else {
            k
        }
    };
    per_class.unwrap_or_else(by_fraction).min(n)
}

/// Build the train, val and test image sets (in source order within each split).
pub fn build_sets(
    samples: &[Sample],
    assignment: &Assignment,
    names: &[String],
    t: &Target,
) -> [ImageSet; 3] {
    let mut sets = [(); 3].map(|_| ImageSet::empty(names.to_vec(), t.channels, t.height, t.width));
    for (s, split) in samples.iter().zip(&assignment.split) {
        if let Some(split) = split {
            sets[split.index()].push(&s.pixels, s.label as i64);
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn samples(per_class: &[usize]) -> Vec<Sample> {
        per_class
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| {
                (0..n).map(move |i| Sample {
                    origin: format!("{c}/{i}"),
                    label: c,
                    source_split: None,
                    pixels: vec![i as u8],
                })
            })
            .collect()
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["ingest", "x"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    fn counts(s: &[Sample], a: &Assignment, k: usize) -> [Vec<usize>; 3] {
        let mut out = [vec![0; k], vec![0; k], vec![0; k]];
        for (x, sp) in s.iter().zip(&a.split) {
            if let Some(sp) = sp {
                out[sp.index()][x.label] += 1;
            }
        }
        out
    }

    #[test]
    fn stratified_fractions_per_class() {
        let s = samples(&[100, 50, 20]);
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let a = assign(&s, &names, &args(&["--split", "0.6,0.2,0.2"])).unwrap();
        let [tr, va, te] = counts(&s, &a, 3);
        assert_eq!(te, vec![20, 10, 4]);
        assert_eq!(va, vec![20, 10, 4]);
        assert_eq!(tr, vec![60, 30, 12]);
    }

    #[test]
    fn per_class_counts_caps_and_seed() {
        let s = samples(&[500, 500, 500]);
        let names: Vec<String> = ["0", "1", "2"].map(String::from).to_vec();
        let argv = [
            "--test-per-class",
            "100",
            "--val-per-class",
            "50",
            "--max-per-class",
            "300",
            "--keep",
            "1=10",
        ];
        let a = assign(&s, &names, &args(&argv)).unwrap();
        let [tr, va, te] = counts(&s, &a, 3);
        assert_eq!(te, vec![100; 3]);
        assert_eq!(va, vec![50; 3]);
        assert_eq!(tr, vec![300, 10, 300]);
        // Same seed, same assignment; another seed, another one.
        let b = assign(&s, &names, &args(&argv)).unwrap();
        assert_eq!(a.split, b.split);
        let mut other = argv.to_vec();
        other.extend(["--seed", "7"]);
        let c = assign(&s, &names, &args(&other)).unwrap();
        assert_ne!(a.split, c.split);
        // The built sets are disjoint: no image of test or val is also in train (every
        // sample's pixels are unique here), and together they hold every sample not capped.
        let unique: Vec<Sample> = s
            .iter()
            .enumerate()
            .map(|(i, x)| Sample {
                origin: x.origin.clone(),
                label: x.label,
                source_split: None,
                pixels: (i as u16).to_le_bytes().to_vec(),
            })
            .collect();
        let t = Target {
            channels: 1,
            height: 1,
            width: 2,
            resize: false,
        };
        let sets = build_sets(&unique, &a, &names, &t);
        let images = |k: usize| -> std::collections::BTreeSet<Vec<u8>> {
            (0..sets[k].len())
                .map(|i| sets[k].image(i).to_vec())
                .collect()
        };
        let (tr, va, te) = (images(0), images(1), images(2));
        assert_eq!((tr.len(), va.len(), te.len()), (610, 150, 300));
        assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    }

    #[test]
    fn a_small_class_still_gives_test_and_val_an_image() {
        // 10% of 3 or 5 images rounds to 0: every class of 3 or more gets 1 test and 1 val.
        let s = samples(&[3, 5, 2, 40]);
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let a = assign(&s, &names, &args(&[])).unwrap();
        let [tr, va, te] = counts(&s, &a, 4);
        assert_eq!(te, vec![1, 1, 0, 4]);
        assert_eq!(va, vec![1, 1, 0, 4]);
        assert_eq!(tr, vec![1, 3, 2, 32]);
        assert_eq!(a.carved, [Split::Test, Split::Val]);
    }

    #[test]
    fn unknown_keep_class_is_named() {
        let s = samples(&[5]);
        let err = assign(&s, &["a".into()], &args(&["--keep", "z=1"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no class `z`") && err.contains("classes are a"),
            "{err}"
        );
    }

    #[test]
    fn source_split_is_kept_and_val_carved_from_train() {
        let mut s = samples(&[40]);
        for (i, x) in s.iter_mut().enumerate() {
            x.source_split = Some(if i < 30 { Split::Train } else { Split::Test });
        }
        let a = assign(&s, &["a".into()], &args(&["--val-per-class", "5"])).unwrap();
        let [tr, va, te] = counts(&s, &a, 1);
        assert_eq!((tr[0], va[0], te[0]), (25, 5, 10));
        for (x, sp) in s.iter().zip(&a.split) {
            if x.source_split == Some(Split::Test) {
                assert_eq!(
                    *sp,
                    Some(Split::Test),
                    "the source's test split is never moved"
                );
            }
        }
    }

    #[test]
    fn empty_classes_are_dropped_and_listed() {
        let s = samples(&[3, 0, 2]);
        let mut problems = Vec::new();
        let (names, s) =
            drop_empty_classes(["a", "b", "c"].map(String::from).to_vec(), s, &mut problems);
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(
            s.iter().map(|x| x.label).collect::<Vec<_>>(),
            vec![0, 0, 0, 1, 1]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].file.contains("`b`") && problems[0].reason.contains("empty class"));
    }
}
