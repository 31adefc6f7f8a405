//! `classify`: train and evaluate an image classifier on the contract's image sets (K seeds,
//! early stopping on val, evaluation on the real test split only), and compare several runs
//! (`classify compare`). The networks live in `rebalance_nn::models`.

pub mod candidates;
pub mod compare;
pub mod job;
pub mod recipe;
pub mod sampler;
pub mod synthetic;
pub mod train;

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser};
use rebalance_core::cli::TrainByDefault;
use rebalance_core::contract::classify::{Loss, OnlineAugment, Sampler, SyntheticLabels};
use rebalance_core::CommonArgs;
use rebalance_nn::transforms::{parse_elastic, AffineRanges, Elastic};
use serde::Serialize;

pub use rebalance_core::contract::classify::Metrics;
pub use rebalance_core::stats::mean_std;
pub use rebalance_nn::models::{Classifier, ClassifierConfig, ClassifierKind};

#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    about = "Train and evaluate an image classifier (default: LeNet-5 on artifacts/augmented/train.safetensors, \
             evaluated on the real test split of artifacts/dataset), or compare several runs (`classify compare`)."
)]
pub struct Cli {
    #[command(flatten)]
    pub args: TrainByDefault<TrainArgs, compare::CompareArgs>,
}

/// Training options.
#[derive(Debug, Clone, ClapArgs, Serialize)]
pub struct TrainArgs {
    /// Training image set [default: <artifacts>/augmented/train.safetensors; for the judge, pass
    /// <artifacts>/dataset/train.safetensors].
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Folder with the real val.safetensors (early stopping) and test.safetensors (evaluation)
    /// [default: <artifacts>/dataset].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder [default: <artifacts>/classify].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Network.
    #[arg(long, value_enum, default_value_t = ClassifierKind::Lenet5)]
    pub model: ClassifierKind,
    /// Training epochs (at most; see --patience).
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight the loss by inverse class frequency (the cost-sensitive baseline).
    #[arg(long)]
    pub class_weighted: bool,
    /// A named recipe: real, balanced, class-weighted, classical, online, affine, flip-shift,
    /// trivial, online-la, online-mixup (README, "Training recipes and the bar"). It sets --augment, --sampler, --loss,
    /// --mixup and --class-weighted; those given as well win. Its pool is --train.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["candidates", "recipe_from"])]
    pub recipe: Option<String>,
    /// Train every named recipe (each on its own pool: `classical` on --classical-train, the
    /// others on --train), with the same seeds, and choose the best by mean val macro-F1. The
    /// folder's top-level outputs are the chosen recipe's; recipes.json lists every candidate's
    /// val and test results, recipes/<name>/ holds each one's outputs.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...", conflicts_with_all = ["augment", "sampler", "loss", "mixup", "class_weighted"])]
    pub candidates: Vec<String>,
    /// The static classical copies (augment --strategy classical) the `classical` candidate trains on.
    #[arg(long, value_name = "FILE")]
    pub classical_train: Option<PathBuf>,
    /// Train as the recipe that `classify --candidates` chose in DIR (its recipes.json): the
    /// same transform, sampler and loss, on --train. The given flags win.
    #[arg(long, value_name = "DIR", conflicts_with = "candidates")]
    pub recipe_from: Option<PathBuf>,
    /// Training-time augmentation, drawn afresh for every image of every batch, on the device
    /// [default: none].
    #[arg(long, value_enum)]
    pub augment: Option<OnlineAugment>,
    #[command(flatten)]
    pub affine: AffineRanges,
    /// The elastic distortion of --augment affine+elastic, `ALPHA,SIGMA` in pixels (Simard et al. 2003).
    #[arg(long, value_name = "ALPHA,SIGMA", default_value = "34,4", value_parser = parse_elastic)]
    pub elastic: Elastic,
    /// --augment flip-shift: the largest shift, as a fraction of the side (whole pixels).
    #[arg(long, default_value_t = 0.125)]
    pub max_shift: f64,
    /// How each epoch's draws are picked [default: uniform].
    #[arg(long, value_enum)]
    pub sampler: Option<Sampler>,
    /// Draws per epoch [default: the training set's size for uniform sampling (one pass);
    /// classes × the largest class's count for class-balanced and sqrt].
    #[arg(long, value_name = "N")]
    pub epoch_size: Option<usize>,
    /// The training loss [default: ce].
    #[arg(long, value_enum)]
    pub loss: Option<Loss>,
    /// τ of --loss logit-adjusted.
    #[arg(long, default_value_t = 1.0)]
    pub tau: f64,
    /// Mixup (Zhang et al. 2018) inside each batch with λ ~ Beta(α, α); 0 is off [default: 0].
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    /// Synthetic images (an image set, such as filter's kept.safetensors), added to those the
    /// training set itself marks synthetic (its `source` tensor, as augment writes it).
    #[arg(long, value_name = "FILE")]
    pub synthetic: Option<PathBuf>,
    /// Synthetic images as a capped share of their classes' draws: the sampler draws from the
    /// real images, and a draw of a class that has synthetic images takes one of them with
    /// probability S instead. Without it, every image of the training set is one pool.
    #[arg(long, value_name = "S")]
    pub synthetic_share: Option<f64>,
    /// The largest --synthetic-share: 0.5 keeps synthetic draws at most as many as real ones.
    #[arg(long, default_value_t = 0.5, value_name = "S")]
    pub synthetic_max_share: f64,
    /// Loss weight of synthetic draws.
    #[arg(long, default_value_t = 1.0)]
    pub synthetic_weight: f64,
    /// The first epoch (1-based) whose draws may be synthetic (deferred, as LDAM-DRW defers
    /// its re-weighting).
    #[arg(long, default_value_t = 1, value_name = "E")]
    pub synthetic_from_epoch: usize,
    /// Targets of synthetic draws: the generator's label (hard) or the teacher's softmax
    /// (soft: the mean over the teacher's seeds, at --temperature).
    #[arg(long, value_enum, default_value_t = SyntheticLabels::Hard)]
    pub synthetic_labels: SyntheticLabels,
    /// The teacher of soft labels: a classify folder; when it chose a recipe, the chosen
    /// recipe's seeds [default: the --recipe-from folder].
    #[arg(long, value_name = "DIR")]
    pub teacher: Option<PathBuf>,
    /// Softmax temperature of soft labels.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Stop after this many epochs without a better val macro-F1 and keep the best epoch's
    /// weights; 0 trains every epoch and keeps the last.
    #[arg(long, default_value_t = 10)]
    pub patience: usize,
    /// Train K times with seeds seed, seed+1, …; metrics are reported as mean ± std.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Train only the I-th (0-based) of the --seeds seeds, into the work folder beside --out,
    /// and write no outputs: one task of a job array (`pipeline --executor slurm` passes
    /// `$SLURM_ARRAY_TASK_ID`). `--merge-seeds` with the same flags then writes the outputs.
    #[arg(long, value_name = "I", conflicts_with = "merge_seeds")]
    #[serde(skip)]
    pub seed_task: Option<u64>,
    /// Write the outputs from the seeds that `--seed-task` runs trained; every seed must have
    /// finished with these same flags and inputs. The result equals one run with --seeds.
    #[arg(long)]
    #[serde(skip)]
    pub merge_seeds: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}
