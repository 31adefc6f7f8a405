//! `gan-train`'s training flags: one struct, with the options of the per-class job array and
//! of cyclegan in their own flattened structs (same flag names). The job module decides
//! once which of them a run uses.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use rebalance_core::CommonArgs;
use rebalance_nn::models::{Conditioning, GanKind};
use serde::Serialize;

use crate::diffaug::Aug;

/// Training options.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct TrainArgs {
    /// Which GAN. `dagan` is image-conditioned (DAGAN, Antoniou et al. 2017): trained on pairs
    /// of the common classes (or of the classes named with --classes/--class/--minority),
    /// `generate` applies it to each real image of the rare classes.
    #[arg(long, value_enum, default_value_t = GanKind::Cgan)]
    pub model: GanKind,
    /// Training image set [default: <artifacts>/dataset/train.safetensors].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder [default: <artifacts>/gan].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train on one class (name).
    #[arg(long, conflicts_with_all = ["classes", "minority"])]
    pub class: Option<String>,
    /// Train on these classes (names, comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "minority")]
    pub classes: Vec<String>,
    /// Train on every class with fewer than N training images.
    #[arg(long)]
    pub minority: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    pub per_class: PerClassArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub cyclegan: CycleganArgs,
    /// Training steps (G updates).
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Generator learning rate (Adam).
    #[arg(long, default_value_t = 2e-4)]
    pub lr_g: f64,
    /// Discriminator / critic learning rate (Adam).
    #[arg(long, default_value_t = 2e-4)]
    pub lr_d: f64,
    /// Adam beta1 (0.5 is the DCGAN recipe).
    #[arg(long, default_value_t = 0.5)]
    pub beta1: f64,
    /// Adam beta2.
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// D (critic) steps per G step [default: 1; 5 for wgan-gp].
    #[arg(long)]
    pub d_steps: Option<u32>,
    /// Gradient penalty weight for wgan-gp.
    #[arg(long, default_value_t = 10.0)]
    pub gp_lambda: f64,
    /// Target for real images in D's loss (one-sided label smoothing; 1 disables).
    #[arg(long, default_value_t = 0.9)]
    pub label_smoothing: f64,
    /// Noise dimension.
    #[arg(long, default_value_t = 100)]
    pub z_dim: i64,
    /// Channels of G's last hidden layer (doubling towards the input).
    #[arg(long, default_value_t = 64)]
    pub g_width: i64,
    /// Channels of D's first layer (doubling with depth).
    #[arg(long, default_value_t = 64)]
    pub d_width: i64,
    /// Label embedding size fed to G with the noise (conditional models).
    #[arg(long, default_value_t = 50)]
    pub embed_dim: i64,
    /// Dropout after G's hidden up-sampling layers (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub g_dropout: f64,
    /// Add a minibatch standard deviation channel to D after its first block (Karras et al.
    /// 2018, ProGAN), so that D can tell a batch of near-identical samples from real data. Off
    /// by default: it costs about a fifth of the step's time, and the default's mode-seeking
    /// term alone keeps the samples varied (README, "The default generator").
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub minibatch_std: bool,
    /// Weight of the mode-seeking term (MSGAN, Mao et al. 2019, "Mode Seeking Generative
    /// Adversarial Networks for Diverse Image Synthesis"): G is penalised by |z1 − z2| /
    /// |G(z1) − G(z2)| for pairs of noise with the same label, the image distance capped at the
    /// real images' mean distance within the class (so it never pushes past real variety).
    /// On by default; 0 is the plain cgan, which replays one style per class.
    #[arg(long, default_value_t = 1.0)]
    pub mode_seeking: f64,
    /// Which real distance caps the mode-seeking term: `class` (the mean distance between two
    /// real images of the class) or `source` (dagan: the distance between the pair's source and
    /// its real partner, so variations of one image stay as close to it as a real partner is).
    #[arg(long, value_enum, default_value_t = MsCap::Class)]
    pub ms_cap: MsCap,
    /// How G takes the label: `concat` (an embedding concatenated to the noise) or `cbn`
    /// (class-conditional batch norm, de Vries et al. 2017).
    #[arg(long, value_enum, default_value_t = Conditioning::Concat)]
    pub conditioning: Conditioning,
    /// Learning-rate multiplier of the class terms (γ, β) of class-conditional batch norm: they
    /// start at 0, and at G's rate the label is learned too slowly to be kept.
    #[arg(long, default_value_t = 1.0, value_name = "M")]
    pub cbn_lr_mult: f64,
    /// Weight of an auxiliary-classifier term in G's loss (AC-GAN, Odena et al. 2017): the
    /// cross-entropy of the frozen judge (--judge) on G's images against their label, so G
    /// cannot drop the label. 0 = off.
    #[arg(long, default_value_t = 0.0, value_name = "W", requires = "judge")]
    pub ac_weight: f64,
    /// Train on real images transformed afresh every step, as classify's online augmentation
    /// (`affine`, `affine+elastic`, …, with augment's ranges): the GAN learns the augmented
    /// distribution. Unlike DiffAugment it changes the real data only. `none` = off.
    #[arg(long, value_enum, default_value_t = rebalance_nn::transforms::OnlineAugment::None)]
    pub real_augment: rebalance_nn::transforms::OnlineAugment,
    /// Spectral normalisation of D's convolutions and output layer (Miyato et al. 2018,
    /// "Spectral Normalization for Generative Adversarial Networks").
    #[arg(long)]
    pub spectral_norm: bool,
    /// D's and G's adversarial loss (bce or hinge, as in SAGAN/BigGAN); wgan-gp has its own.
    #[arg(long, value_enum, default_value_t = GanLoss::Bce)]
    pub loss: GanLoss,
    /// Transitional conditioning (Shahbazi et al. 2022, "Collapse by Conditioning: Training
    /// Class-conditional GANs with Limited Data"): START,END in steps. The label enters G and D
    /// scaled by 0 until START, rising linearly to 1 at END, so the GAN first learns the
    /// variation shared by all classes and then splits it by class.
    #[arg(long, value_parser = parse_transition)]
    pub transition: Option<Transition>,
    /// Warm G up for N steps before the adversarial steps (counted in --steps), matching the
    /// judge's penultimate features of real images per class (mean and standard deviation):
    /// the FER2013 study's perceptual warm-up. Needs --judge.
    #[arg(long, default_value_t = 0, requires = "judge")]
    pub warmup_steps: u64,
    /// The judge (a classify output folder) whose feature space the warm-up uses, and whose
    /// classifier the --ac-weight term asks.
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// DiffAugment ops applied to real and fake images before D (comma-separated; `none`).
    #[arg(long, value_delimiter = ',', default_value = "translation", value_parser = parse_aug)]
    pub diffaug: Vec<Option<Aug>>,
    /// Sample real batches class-balanced (conditional models), so rare classes are seen.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub balanced: bool,
    /// Decay of the EMA copy of G used for samples (0 disables EMA).
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    /// Log losses every N steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: u64,
    /// Write a sample grid every N steps.
    #[arg(long, default_value_t = 500)]
    pub sample_every: u64,
    /// Save a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Warn when D's loss stays below 0.01 for this many log steps in a row.
    #[arg(long, default_value_t = 5)]
    pub d_zero_patience: u32,
    /// End the run at the first failure (NaN/inf loss, D loss at 0, collapsed diversity),
    /// keeping the last good checkpoint.
    #[arg(long)]
    pub stop_on_failure: bool,
    /// Continue a run: `latest` (the interrupted run in the output folder, else the finished
    /// one) or a checkpoint path.
    #[arg(long)]
    pub resume: Option<String>,
    /// Start from the weights of an earlier run's checkpoint (step 0, fresh optimizer).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--per-class-gans` and the flags of its job-array tasks.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct PerClassArgs {
    /// dcgan: one GAN per class instead of one for all. Each of these classes (comma-separated)
    /// is trained on its own, as with --class, into <out>/classes/<class>/; `generate` draws
    /// each class from its own generator. Empty: one GAN.
    #[arg(long, value_delimiter = ',', value_name = "CLASSES")]
    pub per_class_gans: Vec<String>,
    /// With --per-class-gans: train only its I-th class (0-based) into the work folder beside
    /// --out, and write no outputs: one task of a job array (`pipeline --executor slurm` passes
    /// `$SLURM_ARRAY_TASK_ID`). `--merge-classes` with the same flags then writes the outputs.
    #[arg(long, value_name = "I", conflicts_with = "merge_classes")]
    #[serde(skip)]
    pub class_task: Option<u64>,
    /// With --per-class-gans: write the outputs from the classes that `--class-task` runs
    /// trained; each must have finished with these same flags and data.
    #[arg(long)]
    #[serde(skip)]
    pub merge_classes: bool,
}

