//! A CSV log of typed rows (GAN losses, classifier curves), rewritten atomically on every push,
//! so a killed run leaves a whole file that a resumed run reads back and continues.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rebalance_core::contract::{read_csv, write_csv};
use serde::{de::DeserializeOwned, Serialize};

pub struct CsvLog<R> {
    path: PathBuf,
    rows: Vec<R>,
}

impl<R: Serialize + DeserializeOwned> CsvLog<R> {
    /// A new, empty log at `path` (nothing is written until the first push).
    pub fn create(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            rows: Vec::new(),
        }
    }

    /// The log at `path` with the rows already in it that `keep` accepts (a resumed run keeps
    /// the rows up to its checkpoint); empty when there is no file.
    pub fn resume(path: &Path, keep: impl Fn(&R) -> bool) -> Result<Self> {
        let rows = read_csv(path)?.into_iter().filter(|r| keep(r)).collect();
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// Append a row and rewrite the file.
    pub fn push(&mut self, row: R) -> Result<()> {
        self.rows.push(row);
        write_csv(&self.path, &self.rows)
    }

    pub fn rows(&self) -> &[R] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        step: u64,
        loss: f64,
    }

    #[test]
    fn push_rewrites_and_resume_keeps_what_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.csv");
        let mut log = CsvLog::create(&path);
        for step in 1..=4 {
            log.push(Row { step, loss: 0.5 }).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some("step,loss"));
        assert_eq!(text.lines().count(), 5);
        let log = CsvLog::<Row>::resume(&path, |r| r.step <= 2).unwrap();
        assert_eq!(
            log.rows().iter().map(|r| r.step).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(
            CsvLog::<Row>::resume(&dir.path().join("none.csv"), |_| true)
                .unwrap()
                .rows()
                .is_empty()
        );
        std::fs::write(&path, "step,loss\nx,1\n").unwrap();
        let err = CsvLog::<Row>::resume(&path, |_| true).err().unwrap();
        assert!(format!("{err:#}").contains("log.csv"), "{err:#}");
    }
}
