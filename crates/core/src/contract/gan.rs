//! `gan-train`'s files: `config.json` (rebuilds G and D), `losses.csv`, and the manifest fields.

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Which GAN to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GanKind {
    /// Unconditional DCGAN, on one class or a pooled set of classes.
    Dcgan,
    /// Label-conditioned DCGAN: G embeds the label, D is a projection discriminator.
    Cgan,
    /// Conditional WGAN with gradient penalty (critic without batch norm).
    WganGp,
    /// Image-conditioned augmenter after DAGAN (Antoniou et al. 2017, "Data Augmentation
    /// Generative Adversarial Networks"): G(x, z) encodes a real image and decodes it with
    /// noise; D tells a real same-class pair (x, x') from (x, G(x, z)). Trained on the common
    /// classes, it is applied to each rare image, so rare classes borrow the common ones'
    /// within-class variation.
    Dagan,
    /// Unpaired class-to-class translation after CycleGAN (Zhu et al. 2017): two ResNet
    /// generators (A→B, B→A), two PatchGAN discriminators, least-squares loss, cycle and
    /// identity losses and a history pool. `generate` translates every training image of class
    /// A into class B, so the rare class B inherits the variety of a common class A.
    Cyclegan,
}

impl std::fmt::Display for GanKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            self.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
    }
}

impl GanKind {
    /// Label-conditioned: G embeds the label and D projects it.
    pub fn conditional(self) -> bool {
        matches!(self, GanKind::Cgan | GanKind::WganGp)
    }

    /// Class-to-class translation (CycleGAN): trained on two classes, no noise.
    pub fn translates(self) -> bool {
        self == GanKind::Cyclegan
    }

    /// Image-conditioned (DAGAN): G takes a real image of the class instead of a label.
    pub fn image_conditioned(self) -> bool {
        self == GanKind::Dagan
    }
}

/// How a label-conditioned G takes its label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// A label embedding concatenated to the noise (the cGAN of Mirza & Osindero 2014).
    #[default]
    Concat,
    /// Class-conditional batch norm: every batch norm of G takes a per-class scale and shift
    /// (de Vries et al. 2017; Miyato & Koyama 2018, SNGAN-projection, BigGAN).
    Cbn,
}

/// Everything needed to rebuild the networks (written as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    pub model: GanKind,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub z_dim: i64,
    pub g_width: i64,
    pub d_width: i64,
    pub embed_dim: i64,
    pub g_dropout: f64,
    /// A minibatch standard deviation channel in D after its first block.
    #[serde(default)]
    pub minibatch_std: bool,
    /// Spectral normalisation of D's convolutions and output layer (Miyato et al. 2018).
    #[serde(default)]
    pub spectral_norm: bool,
    /// How G takes the label (label-conditioned models).
    #[serde(default)]
    pub conditioning: Conditioning,
    /// All classes of the dataset (label i = classes[i]).
    pub classes: Vec<String>,
    /// The labels the GAN was trained on.
    pub trained_classes: Vec<i64>,
}

impl GanConfig {
    /// Number of stride-2 stages and the starting side: 28 -> (2, 7), 32 -> (2, 8), 64 -> (3, 8).
    pub fn stages(&self) -> Result<(i64, i64)> {
        if self.height != self.width {
            bail!(
                "images are {}x{}; the GANs need square images (ingest --size N)",
                self.height,
                self.width
            );
        }
        let (mut s, mut k) = (self.height, 0);
        while s > 8 && s % 2 == 0 {
            s /= 2;
            k += 1;
        }
        if k == 0 || s < 3 {
            bail!(
                "image side {} is not supported; use 28, 32, 64 or 128 (ingest --size N)",
                self.height
            );
        }
        Ok((k, s))
    }

    /// A short description of the architecture, for mismatch messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {}x{}x{}, z {}, G width {}, D width {}{}{}{}, {} classes",
            self.model,
            self.channels,
            self.height,
            self.width,
            self.z_dim,
            self.g_width,
            self.d_width,
            if self.minibatch_std {
                " + minibatch std"
            } else {
                ""
            },
            if self.spectral_norm {
                " + spectral norm"
            } else {
                ""
            },
            if self.conditioning == Conditioning::Cbn {
                ", conditional batch norm"
            } else {
                ""
            },
            self.classes.len()
        )
    }

    /// True when weights of `other` fit these networks.
    pub fn same_architecture(&self, other: &GanConfig) -> bool {
        (
            self.model,
            self.channels,
            self.height,
            self.width,
            self.z_dim,
            self.g_width,
            self.d_width,
            self.embed_dim,
            self.classes.len(),
            self.minibatch_std,
            self.spectral_norm,
            self.conditioning,
        ) == (
            other.model,
            other.channels,
            other.height,
            other.width,
            other.z_dim,
            other.g_width,
            other.d_width,
            other.embed_dim,
            other.classes.len(),
            other.minibatch_std,
            other.spectral_norm,
            other.conditioning,
        )
    }
}

/// A row of `losses.csv`: one log step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossRow {
    pub step: u64,
    pub d_loss_real: f64,
    pub d_loss_fake: f64,
    pub g_loss: f64,
    pub d_acc_real: f64,
    pub d_acc_fake: f64,
    pub gp: f64,
    pub images_per_s: f64,
}

/// A row of a cyclegan's `cycle.csv`: its reconstruction and identity errors at one log step
/// (mean absolute pixel error in [-1, 1] units).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleRow {
    pub step: u64,
    /// ‖G_BA(G_AB(a)) − a‖₁
    pub cycle_a: f64,
    /// ‖G_AB(G_BA(b)) − b‖₁
    pub cycle_b: f64,
    /// ‖G_BA(a) − a‖₁
    pub identity_a: f64,
    /// ‖G_AB(b) − b‖₁
    pub identity_b: f64,
}

/// The fields `gan-train` adds to `gan/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanInfo {
    pub config: GanConfig,
    /// Names of the classes the GAN was trained on.
    pub trained_classes: Vec<String>,
}

/// `gan/classes.json`: a `--per-class-gans` output, one GAN per class in `classes/<class>/`
/// (each a complete single-class gan-train output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerClassGans {
    pub model: GanKind,
    /// The classes, each with its own generator, in training order.
    pub classes: Vec<String>,
}

/// `gan/manifest.json` metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GanMetrics {
    /// Steps trained in all (a resumed run counts the steps before it).
    pub steps: u64,
    pub steps_this_run: u64,
    /// Seconds inside training steps, this run.
    pub train_s: f64,
    /// Real images through D per second, this run (absent when no step ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    /// The last `losses.csv` row.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub last: Option<LossRow>,
}

/// The fields `gan-train generate` adds to `generated/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateInfo {
    /// Images generated per class name.
    pub counts: std::collections::BTreeMap<String, usize>,
    pub model: GanKind,
}

/// `generated/manifest.json` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateMetrics {
    pub n_images: usize,
}
