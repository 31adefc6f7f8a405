//! `gan-train`: DCGAN, conditional GAN and WGAN-GP for rare classes, with exact resume, and
//! `gan-train generate` to sample image sets from a trained generator.

pub mod args;
mod classes;
pub mod cyclegan;
pub mod diffaug;
pub mod generate;
pub mod job;
mod output;
pub mod per_class;
mod plan;
pub mod train;

use clap::Parser;
use rebalance_core::cli::TrainByDefault;

pub use args::{CycleganArgs, GanLoss, MsCap, PerClassArgs, TrainArgs, Transition};
pub use diffaug::Aug;
pub use rebalance_nn::models::{Conditioning, GanKind};

#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    about = "Train a GAN on the rare classes of an ingested dataset (default: cgan on artifacts/dataset), \
             or generate images from a trained one (`gan-train generate`)."
)]
pub struct Cli {
    #[command(flatten)]
    pub args: TrainByDefault<TrainArgs, generate::GenerateArgs>,
}