/// cyclegan's options (`--model cyclegan`).
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct CycleganArgs {
    /// cyclegan: the class translated from, a common one whose pose, background and style
    /// variety the target inherits (`auto`: the class with the most training images).
    #[arg(long, default_value = "auto", value_name = "CLASS|auto")]
    pub from: String,
    /// cyclegan: the class translated into, a rare one (`auto`: the class with the fewest
    /// training images).
    #[arg(long, default_value = "auto", value_name = "CLASS|auto")]
    pub to: String,
    /// cyclegan: weight λ of the cycle-consistency loss ‖G_BA(G_AB(a)) − a‖₁ (both ways).
    #[arg(long, default_value_t = 10.0)]
    pub cycle_weight: f64,
    /// cyclegan: weight of the identity loss ‖G_AB(b) − b‖₁, as a fraction of λ (0.5 in the
    /// paper; 0 turns it off).
    #[arg(long, default_value_t = 0.5)]
    pub identity_weight: f64,
    /// cyclegan: generated images kept per discriminator to train it on a history of
    /// generators, not only the latest (Shrivastava et al. 2017); 0 turns the pool off.
    #[arg(long, default_value_t = 50)]
    pub pool_size: usize,
}

/// `--ms-cap`: the real distance that caps the mode-seeking term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MsCap {
    /// The mean distance between two real images of the class.
    Class,
    /// dagan: the distance between the source and its real partner.
    Source,
}

