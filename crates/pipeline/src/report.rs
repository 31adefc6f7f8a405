//! `pipeline report`: one self-contained HTML page (images inlined as data URIs) from the stage
//! outputs of a run, and the verdict in one sentence.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;

/// The classifier runs the report compares, by folder under the artifacts root.
pub const BASELINE: &str = "baseline";
pub const CLASSICAL: &str = "judge";
pub const AUGMENTED: &str = "classify";

pub struct ReportInput {
    pub artifacts: PathBuf,
    pub rounds: u32,
}

/// A JSON file, or None when it is missing or unreadable (the report and the metrics
/// collector both take what exists).
pub(crate) fn read_json(path: &Path) -> Option<Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
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

/// Mean and std of a test metric in a classify `metrics.json`.
fn metric(m: &Value, key: &str) -> Option<(f64, f64)> {
    let mean = m["test"]["mean"][key].as_f64()?;
    let std = m["test"]["std"][key].as_f64().unwrap_or(0.0);
    Some((mean, std))
}

fn seeds(m: &Value) -> usize {
    m["seeds"].as_array().map(|a| a.len()).unwrap_or(1)
}

fn fmt_ms(v: Option<(f64, f64)>, n: usize) -> String {
    match v {
        Some((m, s)) if n > 1 => format!("{m:.3} ± {s:.3}"),
        Some((m, _)) => format!("{m:.3}"),
        None => "—".into(),
    }
}

struct Classifier {
    label: String,
    metrics: Value,
    dir: PathBuf,
}

