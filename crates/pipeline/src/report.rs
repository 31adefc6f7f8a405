//! `pipeline report`: one self-contained HTML page (images inlined as data URIs) from the stage
//! outputs of a run, and the verdict in one sentence.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rebalance_core::contract::augment::Composition;
use rebalance_core::contract::classify::ClassifierMetrics;
use rebalance_core::contract::dataset::DatasetInfo;
use rebalance_core::contract::filter::{AcceptanceRow, FilterMetrics};
use rebalance_core::contract::gan::{GanInfo, GanMetrics};
use rebalance_core::contract::layout::{self, file, Layout};
use rebalance_core::contract::{read_csv, read_json};
use rebalance_core::Manifest;

pub struct ReportInput {
    pub artifacts: PathBuf,
    pub rounds: u32,
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

/// A classifier the report compares: its label, metrics and folder.
struct Classifier {
    label: String,
    metrics: ClassifierMetrics,
    dir: PathBuf,
}

impl Classifier {
    fn seeds(&self) -> usize {
        self.metrics.seeds.len().max(1)
    }
}

/// The verdict: what the synthetic data did to macro-F1 and to the rare classes' recall, and
/// how that compares with classical augmentation alone.
pub fn verdict(
    baseline: Option<&ClassifierMetrics>,
    augmented: Option<&ClassifierMetrics>,
    classical: Option<&ClassifierMetrics>,
    strategy: &str,
    rare: &[String],
) -> String {
    let (Some(b), Some(a)) = (baseline, augmented) else {
        return "No verdict: the baseline (real data only) or the augmented classifier has no metrics.json.".into();
    };
    let (Some((bf, _)), Some((af, _))) = (metric(b, "macro_f1"), metric(a, "macro_f1")) else {
        return "No verdict: macro-F1 missing from metrics.json.".into();
    };
    let verb = if af > bf + 0.0005 {
        "raised"
    } else if af < bf - 0.0005 {
        "lowered"
    } else {
        "left"
    };
    let what = if strategy.contains("synthetic") {
        format!("Synthetic data ({strategy})")
    } else {
        format!("Augmentation ({strategy})")
    };
    let mut s = if verb == "left" {
        format!("{what} left macro-F1 unchanged at {af:.3}")
    } else {
        format!("{what} {verb} macro-F1 from {bf:.3} to {af:.3}")
    };
    let recalls: Vec<String> = rare
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
    if let Some((cf, _)) = classical.and_then(|c| metric(c, "macro_f1")) {
        let d = af - cf;
        let cmp = if d > 0.0005 {
            format!("so the synthetic images added {d:+.3} on top of it")
        } else if d < -0.0005 {
            format!("so the synthetic images did not beat it ({d:+.3})")
        } else {
            "the same as with synthetic images".to_string()
        };
        let _ = write!(s, " Classical augmentation alone reached {cf:.3}, {cmp}.");
    }
    let n = a.seeds.len().min(b.seeds.len()).max(1);
    let _ = write!(
        s,
        " Measured on the real test split, {n} seed{}.",
        if n == 1 { "" } else { "s" }
    );
    s
}

fn confusion_table(path: &Path, title: &str) -> String {
    let Ok(mut rdr) = csv::Reader::from_path(path) else {
        return format!(
            "<p class=\"missing\">{} — no {}</p>",
            esc(title),
            esc(&path.display().to_string())
        );
    };
    let headers: Vec<String> = rdr
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = rdr
        .records()
        .flatten()
        .map(|r| r.iter().map(str::to_string).collect())
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
        let classifiers = [
            (layout::BASELINE, "real data only".to_string()),
            (
                layout::JUDGE,
                "classical augmentation (the judge)".to_string(),
            ),
            (layout::CLASSIFY, strategy.clone()),
        ]
        .into_iter()
        .filter_map(|(dir, label)| {
            let metrics = read_json(&layout.file(dir, file::METRICS)).ok()?;
            Some(Classifier {
                label,
                metrics,
                dir: layout.dir(dir),
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
        }
    }

    fn classifier(&self, dir: &str) -> Option<&ClassifierMetrics> {
        let dir = self.layout.dir(dir);
        self.classifiers
            .iter()
            .find(|c| c.dir == dir)
            .map(|c| &c.metrics)
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
    let mut v = verdict(
        inp.classifier(layout::BASELINE),
        inp.classifier(layout::CLASSIFY),
        inp.classifier(layout::JUDGE),
        &inp.strategy,
        &inp.rare,
    );
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
    let verdict = full_verdict(&inp);
    let mut body = format!(
        "<h1>rebalance report</h1><p class=\"verdict\">{}</p>",
        esc(&verdict)
    );
    body.push_str(&dataset_section(&inp));
    body.push_str(&gan_section(&inp));
    body.push_str(&filter_section(&inp));
    body.push_str(&classifiers_section(&inp));
    if inp.rounds > 1 {
        body.push_str(&rounds_section(&inp));
    }
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
        if let Ok(f) = m.metrics_as::<FilterMetrics>() {
            let _ = write!(
                h,
                "<p>Kept {} of {} generated images ({:.1}%) at threshold {}.</p>",
                f.n_kept,
                f.n_generated,
                100.0 * f.acceptance,
                m.params["threshold"]
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
