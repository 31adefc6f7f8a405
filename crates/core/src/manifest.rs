//! `manifest.json`: what every stage output folder says about itself.
//!
//! Every stage writes it the same way: [`Manifest::new`] with what ran (stage, parameters,
//! device, seed), [`Manifest::with_input_files`] (or `inputs` set directly), the stage's typed
//! metrics and fields ([`Manifest::set_metrics`], [`Manifest::set_extra`]), and last, once every
//! other output is in the folder, [`Manifest::commit`] (a [`StagedDir`], swapped into place) or
//! [`Manifest::write_into`] (a work folder the stage moves itself).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic::StagedDir;
use crate::CONTRACT_VERSION;

/// One input or output file (or folder of files) with its content hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// Path as given (inputs) or relative to the output folder (outputs).
    pub path: String,
    /// Hex SHA-256 of the file; for a folder, of the sorted (name, sha256) list of its files.
    pub sha256: String,
    /// Size in bytes (files) or total bytes (folders).
    pub bytes: u64,
    /// Number of files, for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
}

impl FileRecord {
    /// Record a file that is on disk.
    pub fn of_file(path: &Path, shown_as: &str) -> Result<Self> {
        let bytes = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(Self {
            path: shown_as.to_string(),
            sha256: crate::hash::sha256_file(path)?,
            bytes,
            files: None,
        })
    }
}

/// The manifest common to all stages; stage-specific fields go in `extra` (flattened).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub contract_version: String,
    /// Seconds since the Unix epoch when the stage finished.
    pub created_unix: u64,
    /// The resolved parameters (the stage's full CLI config).
    pub params: Value,
    pub inputs: Vec<FileRecord>,
    pub outputs: Vec<FileRecord>,
    pub metrics: Map<String, Value>,
    pub device: String,
    pub seed: u64,
    pub wall_time_s: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    pub fn new(stage: &str, params: Value, device: &str, seed: u64) -> Self {
        Self {
            stage: stage.to_string(),
            contract_version: CONTRACT_VERSION.to_string(),
            created_unix: 0,
            params,
            inputs: Vec::new(),
            outputs: Vec::new(),
            metrics: Map::new(),
            device: device.to_string(),
            seed,
            wall_time_s: 0.0,
            extra: Map::new(),
        }
    }

    /// Record each of `paths` as an input, under the path as given.
    pub fn with_input_files<P: AsRef<Path>>(
        mut self,
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self> {
        for p in paths {
            let p = p.as_ref();
            self.inputs
                .push(FileRecord::of_file(p, &p.display().to_string())?);
        }
        Ok(self)
    }

    /// The last write into a stage's output folder `dir`, once every other file is in it:
    /// record those files as outputs ([`Manifest::record_outputs`]), then stamp the times and
    /// write `dir/manifest.json` ([`Manifest::finish`]).
    pub fn write_into(&mut self, dir: &Path, started: Instant) -> Result<()> {
        self.record_outputs(dir)?;
        self.finish(dir, started)
    }

    /// [`Manifest::write_into`] the staged folder, then swap it into place. Gives back the
    /// manifest as written.
    pub fn commit(mut self, staged: StagedDir, started: Instant) -> Result<Self> {
        self.write_into(staged.path(), started)?;
        staged.commit()?;
        Ok(self)
    }

    /// Record every regular file already in `dir` as an output (sorted by name).
    fn record_outputs(&mut self, dir: &Path) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "manifest.json" && !n.starts_with('.'))
            .collect();
        names.sort();
        self.outputs = names
            .iter()
            .map(|n| FileRecord::of_file(&dir.join(n), n))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Stamp the finish time and wall time, then write `dir/manifest.json` atomically.
    fn finish(&mut self, dir: &Path, started: Instant) -> Result<()> {
        self.wall_time_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        self.created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        crate::write_atomic(&dir.join("manifest.json"), &json)
    }

    /// Merge a stage's typed fields (a `contract` struct) into the manifest's top level.
    pub fn set_extra<T: Serialize>(&mut self, fields: &T) -> Result<()> {
        self.extra.extend(object_of(fields)?);
        Ok(())
    }

    /// The stage's typed fields, read from the manifest's top level.
    pub fn extra_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.extra.clone()))
            .with_context(|| format!("the {} manifest lacks its stage fields", self.stage))
    }

    /// Merge typed metrics (a `contract` struct) into `metrics`.
    pub fn set_metrics<T: Serialize>(&mut self, metrics: &T) -> Result<()> {
        self.metrics.extend(object_of(metrics)?);
        Ok(())
    }

    /// The parameters as a typed struct (of some of them: other fields are left out).
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone())
            .with_context(|| format!("the {} manifest's parameters", self.stage))
    }

    /// The metrics as a typed struct.
    pub fn metrics_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.metrics.clone()))
            .with_context(|| format!("the {} manifest's metrics", self.stage))
    }

    /// Read `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A struct's fields as a JSON object.
fn object_of<T: Serialize>(value: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(value)? {
        Value::Object(m) => Ok(m),
        v => anyhow::bail!("expected an object of fields, got {v}"),
    }
}
