//! The official GTSRB layout:
//! `Final_Training/Images/000NN/*.ppm` with `GT-000NN.csv` (`;`-separated:
//! Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId), and optionally the test folder
//! `Final_Test/Images/*.ppm` with `GT-final_test.csv` (in that folder or beside it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::csv_input::CsvInput;
use super::{Item, LabelRef, Loaded, Payload, Problem, Roi, Split};

pub fn load(root: &Path, roi_crop: bool) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let train = root.join("Final_Training").join("Images");
    let test = root.join("Final_Test").join("Images");
    if !train.is_dir() && !test.is_dir() {
        bail!(
            "{}: neither Final_Training/Images nor Final_Test/Images exists",
            root.display()
        );
    }
    if train.is_dir() {
        let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(&train)
            .with_context(|| format!("listing {}", train.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        for dir in class_dirs {
            let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let csv = dir.join(format!("GT-{dir_name}.csv"));
            if !csv.is_file() {
                loaded.problems.push(Problem::new(
                    csv.display().to_string(),
                    "annotation CSV is missing; class folder skipped",
                ));
                continue;
            }
            read_annotations(&csv, &dir, Split::Train, roi_crop, &mut loaded)?;
        }
    }
    if test.is_dir() {
        let csv = [
            test.join("GT-final_test.csv"),
            root.join("GT-final_test.csv"),
            root.join("Final_Test").join("GT-final_test.csv"),
        ]
        .into_iter()
        .find(|p| p.is_file());
        match csv {
            Some(csv) => read_annotations(&csv, &test, Split::Test, roi_crop, &mut loaded)?,
            None => bail!(
                "{}: the test images have no GT-final_test.csv (looked in {} and {})",
                test.display(),
                test.display(),
                root.display()
            ),
        }
    }
    Ok(loaded)
}

fn read_annotations(
    csv: &Path,
    dir: &Path,
    split: Split,
    roi_crop: bool,
    loaded: &mut Loaded,
) -> Result<()> {
    let table = CsvInput::open(csv, b';', "header row", &mut loaded.inputs)?;
    let col = |n: &str| {
        table.column(n).with_context(|| {
            format!(
                "{}: no column `{n}` (columns: {})",
                csv.display(),
                table.columns(";")
            )
        })
    };
    let c_file = col("Filename")?;
    let c_class = col("ClassId")?;
    let roi_cols = ["Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"].map(|n| table.column(n));
    for (origin, record) in table.rows() {
        let parsed = record.and_then(|r| {
            let file = r
                .get(c_file)
                .filter(|f| !f.is_empty())
                .ok_or("no file name")?
                .to_string();
            let class: i64 = r.get(c_class).ok_or("no ClassId")?.parse().map_err(|_| {
                format!(
                    "ClassId `{}` is not an integer",
                    r.get(c_class).unwrap_or("")
                )
            })?;
            let roi = if roi_crop {
                let v: Vec<u32> = roi_cols
                    .iter()
                    .map(|c| c.and_then(|c| r.get(c)).and_then(|v| v.parse().ok()))
                    .collect::<Option<_>>()
                    .ok_or("--roi-crop: Roi.X1..Roi.Y2 missing or not integers")?;
                Some(Roi {
                    x1: v[0],
                    y1: v[1],
                    x2: v[2],
                    y2: v[3],
                })
            } else {
                None
            };
            Ok::<_, String>((file, class, roi))
        });
        match parsed {
            Ok((file, class, roi)) => {
                let path = dir.join(&file);
                loaded.items.push(Item {
                    origin: path.display().to_string(),
                    label: LabelRef::Index(class),
                    split: Some(split),
                    payload: Payload::File { path, roi },
                });
            }
            Err(reason) => loaded.problems.push(Problem::new(origin, reason)),
        }
    }
    Ok(())
}
