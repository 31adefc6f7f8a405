//! `docs/artifacts.md` and the contract types say the same thing: every column and field list
//! the document gives (after `Columns:`, `Fields:` or `Metrics:`) is exactly the fields of its
//! type, and every such list in the document belongs to a type.

use std::collections::BTreeSet;
use std::path::Path;

use rebalance_core::contract::{augment, classify, dataset, filter, gan, runner, runs};
use serde::Deserialize;
use serde_reflection::{ContainerFormat, Format, Tracer, TracerConfig};

const MARKERS: [&str; 3] = ["Columns:", "Fields:", "Metrics:"];

/// Field names of a struct as serde reads them.
fn fields<'de, T: Deserialize<'de>>() -> BTreeSet<String> {
    let mut tracer = Tracer::new(TracerConfig::default());
    let (format, _) = tracer.trace_simple_type::<T>().expect("traceable");
    let Format::TypeName(name) = format else {
        panic!("not a named type: {format:?}")
    };
    // Only the struct's own fields matter here, not every variant of the enums inside it.
    let registry = tracer.registry_unchecked();
    match &registry[&name] {
        ContainerFormat::Struct(fields) => fields.iter().map(|f| f.name.clone()).collect(),
        other => panic!("{name} is not a struct: {other:?}"),
    }
}

/// Paragraphs and table rows of the document, with the `###` section each is in.
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut para = String::new();
    let flush = |section: &str, para: &mut String, out: &mut Vec<(String, String)>| {
        if !para.trim().is_empty() {
            out.push((section.to_string(), std::mem::take(para)));
        }
        para.clear();
    };
    for line in doc.lines() {
        if line.starts_with('#') {
            flush(&section, &mut para, &mut out);
            section = line.trim_start_matches('#').trim().to_string();
        } else if line.starts_with('|') {
            flush(&section, &mut para, &mut out);
            out.push((section.clone(), line.to_string()));
        } else if line.trim().is_empty() {
            flush(&section, &mut para, &mut out);
        } else {
            para.push_str(line);
            para.push(' ');
        }
    }
    flush(&section, &mut para, &mut out);
    out
}

/// The identifiers in backticks after `marker`, outside parentheses, up to the end of the
/// sentence, the table cell or the next marker.
fn listed(block: &str, marker: &str) -> Option<BTreeSet<String>> {
    let start = block.find(marker)? + marker.len();
    let text = &block[start..];
    let mut names = BTreeSet::new();
    let (mut depth, mut tick, mut cur) = (0i32, false, String::new());
    let chars: Vec<char> = text.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        if tick {
            if ch == '`' {
                tick = false;
                let ident = cur
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if depth == 0 && !cur.is_empty() && ident {
                    names.insert(std::mem::take(&mut cur));
                }
                cur.clear();
            } else {
                cur.push(ch);
            }
            continue;
        }
        let rest: String = chars[i..].iter().collect();
        match ch {
            '`' => tick = true,
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => break,
            '.' if depth == 0 && chars.get(i + 1).is_none_or(|c| *c == ' ') => break,
            _ if depth == 0 && MARKERS.iter().any(|m| rest.starts_with(m)) => break,
            _ => {}
        }
    }
    Some(names)
}