/// The adversarial loss of bce-trained models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GanLoss {
    /// Binary cross-entropy (the DCGAN loss; real targets smoothed by --label-smoothing).
    Bce,
    /// Hinge: D minimises relu(1 − D(x)) + relu(1 + D(G(z))), G minimises −D(G(z)).
    Hinge,
}

/// `--transition START,END`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub start: u64,
    pub end: u64,
}

impl Transition {
    /// The label's weight at `step`: 0 until START, 1 from END on, linear between.
    pub fn scale(&self, step: u64) -> f64 {
        if step <= self.start {
            0.0
        } else if step >= self.end {
            1.0
        } else {
            (step - self.start) as f64 / (self.end - self.start) as f64
        }
    }
}

pub(crate) fn parse_transition(s: &str) -> Result<Transition, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |p: &str| {
        p.parse::<u64>()
            .map_err(|_| format!("`{p}` is not a step number"))
    };
    match parts.as_slice() {
        [a, b] => {
            let t = Transition {
                start: num(a)?,
                end: num(b)?,
            };
            if t.end <= t.start {
                return Err(format!("END ({}) must be after START ({})", t.end, t.start));
            }
            Ok(t)
        }
        _ => Err(format!("`{s}` is not START,END (two step numbers)")),
    }
}

fn parse_aug(s: &str) -> Result<Option<Aug>, String> {
    if s == "none" {
        return Ok(None);
    }
    <Aug as clap::ValueEnum>::from_str(s, true)
        .map(Some)
        .map_err(|_| {
            format!("`{s}` is not a DiffAugment op; use color, translation, cutout or none")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_fades_the_label_in_linearly() {
        let t = parse_transition("100, 300").unwrap();
        let at = |s| t.scale(s);
        assert_eq!(
            (at(0), at(100), at(200), at(300), at(900)),
            (0.0, 0.0, 0.5, 1.0, 1.0)
        );
        assert!(parse_transition("3,3").is_err());
        assert!(parse_transition("a,4")
            .unwrap_err()
            .contains("`a` is not a step number"));
    }
}
