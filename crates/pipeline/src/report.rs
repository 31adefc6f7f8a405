//! `pipeline report`: one self-contained HTML page (images inlined as data URIs) from the stage
//! outputs of a run, and the verdict in one sentence.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rebalance_core::contract::augment::Composition;
use rebalance_core::contract::classify::{ClassifierMetrics, RecipeSelection};
use rebalance_core::contract::dataset::DatasetInfo;
use rebalance_core::contract::filter::{AcceptanceRow, ConfidenceGate, FilterMetrics};
use rebalance_core::contract::gan::{GanInfo, GanMetrics, PerClassGans};
use rebalance_core::contract::layout::{self, file, Layout};
use rebalance_core::contract::{read_csv, read_json};
use rebalance_core::stats::paired;
use rebalance_core::Manifest;

pub struct ReportInput {
    pub artifacts: PathBuf,
    pub rounds: u32,
    /// The parameter this run chose with `-P <param>=auto`, whose choice the verdict then
    /// names; `None` for every other run, so an earlier run's choice never reaches it.
    pub auto: Option<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `<img>` with the file inlined; a note when the file is missing.
fn img(path: &Path, alt: &str) -> String {
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "image/png",
    };
    match std::fs::read(path) {
        Ok(bytes) => format!(
            "<figure><img alt=\"{}\" src=\"data:{mime};base64,{}\"><figcaption>{}</figcaption></figure>",
            esc(alt),
            base64::engine::general_purpose::STANDARD.encode(bytes),
            esc(alt)
        ),
        Err(_) => format!("<p class=\"missing\">{} — not found ({})</p>", esc(alt), esc(&path.display().to_string())),
    }
}

fn metric(m: &ClassifierMetrics, key: &str) -> Option<(f64, f64)> {
    m.test.get(key)
}

fn fmt_ms(v: Option<(f64, f64)>, n: usize) -> String {
    match v {
        Some((m, s)) if n > 1 => format!("{m:.3} ± {s:.3}"),
        Some((m, _)) => format!("{m:.3}"),
        None => "—".into(),
    }
}

/// "—" for a missing value.
fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".into())
}

/// A classifier the report compares: its role (the layout folder of its stage), label, metrics
/// and folder.
struct Classifier {
    role: &'static str,
    label: String,
    metrics: ClassifierMetrics,
    dir: PathBuf,
}

impl Classifier {
    fn seeds(&self) -> usize {
        self.metrics.seeds.len().max(1)
    }
}

/// A class the filter kept no synthetic image of, filled by classical transforms instead
/// (`classical_fallback` in `composition.json`), with its filter acceptance when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub class: String,
    /// (kept, generated) from `filtered/acceptance.csv`.
    pub acceptance: Option<(usize, usize)>,
}

/// The bar the verdict holds the augmented classifier to: the best cheap alternative (the
/// judge's chosen recipe, `judge/recipes.json`), or the judge as it is when it chose nothing.
#[derive(Debug, Clone, Copy)]
pub struct Bar<'a> {
    pub metrics: &'a ClassifierMetrics,
    /// The chosen recipe's name and description, and how many recipes it was chosen from;
    /// `None` for a judge without `recipes.json`.
    pub chosen: Option<(&'a str, &'a str, usize)>,
}

/// What the verdict compares.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerdictInput<'a> {
    /// The classifier on the real training split alone.
    pub baseline: Option<&'a ClassifierMetrics>,
    /// The classifier on the augmented set.
    pub augmented: Option<&'a ClassifierMetrics>,
    /// The best cheap alternative.
    pub bar: Option<Bar<'a>>,
    /// What augment actually added (`composition.json`); without it only the strategy name is
    /// known.
    pub composition: Option<&'a Composition>,
    pub strategy: &'a str,
    pub rare: &'a [String],
    pub fallbacks: &'a [Fallback],
}

/// Per-seed macro-F1 on the real test split.
fn per_seed_f1(m: &ClassifierMetrics) -> std::collections::BTreeMap<u64, f64> {
    m.runs.iter().map(|r| (r.seed, r.test.macro_f1)).collect()
}

/// "435 synthetic and 435 classical images": the images augment added, by kind.
fn added_images(c: &Composition) -> String {
    let t = &c.totals;
    let parts: Vec<String> = [
        (t.synthetic, "synthetic"),
        (t.classical, "classical"),
        (t.repeated, "repeated real"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, k)| format!("{n} {k}"))
    .collect();
    match parts.len() {
        0 => "no image".into(),
        1 => format!("{} images", parts[0]),
        _ => format!(
            "{} and {} images",
            parts[..parts.len() - 1].join(", "),
            parts[parts.len() - 1]
        ),
    }
}

/// The significance level the verdict credits a difference at.
const ALPHA: f64 = 0.05;

/// The verdict: what the augmented set added and what that did to macro-F1 and the rare
/// classes' recall; how it compares with the best cheap alternative (credited to synthetic
/// images only when the set holds some, and only with a difference a paired test over seeds
/// can tell from seed noise); which classes received synthetic images and which the filter
/// left empty; and how many seeds stand behind it.
pub fn verdict(v: &VerdictInput) -> String {
    let (Some(b), Some(a)) = (v.baseline, v.augmented) else {
        return "No verdict: the baseline (real data only) or the augmented classifier has no metrics.json.".into();
    };
    let (Some((bf, _)), Some((af, _))) = (metric(b, "macro_f1"), metric(a, "macro_f1")) else {
        return "No verdict: macro-F1 missing from metrics.json.".into();
    };
    let mut s = against_real(v, b, a, bf, af);
    if let Some(bar) = v.bar {
        s.push_str(&against_bar(v, bar, a, af));
    }
    s.push_str(&received(v));
    for f in v.fallbacks {
        let acc = f
            .acceptance
            .map(|(k, g)| format!(" (acceptance {k}/{g})"))
            .unwrap_or_default();
        let _ = write!(
            s,
            " The filter kept no synthetic image of class {c}{acc}; class {c} was filled by classical augmentation.",
            c = f.class
        );
    }
    let (_, _, n, p) = paired(&per_seed_f1(b), &per_seed_f1(a));
    if n < 2 {
        s.push_str(
            " Measured on the real test split with 1 seed, so no significance test was possible; -P seeds=3 trains 3 seeds of the classifier and of every cheap recipe and adds paired t-tests.",
        );
    } else {
        let _ = write!(
            s,
            " Measured on the real test split over {n} seeds: paired t-test against real data only p = {:.3}.",
            p.unwrap_or(f64::NAN)
        );
    }
    s
}