#[test]
fn documented_fields_are_the_contract_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/artifacts.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    // (section, text that identifies the block, marker, the type's fields)
    let expected: Vec<(&str, &str, &str, BTreeSet<String>)> = vec![
        (
            "`ingest`",
            "The manifest of ingest",
            "Fields:",
            fields::<dataset::DatasetInfo>(),
        ),
        (
            "`ingest`",
            "The manifest of ingest",
            "Metrics:",
            fields::<dataset::DatasetMetrics>(),
        ),
        (
            "`gan-train` →",
            "| `config.json`",
            "Fields:",
            fields::<gan::GanConfig>(),
        ),
        (
            "`gan-train` →",
            "| `losses.csv`",
            "Columns:",
            fields::<gan::LossRow>(),
        ),
        (
            "`gan-train` →",
            "| `cycle.csv`",
            "Columns:",
            fields::<gan::CycleRow>(),
        ),
        (
            "`gan-train` →",
            "| `classes.json`",
            "Fields:",
            fields::<gan::PerClassGans>(),
        ),
        (
            "`gan-train` →",
            "| `manifest.json`",
            "Fields:",
            fields::<gan::GanInfo>(),
        ),
        (
            "`gan-train` →",
            "| `manifest.json`",
            "Metrics:",
            fields::<gan::GanMetrics>(),
        ),
        (
            "`gan-train generate`",
            "| `manifest.json`",
            "Fields:",
            fields::<gan::GenerateInfo>(),
        ),
        (
            "`gan-train generate`",
            "| `manifest.json`",
            "Metrics:",
            fields::<gan::GenerateMetrics>(),
        ),
        (
            "`classify` →",
            "| `config.json`",
            "Fields:",
            fields::<classify::ClassifierConfig>(),
        ),
        (
            "`classify` →",
            "| `metrics.json`",
            "Fields:",
            fields::<classify::ClassifierMetrics>(),
        ),
        (
            "`classify` →",
            "| training recipe",
            "Fields:",
            fields::<classify::TrainingRecipe>(),
        ),
        (
            "`classify` →",
            "| `recipes.json` |",
            "Fields:",
            fields::<classify::RecipeSelection>(),
        ),
        (
            "`classify` →",
            "| `recipes.json` `candidates`",
            "Fields:",
            fields::<classify::RecipeResult>(),
        ),
        (
            "`classify` →",
            "| `curves.csv`",
            "Columns:",
            fields::<classify::CurveRow>(),
        ),
        (
            "`classify` →",
            "| `result.json`",
            "Fields:",
            fields::<classify::SeedRun>(),
        ),
        (
            "`classify` →",
            "| `manifest.json`",
            "Fields:",
            fields::<classify::ClassifyInfo>(),
        ),
        (
            "`filter`",
            "| `scores.csv`",
            "Columns:",
            fields::<filter::Score>(),
        ),
        (
            "`filter`",
            "| `acceptance.csv`",
            "Columns:",
            fields::<filter::AcceptanceRow>(),
        ),
        (
            "`filter`",
            "| `manifest.json`",
            "Fields:",
            fields::<filter::FilterInfo>(),
        ),
        (
            "`filter`",
            "| `manifest.json`",
            "Metrics:",
            fields::<filter::FilterMetrics>(),
        ),
        (
            "`filter`",
            "The manifest's `params`",
            "Fields:",
            fields::<filter::ConfidenceGate>(),
        ),
        (
            "`augment`",
            "| `composition.json`",
            "Fields:",
            fields::<augment::Composition>(),
        ),
        (
            "`augment`",
            "| `manifest.json`",
            "Fields:",
            fields::<augment::AugmentInfo>(),
        ),
        (
            "`augment`",
            "| `manifest.json`",
            "Metrics:",
            fields::<augment::AugmentMetrics>(),
        ),
        (
            "`artifacts/runs/<id>/`",
            "| `run.json` |",
            "Fields:",
            fields::<runs::RunRecord>(),
        ),
        (
            "`artifacts/runs/<id>/`",
            "| `run.json` `stages`",
            "Fields:",
            fields::<runs::StageRecord>(),
        ),
        (
            "`artifacts/runs/<id>/`",
            "| `run.json` `stages` `jobs`",
            "Fields:",
            fields::<runs::SlurmJob>(),
        ),
        (
            "`pipeline.lock`",
            "JSON (`rebalance_core::contract::runner::PipelineLock`)",
            "Fields:",
            fields::<runner::PipelineLock>(),
        ),
        (
            "`pipeline.lock`",
            "Each of `stages`",
            "Fields:",
            fields::<runner::LockedStage>(),
        ),
        (
            "`<artifacts>/.lock`",
            "The runner holds an exclusive",
            "Fields:",
            fields::<runner::LockHolder>(),
        ),
        (
            "Sweeps:",
            "| `sweep.json` |",
            "Fields:",
            fields::<runner::SweepResult>(),
        ),
        (
            "Sweeps:",
            "| `sweep.json` `rows`",
            "Fields:",
            fields::<runner::SweepRow>(),
        ),
        (
            "Sweeps:",
            "| `sweep.json` `choice`",
            "Fields:",
            fields::<runner::Choice>(),
        ),
    ];
    let blocks = blocks(&doc);
    let find = |section: &str, key: &str| {
        blocks
            .iter()
            .find(|(s, b)| s.starts_with(section) && b.starts_with(key))
            .unwrap_or_else(|| panic!("docs/artifacts.md has no `{key}` under `{section}`"))
    };
    for (section, key, marker, want) in &expected {
        let (_, block) = find(section, key);
        let got = listed(block, marker)
            .unwrap_or_else(|| panic!("`{key}` under `{section}` lists no {marker}"));
        assert_eq!(
            &got, want,
            "docs/artifacts.md `{key}` under `{section}`, {marker} (left) against the type (right)"
        );
    }
    // The reverse: every list in the document is one of the above.
    for (section, block) in &blocks {
        for marker in MARKERS {
            if block.contains(marker) {
                assert!(
                    expected.iter().any(|(s, k, m, _)| section.starts_with(s)
                        && block.starts_with(k)
                        && *m == marker),
                    "docs/artifacts.md lists {marker} under `{section}` that no contract type holds: {block}"
                );
            }
        }
    }
}

#[test]
fn the_list_reader_skips_parentheses_and_stops_at_the_sentence() {
    let got = listed(
        "| `x` | Fields: `a`, `b` (`c`, and `d`), `e`. Then `f` | `g` |",
        "Fields:",
    )
    .unwrap();
    assert_eq!(got, BTreeSet::from(["a".into(), "b".into(), "e".into()]));
    let got = listed("plus Fields: `a`. Metrics: `b`", "Metrics:").unwrap();
    assert_eq!(got, BTreeSet::from(["b".to_string()]));
}