fn mean_rare_recall(m: &Value, rare: &[String]) -> Option<f64> {
    if rare.is_empty() {
        return None;
    }
    let vals: Option<Vec<f64>> = rare
        .iter()
        .map(|c| metric(m, &format!("recall/{c}")).map(|v| v.0))
        .collect();
    vals.map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The verdict: what the synthetic data did to macro-F1 and to the rare classes' recall, and
/// how that compares with classical augmentation alone.
pub fn verdict(
    baseline: Option<&Value>,
    augmented: Option<&Value>,
    classical: Option<&Value>,
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
    let n = seeds(a).min(seeds(b));
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

fn csv_table(path: &Path, keep: &[&str]) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let mut rdr = csv::Reader::from_path(path).ok()?;
    let headers: Vec<String> = rdr.headers().ok()?.iter().map(str::to_string).collect();
    let idx: Vec<usize> = keep
        .iter()
        .filter_map(|k| headers.iter().position(|h| h == k))
        .collect();
    let rows = rdr
        .records()
        .flatten()
        .map(|r| {
            idx.iter()
                .map(|&i| r.get(i).unwrap_or("").to_string())
                .collect()
        })
        .collect();
    Some((idx.iter().map(|&i| headers[i].clone()).collect(), rows))
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

pub fn build(input: &ReportInput) -> Result<Report> {
    let a = &input.artifacts;
    let dataset = read_json(&a.join("dataset/manifest.json"));
    let classes: Vec<String> = dataset
        .as_ref()
        .and_then(|d| d["classes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let rare: Vec<String> = dataset
        .as_ref()
        .and_then(|d| d["rare_classes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let is_rare = |c: &str| rare.iter().any(|r| r == c);
    let composition = read_json(&a.join("augmented/composition.json"));
    let strategy = read_json(&a.join("augmented/manifest.json"))
        .and_then(|m| m["params"]["strategy"].as_str().map(str::to_string))
        .unwrap_or_else(|| "augmented".into());
    let clfs: Vec<Classifier> = [
        (BASELINE, "real data only".to_string()),
        (CLASSICAL, "classical augmentation (the judge)".to_string()),
        (AUGMENTED, strategy.clone()),
    ]
    .into_iter()
    .filter_map(|(dir, label)| {
        read_json(&a.join(dir).join("metrics.json")).map(|metrics| Classifier {
            label,
            metrics,
            dir: a.join(dir),
        })
    })
    .collect();
    let by_dir = |d: &str| clfs.iter().find(|c| c.dir == a.join(d)).map(|c| &c.metrics);
    let mut verdict = verdict(
        by_dir(BASELINE),
        by_dir(AUGMENTED),
        by_dir(CLASSICAL),
        &strategy,
        &rare,
    );
    if input.rounds > 1 {
        let last = read_json(&a.join(format!("rounds/{}/classify/metrics.json", input.rounds)));
        let first = by_dir(AUGMENTED).and_then(|m| metric(m, "macro_f1"));
        match (last.as_ref().and_then(|m| metric(m, "macro_f1")), first) {
            (Some((l, _)), Some((f, _))) => {
                let _ = write!(
                    verdict,
                    " After {} rounds of refinement, macro-F1 was {l:.3} (round 1: {f:.3}).",
                    input.rounds
                );
            }
            _ => {
                let _ = write!(
                    verdict,
                    " Refinement round {} has no classifier metrics.",
                    input.rounds
                );
            }
        }
    }

    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>rebalance report</h1><p class=\"verdict\">{}</p>",
        esc(&verdict)
    );

    // Dataset.
    body.push_str("<h2>Dataset</h2>");
    if let Some(d) = &dataset {
        let shape = &d["image_shape"];
        let _ = write!(
            body,
            "<p>{} classes, images {}×{}×{}; rare classes: {}.</p>",
            classes.len(),
            shape["channels"],
            shape["height"],
            shape["width"],
            if rare.is_empty() {
                "none".to_string()
            } else {
                rare.join(", ")
            }
        );
        let headers: Vec<String> = [
            "class",
            "train (real)",
            "val",
            "test",
            "after augment",
            "real",
            "synthetic",
            "classical",
            "repeated",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows: Vec<Vec<String>> = classes
            .iter()
            .map(|c| {
                let n = |split: &str| d["counts"][split][c].to_string();
                let comp = composition.as_ref().map(|m| &m["classes"][c]);
                let part = |k: &str| comp.map(|v| v[k].to_string()).unwrap_or_else(|| "—".into());
                let total = comp
                    .map(|v| {
                        ["real", "synthetic", "classical", "repeated"]
                            .iter()
                            .filter_map(|k| v[*k].as_u64())
                            .sum::<u64>()
                            .to_string()
                    })
                    .unwrap_or_else(|| "—".into());
                vec![
                    c.clone(),
                    n("train"),
                    n("val"),
                    n("test"),
                    total,
                    part("real"),
                    part("synthetic"),
                    part("classical"),
                    part("repeated"),
                ]
            })
            .collect();
        body.push_str(&html_table(&headers, &rows, &|r| is_rare(&r[0])));
    } else {
        body.push_str("<p class=\"missing\">No dataset/manifest.json.</p>");
    }
    for pair in [
        [
            (
                "dataset/class_counts.svg",
                "class counts before augmentation",
            ),
            (
                "augmented/class_counts.svg",
                "class counts after augmentation",
            ),
        ],
        [
            ("dataset/samples.png", "real training images per class"),
            ("augmented/samples.png", "augmented training images"),
        ],
    ] {
        body.push_str("<div class=\"row\">");
        for (file, label) in pair {
            body.push_str(&img(&a.join(file), label));
        }
        body.push_str("</div>");
    }

    // GAN.
    body.push_str("<h2>GAN</h2>");
    if let Some(g) = read_json(&a.join("gan/manifest.json")) {
        let cfg = &g["config"];
        let _ = write!(
            body,
            "<p>{} trained {} steps in {:.0} s ({} images/s); final losses: D real {:.3}, D fake {:.3}, G {:.3}.</p>",
            esc(cfg["model"].as_str().unwrap_or("?")),
            g["metrics"]["steps"],
            g["metrics"]["train_s"].as_f64().unwrap_or(0.0),
            g["metrics"]["images_per_s"],
            g["metrics"]["final"]["d_loss_real"].as_f64().unwrap_or(f64::NAN),
            g["metrics"]["final"]["d_loss_fake"].as_f64().unwrap_or(f64::NAN),
            g["metrics"]["final"]["g_loss"].as_f64().unwrap_or(f64::NAN),
        );
    }
    body.push_str(&img(&a.join("gan/losses.svg"), "GAN losses"));
    let mut grids: Vec<PathBuf> = std::fs::read_dir(a.join("gan/samples"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    grids.retain(|p| p.extension().map(|e| e == "png").unwrap_or(false));
    grids.sort();
    body.push_str("<p>Samples per class (one row per class) across training, and real images:</p><div class=\"row grids\">");
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
        body.push_str(&img(g, &label));
    }
    body.push_str("</div>");

    // Filter.
    body.push_str("<h2>Filter</h2>");
    if let Some(f) = read_json(&a.join("filtered/manifest.json")) {
        let _ = write!(
            body,
            "<p>Kept {} of {} generated images ({:.1}%) at threshold {}.</p>",
            f["metrics"]["n_kept"],
            f["metrics"]["n_generated"],
            100.0 * f["metrics"]["acceptance"].as_f64().unwrap_or(0.0),
            f["params"]["threshold"]
        );
    }
    let keep = [
        "class",
        "generated",
        "kept",
        "acceptance",
        "mean_confidence",
        "fd_generated",
        "fd_kept",
        "fd_real_train",
        "near_copies",
        "diversity_kept",
        "diversity_real",
    ];
    match csv_table(&a.join("filtered/acceptance.csv"), &keep) {
        Some((h, rows)) => {
            body.push_str(&html_table(&h, &rows, &|r| is_rare(&r[0])));
            body.push_str("<p class=\"note\">FD: Fréchet distance in the judge's feature space to the real validation images (fd_real_train: the real training images, the floor). Diversity: mean pairwise distance within the class.</p>");
        }
        None => body.push_str("<p class=\"missing\">No filtered/acceptance.csv.</p>"),
    }
    body.push_str("<div class=\"row\">");
    body.push_str(&img(&a.join("filtered/accepted.png"), "accepted images"));
    body.push_str(&img(&a.join("filtered/rejected.png"), "rejected images"));
    body.push_str("</div>");

    // Classifiers.
    body.push_str("<h2>Classifiers on the real test split</h2>");
    if clfs.is_empty() {
        body.push_str("<p class=\"missing\">No classifier metrics.</p>");
    } else {
        let mut headers = vec!["metric".to_string()];
        headers.extend(clfs.iter().map(|c| {
            format!(
                "{} ({} seed{})",
                c.label,
                seeds(&c.metrics),
                if seeds(&c.metrics) == 1 { "" } else { "s" }
            )
        }));
        let mut rows = Vec::new();
        for (key, name) in [
            ("accuracy", "accuracy"),
            ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro-F1"),
        ] {
            let mut r = vec![name.to_string()];
            r.extend(
                clfs.iter()
                    .map(|c| fmt_ms(metric(&c.metrics, key), seeds(&c.metrics))),
            );
            rows.push(r);
        }
        for c in &rare {
            let mut r = vec![format!("recall of class {c}")];
            r.extend(clfs.iter().map(|m| {
                fmt_ms(
                    metric(&m.metrics, &format!("recall/{c}")),
                    seeds(&m.metrics),
                )
            }));
            rows.push(r);
        }
        if !rare.is_empty() {
            let mut r = vec!["mean rare recall".to_string()];
            r.extend(clfs.iter().map(|c| {
                mean_rare_recall(&c.metrics, &rare)
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "—".into())
            }));
            rows.push(r);
        }
        body.push_str(&html_table(&headers, &rows, &|_| false));
        body.push_str("<div class=\"row\">");
        for c in &clfs {
            body.push_str(&confusion_table(
                &c.dir.join("confusion.csv"),
                &format!("confusion: {} (rows true, columns predicted)", c.label),
            ));
        }
        body.push_str("</div><div class=\"row\">");
        for c in &clfs {
            body.push_str(&img(
                &c.dir.join("curves.svg"),
                &format!("training curves: {}", c.label),
            ));
        }
        body.push_str("</div>");
    }

    // Refinement rounds.
    if input.rounds > 1 {
        body.push_str("<h2>Refinement rounds</h2><p>Each round fine-tunes the GAN on the real images plus the previous round's kept images, then generates, filters, augments and classifies again.</p>");
        let mut headers = vec!["round".to_string(), "acceptance".to_string()];
        for c in &rare {
            headers.push(format!("acceptance {c}"));
            headers.push(format!("FD kept {c}"));
            headers.push(format!("recall {c}"));
        }
        headers.push("macro-F1".into());
        let mut rows = Vec::new();
        for r in 1..=input.rounds {
            let dir = if r == 1 {
                a.clone()
            } else {
                a.join(format!("rounds/{r}"))
            };
            let f = read_json(&dir.join("filtered/manifest.json"));
            let m = read_json(&dir.join("classify/metrics.json"));
            let acc: BTreeMap<String, (String, String)> = csv_table(
                &dir.join("filtered/acceptance.csv"),
                &["class", "acceptance", "fd_kept"],
            )
            .map(|(_, rows)| {
                rows.into_iter()
                    .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
                    .collect()
            })
            .unwrap_or_default();
            let mut row = vec![
                r.to_string(),
                f.as_ref()
                    .and_then(|f| f["metrics"]["acceptance"].as_f64())
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "—".into()),
            ];
            for c in &rare {
                let (ac, fd) = acc.get(c).cloned().unwrap_or(("—".into(), "—".into()));
                row.push(ac);
                row.push(fd);
                row.push(
                    m.as_ref()
                        .and_then(|m| metric(m, &format!("recall/{c}")))
                        .map(|v| format!("{:.3}", v.0))
                        .unwrap_or_else(|| "—".into()),
                );
            }
            row.push(
                m.as_ref()
                    .and_then(|m| metric(m, "macro_f1"))
                    .map(|v| format!("{:.3}", v.0))
                    .unwrap_or_else(|| "—".into()),
            );
            rows.push(row);
        }
        body.push_str(&html_table(&headers, &rows, &|_| false));
    }

    // Provenance.
    body.push_str("<h2>Stages</h2>");
    let mut rows = Vec::new();
    for (dir, name) in [
        ("dataset", "ingest"),
        ("judge-train", "judge-train"),
        ("judge", "judge"),
        ("gan", "gan-train"),
        ("generated", "generate"),
        ("filtered", "filter"),
        ("augmented", "augment"),
        ("classify", "classify"),
        ("baseline", "baseline"),
    ] {
        if let Some(m) = read_json(&a.join(dir).join("manifest.json")) {
            rows.push(vec![
                name.to_string(),
                format!("{}/{dir}", a.display()),
                m["device"].as_str().unwrap_or("").to_string(),
                format!("{:.1}", m["wall_time_s"].as_f64().unwrap_or(0.0)),
            ]);
        }
    }
    let headers: Vec<String> = ["stage", "output", "device", "wall time (s)"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    body.push_str(&html_table(&headers, &rows, &|_| false));

    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>rebalance report</title><style>{CSS}</style></head>\n<body>\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    Ok(Report { html, verdict })
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
    rebalance_core::write_atomic(&out.join("index.html"), report.html.as_bytes())?;
    rebalance_core::write_atomic(
        &out.join("verdict.txt"),
        format!("{}\n", report.verdict).as_bytes(),
    )?;
    Ok(report)
}
