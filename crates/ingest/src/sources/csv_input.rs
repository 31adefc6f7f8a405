//! A CSV input of a source (labels CSV, FER2013, GTSRB annotations): read whole and recorded
//! among the inputs, its header row, then its rows, each with where it is in the file.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use csv::StringRecord;
use rebalance_core::FileRecord;

use super::read_input;

pub(crate) struct CsvInput {
    /// The file as messages name it.
    name: String,
    headers: StringRecord,
    reader: csv::Reader<Cursor<Vec<u8>>>,
}

impl CsvInput {
    /// Read `path` whole (recorded in `inputs`) and its header row; a header that cannot be
    /// read is an error `<path>: <header>`. Cells are separated by `delimiter` and trimmed;
    /// rows may have any number of cells.
    pub fn open(
        path: &Path,
        delimiter: u8,
        header: &str,
        inputs: &mut Vec<FileRecord>,
    ) -> Result<Self> {
        let bytes = read_input(path, inputs)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(Cursor::new(bytes));
        let headers = reader
            .headers()
            .with_context(|| format!("{}: {header}", path.display()))?
            .clone();
        Ok(Self {
            name: path.display().to_string(),
            headers,
            reader,
        })
    }

    pub fn headers(&self) -> &StringRecord {
        &self.headers
    }

    /// The position of the column named exactly `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// The column names joined by `sep`, for messages.
    pub fn columns(&self, sep: &str) -> String {
        self.headers.iter().collect::<Vec<_>>().join(sep)
    }

    /// The rows after the header: each with its origin (`<path>:<line>`, the header being
    /// line 1) and its cells, or why it is malformed.
    pub fn rows(self) -> impl Iterator<Item = (String, Result<StringRecord, String>)> {
        let name = self.name;
        self.reader
            .into_records()
            .enumerate()
            .map(move |(i, record)| {
                (
                    format!("{name}:{}", i + 2),
                    record.map_err(|e| format!("malformed CSV row: {e}")),
                )
            })
    }
}
