//! A trained classifier saved to and loaded back from its folder (`config.json` +
//! `model.safetensors`): the judge that `filter` uses to score generated images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::io;
use anyhow::{bail, Context, Result};
use rebalance_core::ImageSet;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::classifier::{Classifier, ClassifierConfig};

pub struct Judge {
    pub config: ClassifierConfig,
    pub model: Classifier,
    pub dir: PathBuf,
    pub weights: PathBuf,
    vs: VarStore,
}

/// Write a classifier's weights (with its config as metadata) and `config.json` into `dir`.
pub fn save(dir: &Path, vs: &VarStore, config: &ClassifierConfig) -> Result<()> {
    let cfg_json = serde_json::to_string_pretty(config)?;
    let bytes = io::to_safetensors(
        &io::named_vars(vs, ""),
        HashMap::from([("config".to_string(), cfg_json.clone())]),
    )?;
    rebalance_core::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    rebalance_core::write_atomic(&dir.join("config.json"), cfg_json.as_bytes())
}

impl Judge {
    /// Load a `classify` output folder.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let weights = dir.join("model.safetensors");
        if !cfg_path.exists() || !weights.exists() {
            bail!(
                "{}: not a classify output (needs config.json and model.safetensors); train the judge with \
                 `cargo run --release -p classify -- --train artifacts/dataset/train.safetensors --out {}`",
                dir.display(),
                dir.display()
            );
        }
        let config: ClassifierConfig = serde_json::from_slice(
            &std::fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?,
        )
        .with_context(|| format!("{}: not a classifier config", cfg_path.display()))?;
        let vs = VarStore::new(device);
        let model = Classifier::new(&vs.root(), &config);
        let (tensors, _) = io::read_safetensors(&weights, device)?;
        io::load_vars(&vs, "", &tensors, &weights)?;
        Ok(Self {
            config,
            model,
            dir: dir.to_path_buf(),
            weights,
            vs,
        })
    }

    /// Stop gradients at the judge's weights: it scores or guides, and is never trained.
    pub fn freeze(&mut self) {
        self.vs.freeze();
    }

    /// Refuse an image set whose class list or image shape differs from the judge's.
    pub fn check_compatible(&self, set: &ImageSet, what: &Path) -> Result<()> {
        let c = &self.config;
        if set.classes != c.classes {
            bail!(
                "{}: classes [{}] differ from the judge's [{}] ({}); train the judge on the same dataset",
                what.display(),
                set.classes.join(", "),
                c.classes.join(", "),
                self.dir.display()
            );
        }
        let shape = (set.channels as i64, set.height as i64, set.width as i64);
        if shape != (c.channels, c.height, c.width) {
            bail!(
                "{}: images are {}×{}×{} (C×H×W) but the judge ({}) takes {}×{}×{}",
                what.display(),
                shape.0,
                shape.1,
                shape.2,
                self.dir.display(),
                c.channels,
                c.height,
                c.width
            );
        }
        Ok(())
    }

    /// Class probabilities `[N, K]`.
    pub fn probs(&self, images_u8: &Tensor, batch: i64) -> Tensor {
        self.model.batched(images_u8, batch, |x| {
            self.model.forward_t(x, false).softmax(-1, Kind::Float)
        })
    }

    /// Logits `[N, K]`.
    pub fn logits(&self, images_u8: &Tensor, batch: i64) -> Tensor {
        self.model
            .batched(images_u8, batch, |x| self.model.forward_t(x, false))
    }

    /// Penultimate features `[N, feature_dim]`.
    pub fn features(&self, images_u8: &Tensor, batch: i64) -> Tensor {
        self.model
            .batched(images_u8, batch, |x| self.model.features_t(x, false))
    }
}