/// "Adding … (strategy) raised macro-F1 from 0.828 to 0.929; recall of class 2 from … ."
fn against_real(
    v: &VerdictInput,
    b: &ClassifierMetrics,
    a: &ClassifierMetrics,
    bf: f64,
    af: f64,
) -> String {
    let what = match v.composition {
        Some(c) if c.totals.synthetic == 0 => format!(
            "Adding {} (no synthetic image; {})",
            added_images(c),
            c.strategy
        ),
        Some(c) => format!("Adding {} ({})", added_images(c), c.strategy),
        None => "The augmented set (it has no composition.json, so what was added is unknown)"
            .to_string(),
    };
    let mut s = if af > bf + 0.0005 {
        format!("{what} raised macro-F1 from {bf:.3} to {af:.3}")
    } else if af < bf - 0.0005 {
        format!("{what} lowered macro-F1 from {bf:.3} to {af:.3}")
    } else {
        format!("{what} left macro-F1 unchanged at {af:.3}")
    };
    let recalls: Vec<String> = v
        .rare
        .iter()
        .filter_map(|c| {
            let k = format!("recall/{c}");
            Some(format!(
                "class {c} from {:.3} to {:.3}",
                metric(b, &k)?.0,
                metric(a, &k)?.0
            ))
        })
        .collect();
    if !recalls.is_empty() {
        let _ = write!(s, "; recall of {}", recalls.join(", "));
    }
    s.push('.');
    s
}

/// " The best cheap alternative, … reached 0.952; the synthetic images …."
fn against_bar(v: &VerdictInput, bar: Bar, a: &ClassifierMetrics, af: f64) -> String {
    let Some((cf, _)) = metric(bar.metrics, "macro_f1") else {
        return String::new();
    };
    let name = match bar.chosen {
        Some((name, about, of)) => format!(
            "The best cheap alternative, {about} (`{name}`, chosen on validation from {of} recipe{}),",
            if of == 1 { "" } else { "s" }
        ),
        None => "The judge (classical augmentation; it chose no recipe)".to_string(),
    };
    let d = af - cf;
    let (_, _, n, p) = paired(&per_seed_f1(bar.metrics), &per_seed_f1(a));
    let synthetic = v.composition.map(|c| c.totals.synthetic);
    let test = |p: f64| format!("paired t-test over {n} seeds, p = {p:.3}");
    let cmp = match (synthetic, p) {
        (None, _) => format!("the augmented set is {d:+.3} against it"),
        (Some(0), _) => format!(
            "this set holds no synthetic image, so its {d:+.3} against it says nothing about synthetic data"
        ),
        (_, Some(p)) if n >= 2 && p < ALPHA && d > 0.0 => {
            format!("the synthetic images beat it by {d:+.3} ({})", test(p))
        }
        (_, Some(p)) if n >= 2 && p < ALPHA => {
            format!("the synthetic images did not beat it: {d:+.3} ({})", test(p))
        }
        (_, Some(p)) if n >= 2 => format!(
            "the synthetic images' {d:+.3} against it cannot be told from seed noise ({})",
            test(p)
        ),
        _ => format!(
            "the synthetic images are {d:+.3} against it, which one seed cannot tell from seed noise (no paired test is possible)"
        ),
    };
    format!(" {name} reached {cf:.3}; {cmp}.")
}

/// " Synthetic images went into class(es) …." from the composition.
fn received(v: &VerdictInput) -> String {
    let Some(c) = v.composition else {
        return String::new();
    };
    let got: Vec<&str> = c
        .classes
        .iter()
        .filter(|(_, k)| k.synthetic > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    match got.len() {
        0 => String::new(),
        1 => format!(" Synthetic images went into class {} only.", got[0]),
        _ => format!(" Synthetic images went into classes {}.", got.join(", ")),
    }
}

fn confusion_table(path: &Path, title: &str) -> String {
    let Ok(mut rdr) = csv::Reader::from_path(path) else {
        return format!(
            "<p class=\"missing\">{} — no {}</p>",
            esc(title),
            esc(&path.display().to_string())
        );
    };
    let cell = |c: &str| rebalance_core::contract::csv_uncell(c).to_string();
    let headers: Vec<String> = rdr
        .headers()
        .map(|h| h.iter().map(cell).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = rdr
        .records()
        .flatten()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    let mut h = format!(
        "<div class=\"cm\"><h4>{}</h4><table class=\"confusion\"><tr>",
        esc(title)
    );
    for c in &headers {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for row in &rows {
        let total: f64 = row[1..].iter().filter_map(|v| v.parse::<f64>().ok()).sum();
        h.push_str("<tr>");
        for (i, v) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(h, "<th>{}</th>", esc(v));
                continue;
            }
            let share = v.parse::<f64>().unwrap_or(0.0) / total.max(1.0);
            let diag = headers.get(i).map(|c| c == &row[0]).unwrap_or(false);
            let (r, g, b) = if diag { (46, 125, 50) } else { (198, 40, 40) };
            let alpha = if share > 0.0 {
                0.08 + 0.92 * share
            } else {
                0.0
            };
            let _ = write!(
                h,
                "<td style=\"background:rgba({r},{g},{b},{alpha:.2})\">{}</td>",
                esc(v)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

fn html_table(
    headers: &[String],
    rows: &[Vec<String>],
    highlight: &dyn Fn(&[String]) -> bool,
) -> String {
    let mut h = String::from("<table><tr>");
    for c in headers {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in rows {
        let class = if highlight(r) { " class=\"rare\"" } else { "" };
        let _ = write!(h, "<tr{class}>");
        for v in r {
            let _ = write!(h, "<td>{}</td>", esc(v));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h
}

pub struct Report {
    pub html: String,
    pub verdict: String,
}

/// Everything the report reads, typed; a file that is missing or unreadable is `None`.
struct Inputs {
    layout: Layout,
    rounds: u32,
    dataset: Option<DatasetInfo>,
    rare: Vec<String>,
    composition: Option<Composition>,
    strategy: String,
    classifiers: Vec<Classifier>,
    /// The judge's choice of the bar (`judge/recipes.json`).
    recipes: Option<RecipeSelection>,
}

impl Inputs {
    fn load(input: &ReportInput) -> Self {
        let layout = Layout::new(&input.artifacts);
        let dataset = Manifest::read(&layout.dir(layout::DATASET))
            .ok()
            .and_then(|m| m.extra_as::<DatasetInfo>().ok());
        let composition: Option<Composition> =
            read_json(&layout.file(layout::AUGMENTED, file::COMPOSITION)).ok();
        let strategy = composition
            .as_ref()
            .map(|c| c.strategy.clone())
            .unwrap_or_else(|| "augmented".into());
        let recipes: Option<RecipeSelection> =
            read_json(&layout.file(layout::JUDGE, file::RECIPES)).ok();
        let bar_label = match recipes.as_ref().and_then(|r| r.chosen()) {
            Some(c) => format!("the bar: {} (the judge)", c.name),
            None => "classical augmentation (the judge)".to_string(),
        };
        // Real data only: the judge's `real` candidate when it trained one (same seeds as the
        // bar), else the `baseline` stage's.
        let real = [
            layout.dir(layout::JUDGE).join("recipes").join("real"),
            layout.dir(layout::BASELINE),
        ]
        .into_iter()
        .find(|d| d.join(file::METRICS).is_file())
        .unwrap_or_else(|| layout.dir(layout::BASELINE));
        let classifiers = [
            (layout::BASELINE, real, "real data only".to_string()),
            (layout::JUDGE, layout.dir(layout::JUDGE), bar_label),
            (
                layout::CLASSIFY,
                layout.dir(layout::CLASSIFY),
                strategy.clone(),
            ),
        ]
        .into_iter()
        .filter_map(|(role, dir, label)| {
            let metrics = read_json(&dir.join(file::METRICS)).ok()?;
            Some(Classifier {
                role,
                label,
                metrics,
                dir,
            })
        })
        .collect();
        Self {
            rare: dataset
                .as_ref()
                .map(|d| d.rare_classes.clone())
                .unwrap_or_default(),
            layout,
            rounds: input.rounds,
            dataset,
            composition,
            strategy,
            classifiers,
            recipes,
        }
    }

    /// The classifier of a role (`layout::BASELINE`, `JUDGE` or `CLASSIFY`).
    fn classifier(&self, role: &str) -> Option<&ClassifierMetrics> {
        self.classifiers
            .iter()
            .find(|c| c.role == role)
            .map(|c| &c.metrics)
    }

    /// The classes augment filled classically because the filter kept none of them.
    fn fallbacks(&self) -> Vec<Fallback> {
        let Some(c) = &self.composition else {
            return Vec::new();
        };
        let acceptance: Vec<AcceptanceRow> =
            read_csv(&self.layout.file(layout::FILTERED, file::ACCEPTANCE)).unwrap_or_default();
        c.classes
            .iter()
            .filter(|(_, k)| k.classical_fallback)
            .map(|(name, _)| Fallback {
                class: name.clone(),
                acceptance: acceptance
                    .iter()
                    .find(|r| &r.class == name)
                    .map(|r| (r.kept, r.generated)),
            })
            .collect()
    }

    fn is_rare(&self, c: &str) -> bool {
        self.rare.iter().any(|r| r == c)
    }

    fn img(&self, stage: &str, name: &str, alt: &str) -> String {
        img(&self.layout.file(stage, name), alt)
    }
}

/// The verdict, with the last refinement round's macro-F1 when there are rounds.
fn full_verdict(inp: &Inputs) -> String {
    let fallbacks = inp.fallbacks();
    let bar = inp.classifier(layout::JUDGE).map(|metrics| Bar {
        metrics,
        chosen: inp.recipes.as_ref().and_then(|r| {
            r.chosen()
                .map(|c| (c.name.as_str(), c.about.as_str(), r.candidates.len()))
        }),
    });
    let mut v = verdict(&VerdictInput {
        baseline: inp.classifier(layout::BASELINE),
        augmented: inp.classifier(layout::CLASSIFY),
        bar,
        composition: inp.composition.as_ref(),
        strategy: &inp.strategy,
        rare: &inp.rare,
        fallbacks: &fallbacks,
    });
    if inp.rounds > 1 {
        let last: Option<ClassifierMetrics> = read_json(
            &inp.layout
                .round(inp.rounds)
                .file(layout::CLASSIFY, file::METRICS),
        )
        .ok();
        let first = inp
            .classifier(layout::CLASSIFY)
            .and_then(|m| metric(m, "macro_f1"));
        match (last.as_ref().and_then(|m| metric(m, "macro_f1")), first) {
            (Some((l, _)), Some((f, _))) => {
                let _ = write!(
                    v,
                    " After {} rounds of refinement, macro-F1 was {l:.3} (round 1: {f:.3}).",
                    inp.rounds
                );
            }
            _ => {
                let _ = write!(
                    v,
                    " Refinement round {} has no classifier metrics.",
                    inp.rounds
                );
            }
        }
    }
    v
}

pub fn build(input: &ReportInput) -> Result<Report> {
    let inp = Inputs::load(input);
    let chose = input
        .auto
        .as_deref()
        .and_then(|param| auto_choice(&input.artifacts, param, &inp.strategy));
    let verdict = match chose {
        Some(c) => format!("{c} {}", full_verdict(&inp)),
        None => full_verdict(&inp),
    };
    let mut body = format!(
        "<h1>rebalance report</h1><p class=\"verdict\">{}</p>",
        esc(&verdict)
    );
    body.push_str(&dataset_section(&inp));
    body.push_str(&gan_section(&inp));
    body.push_str(&filter_section(&inp));
    body.push_str(&recipes_section(&inp));
    body.push_str(&classifiers_section(&inp));
    if inp.rounds > 1 {
        body.push_str(&rounds_section(&inp));
    }
    body.push_str(&sweeps_section(&input.artifacts));
    body.push_str(&stages_section(&inp));
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>rebalance report</title><style>{CSS}</style></head>\n<body>\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    Ok(Report { html, verdict })
}

/// Class counts per split and the augmented set's composition, with the count charts and
/// sample grids.
fn dataset_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>Dataset</h2>");
    match &inp.dataset {
        Some(d) => {
            let s = d.image_shape;
            let rare = if inp.rare.is_empty() {
                "none".to_string()
            } else {
                inp.rare.join(", ")
            };
            let _ = write!(
                h,
                "<p>{} classes, images {}×{}×{}; rare classes: {rare}.</p>",
                d.classes.len(),
                s.channels,
                s.height,
                s.width
            );
            let headers = strings(&[
                "class",
                "train (real)",
                "val",
                "test",
                "after augment",
                "real",
                "synthetic",
                "classical",
                "repeated",
            ]);
            let rows: Vec<Vec<String>> = d.classes.iter().map(|c| dataset_row(inp, d, c)).collect();
            h.push_str(&html_table(&headers, &rows, &|r| inp.is_rare(&r[0])));
        }
        None => h.push_str("<p class=\"missing\">No dataset/manifest.json.</p>"),
    }
    for pair in [
        [
            (
                layout::DATASET,
                "class_counts.svg",
                "class counts before augmentation",
            ),
            (
                layout::AUGMENTED,
                "class_counts.svg",
                "class counts after augmentation",
            ),
        ],
        [
            (
                layout::DATASET,
                "samples.png",
                "real training images per class",
            ),
            (
                layout::AUGMENTED,
                "samples.png",
                "augmented training images",
            ),
        ],
    ] {
        h.push_str("<div class=\"row\">");
        for (stage, name, label) in pair {
            h.push_str(&inp.img(stage, name, label));
        }
        h.push_str("</div>");
    }
    h
}

fn dataset_row(inp: &Inputs, d: &DatasetInfo, c: &str) -> Vec<String> {
    let n =
        |m: &std::collections::BTreeMap<String, usize>| or_dash(m.get(c).map(|v| v.to_string()));
    let comp = inp.composition.as_ref().and_then(|m| m.classes.get(c));
    let part = |f: fn(&rebalance_core::contract::augment::ClassComposition) -> usize| {
        or_dash(comp.map(|v| f(v).to_string()))
    };
    vec![
        c.to_string(),
        n(&d.counts.train),
        n(&d.counts.val),
        n(&d.counts.test),
        part(|v| v.total()),
        part(|v| v.real),
        part(|v| v.synthetic),
        part(|v| v.classical),
        part(|v| v.repeated),
    ]
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The GAN's run, loss chart and sample grids across training.
fn gan_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>GAN</h2>");
    let dir = inp.layout.dir(layout::GAN);
    if let Ok(gans) = read_json::<PerClassGans>(&dir.join(file::PER_CLASS)) {
        // `--per-class-gans`: one dcgan per class, each with its losses and last grid.
        let _ = write!(
            h,
            "<p>One {} per class ({}), each trained on that class alone:</p><div class=\"row grids\">",
            esc(&gans.model.to_string()),
            esc(&gans.classes.join(", "))
        );
        for c in &gans.classes {
            let sub = dir.join("classes").join(c);
            h.push_str(&img(&sub.join("losses.svg"), &format!("class {c}: losses")));
            let last = std::fs::read_dir(sub.join("samples"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("step_"))
                        })
                        .max()
                })
                .ok()
                .flatten();
            if let Some(g) = last {
                h.push_str(&img(&g, &format!("class {c}: last samples")));
            }
        }
        h.push_str("</div>");
        return h;
    }
    let gan = Manifest::read(&inp.layout.dir(layout::GAN)).ok();
    let info = gan.as_ref().and_then(|m| m.extra_as::<GanInfo>().ok());
    let metrics = gan.as_ref().and_then(|m| m.metrics_as::<GanMetrics>().ok());
    if let (Some(info), Some(m)) = (info, metrics) {
        let last = m.last.unwrap_or_default();
        let _ = write!(
            h,
            "<p>{} trained {} steps in {:.0} s ({} images/s); final losses: D real {:.3}, D fake {:.3}, G {:.3}.</p>",
            esc(&info.config.model.to_string()),
            m.steps,
            m.train_s,
            or_dash(m.images_per_s.map(|v| v.to_string())),
            last.d_loss_real,
            last.d_loss_fake,
            last.g_loss,
        );
    }
    h.push_str(&inp.img(layout::GAN, "losses.svg", "GAN losses"));
    let mut grids: Vec<PathBuf> = std::fs::read_dir(inp.layout.dir(layout::GAN).join("samples"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    grids.retain(|p| p.extension().map(|e| e == "png").unwrap_or(false));
    grids.sort();
    h.push_str("<p>Samples per class (one row per class) across training, and real images:</p><div class=\"row grids\">");
    for g in &grids {
        let stem = g
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let label = match stem.strip_prefix("step_") {
            Some(n) => format!("step {}", n.trim_start_matches('0')),
            None => stem.clone(),
        };
        h.push_str(&img(g, &label));
    }
    h.push_str("</div>");
    h
}

/// `a / b` when both are known and `b` > 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_default()
}

/// The gate's acceptance and the judge-space quality per class, with the accepted and rejected
/// grids.
fn filter_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>Filter</h2>");
    if let Ok(m) = Manifest::read(&inp.layout.dir(layout::FILTERED)) {
        let gate = m.params_as::<ConfidenceGate>();
        if let (Ok(f), Ok(gate)) = (m.metrics_as::<FilterMetrics>(), gate) {
            let _ = write!(
                h,
                "<p>Kept {} of {} generated images ({:.1}%) at threshold {}.</p>",
                f.n_kept,
                f.n_generated,
                100.0 * f.acceptance,
                // As the manifest writes it (`0.0`, not `0`).
                serde_json::json!(gate.threshold)
            );
        }
    }
    let path = inp.layout.file(layout::FILTERED, file::ACCEPTANCE);
    match read_csv::<AcceptanceRow>(&path) {
        Ok(rows) if path.is_file() => {
            // Short headers, so that the table fits the page; the note below explains them.
            let headers = strings(&[
                "class",
                "generated",
                "kept",
                "acceptance",
                "confidence",
                "FD generated",
                "FD kept",
                "FD floor",
                "near-copies",
                "diversity kept",
                "diversity real",
                "diversity gen / real",
                "FD kept / floor",
            ]);
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.class.clone(),
                        r.generated.to_string(),
                        r.kept.to_string(),
                        format!("{:.4}", r.acceptance),
                        format!("{:.4}", r.mean_confidence),
                        fmt_opt(r.fd_generated, 3),
                        fmt_opt(r.fd_kept, 3),
                        fmt_opt(r.fd_real_train, 3),
                        r.near_copies.to_string(),
                        fmt_opt(r.diversity_kept, 4),
                        fmt_opt(r.diversity_real, 4),
                        fmt_opt(ratio(r.diversity_generated, r.diversity_real), 2),
                        fmt_opt(ratio(r.fd_kept, r.fd_real_train), 1),
                    ]
                })
                .collect();
            h.push_str(&html_table(&headers, &rows, &|r| inp.is_rare(&r[0])));
            h.push_str("<p class=\"note\">FD: Fréchet distance in the judge's feature space to the real validation images (FD floor: the real training images of the class; FD kept / floor near 1 is as close to real as the class's own training images). Confidence: the judge's mean probability of the intended class. Diversity: mean pairwise distance within the class; a generated / real ratio far below 1 is a generator replaying a few styles. The columns are those of filtered/acceptance.csv.</p>");
        }
        _ => h.push_str("<p class=\"missing\">No filtered/acceptance.csv.</p>"),
    }
    h.push_str("<div class=\"row\">");
    h.push_str(&inp.img(layout::FILTERED, "accepted.png", "accepted images"));
    h.push_str(&inp.img(layout::FILTERED, "rejected.png", "rejected images"));
    h.push_str("</div>");
    h
}

/// The bar's candidates: every cheap recipe's validation and test numbers, the chosen one marked.
fn recipes_section(inp: &Inputs) -> String {
    let Some(sel) = &inp.recipes else {
        return String::new();
    };
    let mut h = format!(
        "<h2>The bar: the cheap alternatives</h2><p>Each recipe trains the same classifier on real images only (no synthetic image), with the same seeds. The one with the best {} is the bar and the judge; the test columns are reported, never chosen by.</p>",
        esc(&sel.by)
    );
    let headers = strings(&[
        "recipe",
        "what it is",
        "how classify trains",
        "val macro-F1",
        "test macro-F1",
        "test mean rare recall",
    ]);
    let rows: Vec<Vec<String>> = sel
        .candidates
        .iter()
        .map(|c| {
            let n = c.seeds.len();
            let m: Option<ClassifierMetrics> = read_json(
                &inp.layout
                    .dir(layout::JUDGE)
                    .join("recipes")
                    .join(&c.name)
                    .join(file::METRICS),
            )
            .ok();
            let name = if c.name == sel.chosen {
                format!("{} (chosen)", c.name)
            } else {
                c.name.clone()
            };
            vec![
                name,
                c.about.clone(),
                c.recipe.describe(),
                fmt_ms(c.val.get("macro_f1"), n),
                fmt_ms(c.test.get("macro_f1"), n),
                or_dash(
                    m.and_then(|m| m.mean_rare_recall(&inp.rare))
                        .map(|v| format!("{v:.3}")),
                ),
            ]
        })
        .collect();
    h.push_str(&html_table(&headers, &rows, &|r| {
        r[0].ends_with("(chosen)")
    }));
    h
}

/// The classifiers side by side on the real test split, their confusion matrices and curves.
fn classifiers_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>Classifiers on the real test split</h2>");
    let clfs = &inp.classifiers;
    if clfs.is_empty() {
        h.push_str("<p class=\"missing\">No classifier metrics.</p>");
        return h;
    }
    let mut headers = vec!["metric".to_string()];
    headers.extend(clfs.iter().map(|c| {
        let n = c.seeds();
        format!("{} ({n} seed{})", c.label, if n == 1 { "" } else { "s" })
    }));
    let mut rows = Vec::new();
    let keys: Vec<(String, String)> = [
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("macro_f1", "macro-F1"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .chain(
        inp.rare
            .iter()
            .map(|c| (format!("recall/{c}"), format!("recall of class {c}"))),
    )
    .collect();
    for (key, name) in &keys {
        let mut r = vec![name.clone()];
        r.extend(
            clfs.iter()
                .map(|c| fmt_ms(metric(&c.metrics, key), c.seeds())),
        );
        rows.push(r);
    }
    if !inp.rare.is_empty() {
        let mut r = vec!["mean rare recall".to_string()];
        r.extend(clfs.iter().map(|c| {
            or_dash(
                c.metrics
                    .mean_rare_recall(&inp.rare)
                    .map(|v| format!("{v:.3}")),
            )
        }));
        rows.push(r);
    }
    h.push_str(&html_table(&headers, &rows, &|_| false));
    h.push_str("<div class=\"row\">");
    for c in clfs {
        h.push_str(&confusion_table(
            &c.dir.join("confusion.csv"),
            &format!("confusion: {} (rows true, columns predicted)", c.label),
        ));
    }
    h.push_str("</div><div class=\"row\">");
    for c in clfs {
        h.push_str(&img(
            &c.dir.join("curves.svg"),
            &format!("training curves: {}", c.label),
        ));
    }
    h.push_str("</div>");
    h
}

/// "strategy=auto chose classical on validation macro-F1 (0.951 ± 0.003; next best …)." when
/// the `param=auto` sweep of this run chose the strategy the augmented set was built with.
fn auto_choice(artifacts: &Path, param: &str, strategy: &str) -> Option<String> {
    let (_, s) = rebalance_core::contract::runner::SweepResult::all(artifacts)
        .into_iter()
        .find(|(_, s)| {
            s.param == param
                && s.param.rsplit('.').next() == Some("strategy")
                && s.choice.as_ref().is_some_and(|c| c.value == strategy)
        })?;
    let chosen = &s.choice.as_ref()?.value;
    let f1 = |r: &rebalance_core::contract::runner::SweepRow| r.val.get("macro_f1").copied();
    let mut ranked: Vec<_> = s
        .rows
        .iter()
        .filter_map(|r| f1(r).map(|v| (r, v)))
        .collect();
    ranked.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
    let (_, best) = ranked.iter().find(|(r, _)| &r.value == chosen)?;
    let next = ranked
        .iter()
        .find(|(r, _)| &r.value != chosen)
        .map(|(r, v)| format!("; next best {} {:.4} ± {:.4}", r.value, v.mean, v.std))
        .unwrap_or_default();
    Some(format!(
        "strategy=auto chose {chosen} of {} on validation macro-F1 ({:.4} ± {:.4}{next}).",
        s.rows.len(),
        best.mean,
        best.std
    ))
}

/// Each `pipeline sweep` under `<artifacts>/sweeps`: its table and the plot of each metric.
fn sweeps_section(artifacts: &Path) -> String {
    let sweeps = rebalance_core::contract::runner::SweepResult::all(artifacts);
    if sweeps.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2>Sweeps</h2>");
    for (dir, s) in sweeps {
        let fixed = if s.fixed.is_empty() {
            "defaults otherwise".to_string()
        } else {
            s.fixed
                .iter()
                .map(|(k, v)| format!("-P {k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = write!(
            h,
            "<h3>{} over {}</h3><p>Entry point <code>{}</code>, {}; the real test split, mean ± std over seeds.</p>",
            esc(&s.name),
            esc(&s.param),
            esc(&s.entry),
            esc(&fixed)
        );
        if let Some(c) = &s.choice {
            let _ = write!(
                h,
                "<p><b>{}=auto chose {}</b>, by {}; the test columns are reported, not chosen by.</p>",
                esc(&s.param),
                esc(&c.value),
                esc(&c.by)
            );
        }
        let (head, rows) = s.table();
        h.push_str(&html_table(&head, &rows, &|r| r[0].ends_with("(chosen)")));
        h.push_str("<div class=\"row\">");
        for (key, heading) in rebalance_core::contract::runner::SWEEP_COLUMNS {
            let p = dir.join(format!("{key}.svg"));
            if p.is_file() {
                h.push_str(&img(&p, &format!("{heading} against {}", s.param)));
            }
        }
        h.push_str("</div>");
    }
    h
}

/// Per refinement round: acceptance, FD of the kept images and recall of each rare class,
/// macro-F1.
fn rounds_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>Refinement rounds</h2><p>Each round fine-tunes the GAN on the real images plus the previous round's kept images, then generates, filters, augments and classifies again.</p>");
    let mut headers = vec!["round".to_string(), "acceptance".to_string()];
    for c in &inp.rare {
        headers.push(format!("acceptance {c}"));
        headers.push(format!("FD kept {c}"));
        headers.push(format!("recall {c}"));
    }
    headers.push("macro-F1".into());
    let rows: Vec<Vec<String>> = (1..=inp.rounds).map(|r| round_row(inp, r)).collect();
    h.push_str(&html_table(&headers, &rows, &|_| false));
    h
}

fn round_row(inp: &Inputs, r: u32) -> Vec<String> {
    let l = inp.layout.round(r);
    let f = Manifest::read(&l.dir(layout::FILTERED))
        .ok()
        .and_then(|m| m.metrics_as::<FilterMetrics>().ok());
    let m: Option<ClassifierMetrics> = read_json(&l.file(layout::CLASSIFY, file::METRICS)).ok();
    let acc: Vec<AcceptanceRow> =
        read_csv(&l.file(layout::FILTERED, file::ACCEPTANCE)).unwrap_or_default();
    let value = |key: &str| {
        or_dash(
            m.as_ref()
                .and_then(|m| metric(m, key))
                .map(|v| format!("{:.3}", v.0)),
        )
    };
    let mut row = vec![
        r.to_string(),
        or_dash(f.map(|f| format!("{:.3}", f.acceptance))),
    ];
    for c in &inp.rare {
        let a = acc.iter().find(|a| &a.class == c);
        row.push(or_dash(a.map(|a| format!("{:.4}", a.acceptance))));
        row.push(or_dash(
            a.and_then(|a| a.fd_kept).map(|v| format!("{v:.3}")),
        ));
        row.push(value(&format!("recall/{c}")));
    }
    row.push(value("macro_f1"));
    row
}

/// Each stage's output folder, device and wall time.
fn stages_section(inp: &Inputs) -> String {
    let mut h = String::from("<h2>Stages</h2>");
    let rows: Vec<Vec<String>> = layout::STAGES
        .iter()
        .filter(|(name, _)| *name != "report")
        .filter_map(|(name, dir)| {
            let m = Manifest::read(&inp.layout.dir(dir)).ok()?;
            Some(vec![
                name.to_string(),
                inp.layout.dir(dir).display().to_string(),
                m.device,
                format!("{:.1}", m.wall_time_s),
            ])
        })
        .collect();
    let headers = strings(&["stage", "output", "device", "wall time (s)"]);
    h.push_str(&html_table(&headers, &rows, &|_| false));
    h
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}\
h1{margin-bottom:.3rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}\
.verdict{font-size:1.25rem;background:#eef5ff;border-left:4px solid #1565c0;padding:.8rem 1rem}\
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}\
th{background:#f5f5f5}tr.rare td{font-weight:600;background:#fff8e1}\
.row{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}figure{margin:.4rem 0}figcaption{font-size:.85rem;color:#555}\
.grids img{width:220px}img{max-width:560px;border:1px solid #eee}.missing,.warn{color:#b71c1c}.note{font-size:.85rem;color:#555}\
table.confusion td{min-width:2rem;text-align:center}";

/// Marks the page with how many images loaded, and warns on the page when any did not.
const SCRIPT: &str = "window.addEventListener('load',function(){var imgs=Array.prototype.slice.call(document.images);\
var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});\
document.body.setAttribute('data-images',imgs.length);document.body.setAttribute('data-broken',bad.length);\
if(bad.length){var p=document.createElement('p');p.className='warn';p.textContent=bad.length+' of '+imgs.length+' images failed to load: '+bad.map(function(i){return i.alt;}).join(', ');document.body.insertBefore(p,document.body.firstChild);}});";

/// Write `out/index.html` and `out/verdict.txt` atomically.
pub fn write(input: &ReportInput, out: &Path) -> Result<Report> {
    let report = build(input)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    rebalance_core::write_atomic(&out.join(file::INDEX), report.html.as_bytes())?;
    rebalance_core::write_atomic(
        &out.join(file::VERDICT),
        format!("{}\n", report.verdict).as_bytes(),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rebalance_core::contract::augment::{ClassComposition, Totals};
    use rebalance_core::contract::classify::{
        ClassMetrics, ClassifierKind, MeanStd, Metrics, SeedRun,
    };

    /// A classifier's metrics over seeds: (seed, macro-F1, recall of the rare class `b`).
    fn clf(seeds: &[(u64, f64, f64)]) -> ClassifierMetrics {
        let runs: Vec<SeedRun> = seeds
            .iter()
            .map(|&(seed, f1, recall_b)| {
                let class = |c: &str, recall| ClassMetrics {
                    class: c.into(),
                    precision: 0.9,
                    recall,
                    f1: 0.9,
                    support: 100,
                };
                let m = Metrics {
                    accuracy: f1,
                    balanced_accuracy: f1,
                    macro_f1: f1,
                    loss: 0.1,
                    n: 200,
                    per_class: vec![class("a", 0.95), class("b", recall_b)],
                    confusion: vec![vec![95, 5], vec![10, 90]],
                };
                SeedRun {
                    seed,
                    best_epoch: 1,
                    epochs_run: 1,
                    train_s: 0.0,
                    val: m.clone(),
                    test: m,
                }
            })
            .collect();
        let refs: Vec<&Metrics> = runs.iter().map(|r| &r.test).collect();
        ClassifierMetrics {
            classes: vec!["a".into(), "b".into()],
            model: ClassifierKind::Lenet5,
            train: "train.safetensors".into(),
            train_counts: Default::default(),
            rare_classes: vec!["b".into()],
            seeds: seeds.iter().map(|s| s.0).collect(),
            test: MeanStd::of(&refs),
            runs,
            recipe: None,
        }
    }

    fn comp(strategy: &str, synthetic: usize, classical: usize, repeated: usize) -> Composition {
        Composition {
            strategy: strategy.into(),
            totals: Totals {
                synthetic,
                classical,
                repeated,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn say(
        b: &ClassifierMetrics,
        a: &ClassifierMetrics,
        c: Option<&ClassifierMetrics>,
        composition: &Composition,
        fallbacks: &[Fallback],
    ) -> String {
        verdict(&VerdictInput {
            baseline: Some(b),
            augmented: Some(a),
            bar: c.map(|metrics| Bar {
                metrics,
                chosen: Some((
                    "online",
                    "online affine+elastic with class-balanced sampling",
                    10,
                )),
            }),
            composition: Some(composition),
            strategy: &composition.strategy,
            rare: &["b".to_string()],
            fallbacks,
        })
    }

    /// A composition whose class `b` received `synthetic` images.
    fn comp_b(strategy: &str, synthetic: usize, classical: usize) -> Composition {
        let mut c = comp(strategy, synthetic, classical, 0);
        c.classes.insert(
            "b".into(),
            ClassComposition {
                synthetic,
                classical,
                ..Default::default()
            },
        );
        c.classes.insert("a".into(), ClassComposition::default());
        c
    }

    #[test]
    fn one_seed_names_the_bar_and_credits_nothing() {
        let v = say(
            &clf(&[(42, 0.8, 0.5)]),
            &clf(&[(42, 0.9, 0.8)]),
            Some(&clf(&[(42, 0.85, 0.7)])),
            &comp_b("synthetic+classical", 20, 10),
            &[],
        );
        assert_eq!(
            v,
            "Adding 20 synthetic and 10 classical images (synthetic+classical) raised macro-F1 \
             from 0.800 to 0.900; recall of class b from 0.500 to 0.800. The best cheap \
             alternative, online affine+elastic with class-balanced sampling (`online`, chosen on \
             validation from 10 recipes), reached 0.850; the synthetic images are +0.050 against \
             it, which one seed cannot tell from seed noise (no paired test is possible). \
             Synthetic images went into class b only. Measured on the real test split with 1 \
             seed, so no significance test was possible; -P seeds=3 trains 3 seeds of the \
             classifier and of every cheap recipe and adds paired t-tests."
        );
        assert!(!v.contains("beat"), "{v}");
    }

    #[test]
    fn lowered_with_one_seed() {
        let v = say(
            &clf(&[(42, 0.8, 0.5)]),
            &clf(&[(42, 0.7, 0.4)]),
            Some(&clf(&[(42, 0.85, 0.7)])),
            &comp_b("synthetic", 30, 0),
            &[],
        );
        assert!(
            v.starts_with(
                "Adding 30 synthetic images (synthetic) lowered macro-F1 from 0.800 to 0.700; \
                 recall of class b from 0.500 to 0.400."
            ),
            "{v}"
        );
        assert!(
            v.contains("the synthetic images are -0.150 against it, which one seed cannot tell"),
            "{v}"
        );
    }

    #[test]
    fn several_seeds_credit_only_what_the_paired_test_tells_apart() {
        let b = clf(&[(1, 0.6, 0.5), (2, 0.6, 0.5), (3, 0.6, 0.5)]);
        let bar = clf(&[(1, 0.7, 0.6), (2, 0.7, 0.6), (3, 0.7, 0.6)]);
        let c = comp_b("synthetic", 9, 0);
        // Differences 0.10, 0.11, 0.09 to the bar: t = 17.3 on 2 df.
        let up = clf(&[(1, 0.8, 0.6), (2, 0.81, 0.6), (3, 0.79, 0.6)]);
        let v = say(&b, &up, Some(&bar), &c, &[]);
        assert!(
            v.contains("reached 0.700; the synthetic images beat it by +0.100 (paired t-test over 3 seeds, p = 0.00"),
            "{v}"
        );
        // Differences 0.20, 0.21, 0.19 against real data only: t = 34.6 on 2 df.
        assert!(
            v.contains("over 3 seeds: paired t-test against real data only p = 0.00"),
            "{v}"
        );
        let down = clf(&[(1, 0.6, 0.6), (2, 0.59, 0.6), (3, 0.61, 0.6)]);
        let v = say(&b, &down, Some(&bar), &c, &[]);
        assert!(v.contains("the synthetic images did not beat it: -0.100 (paired t-test over 3 seeds, p = 0.00"), "{v}");
        // Differences 0.1, 0.2, -0.1: t = 0.76 on 2 df, p = 0.53.
        let noisy = clf(&[(1, 0.8, 0.6), (2, 0.9, 0.6), (3, 0.6, 0.6)]);
        let v = say(&b, &noisy, Some(&bar), &c, &[]);
        assert!(
            v.contains("the synthetic images' +0.067 against it cannot be told from seed noise (paired t-test over 3 seeds, p = 0.5"),
            "{v}"
        );
        assert!(!v.contains("beat it by"), "{v}");
        // A bar with other seeds cannot be paired: nothing is credited.
        let other = clf(&[(7, 0.5, 0.6)]);
        let v = say(&b, &up, Some(&other), &c, &[]);
        assert!(
            v.contains("which one seed cannot tell from seed noise"),
            "{v}"
        );
    }

    #[test]
    fn a_set_without_synthetic_images_gets_no_credit_for_them() {
        // Issue 13: plain oversampling swapped in for augment was credited to synthetic images.
        let v = say(
            &clf(&[(42, 0.8, 0.5)]),
            &clf(&[(42, 0.86, 0.7)]),
            Some(&clf(&[(42, 0.855, 0.7)])),
            &comp("oversample", 0, 0, 290),
            &[],
        );
        assert!(
            v.starts_with(
                "Adding 290 repeated real images (no synthetic image; oversample) raised macro-F1"
            ),
            "{v}"
        );
        assert!(
            v.contains("this set holds no synthetic image, so its +0.005 against it says nothing about synthetic data"),
            "{v}"
        );
        assert!(!v.contains("Synthetic images went"), "{v}");
    }

    #[test]
    fn a_judge_without_a_recipe_choice_is_named_as_it_is() {
        let v = verdict(&VerdictInput {
            baseline: Some(&clf(&[(42, 0.8, 0.5)])),
            augmented: Some(&clf(&[(42, 0.9, 0.8)])),
            bar: Some(Bar {
                metrics: &clf(&[(42, 0.85, 0.7)]),
                chosen: None,
            }),
            composition: Some(&comp_b("synthetic", 5, 0)),
            strategy: "synthetic",
            rare: &["b".to_string()],
            fallbacks: &[],
        });
        assert!(
            v.contains("The judge (classical augmentation; it chose no recipe) reached 0.850; the synthetic images are +0.050"),
            "{v}"
        );
    }

    #[test]
    fn classes_the_filter_left_empty_are_named() {
        let mut c = comp("synthetic+classical", 0, 580, 0);
        c.classes.insert(
            "b".into(),
            ClassComposition {
                classical: 290,
                classical_fallback: true,
                ..Default::default()
            },
        );
        let v = say(
            &clf(&[(42, 0.8, 0.5)]),
            &clf(&[(42, 0.85, 0.7)]),
            Some(&clf(&[(42, 0.85, 0.7)])),
            &c,
            &[Fallback {
                class: "b".into(),
                acceptance: Some((0, 300)),
            }],
        );
        assert!(
            v.contains(
                "The filter kept no synthetic image of class b (acceptance 0/300); class b was \
                 filled by classical augmentation."
            ),
            "{v}"
        );
        assert!(
            v.contains("(no synthetic image; synthetic+classical)"),
            "{v}"
        );
    }

    #[test]
    fn a_set_without_composition_is_not_credited_to_synthetic_images() {
        let v = verdict(&VerdictInput {
            baseline: Some(&clf(&[(42, 0.8, 0.5)])),
            augmented: Some(&clf(&[(42, 0.86, 0.7)])),
            bar: Some(Bar {
                metrics: &clf(&[(42, 0.855, 0.7)]),
                chosen: Some(("online", "online affine+elastic", 3)),
            }),
            strategy: "synthetic",
            rare: &["b".to_string()],
            ..Default::default()
        });
        assert!(
            v.starts_with("The augmented set (it has no composition.json, so what was added is unknown) raised"),
            "{v}"
        );
        assert!(v.contains("the augmented set is +0.005 against it"), "{v}");
        assert!(!v.contains("synthetic images"), "{v}");
    }

    #[test]
    fn missing_metrics_give_no_verdict() {
        let v = verdict(&VerdictInput {
            baseline: Some(&clf(&[(42, 0.8, 0.5)])),
            ..Default::default()
        });
        assert!(v.starts_with("No verdict"), "{v}");
    }
}
