//! Every network of rebalance, in one idiom: a struct per architecture built from a [`Seq`] of
//! named layers, sharing the [`Network`] face (a Keras-style summary).
//!
//! - [`classifier`] — LeNet-5, a small CNN and a residual CNN (`classify`, and the judge);
//! - [`gan`] — the GANs' generator and discriminator (`gan-train`);
//! - [`judge`] — a trained classifier saved to and loaded from its folder (`filter`).

pub mod classifier;
pub mod cyclegan;
pub mod gan;
pub mod judge;
pub mod layers;

pub use classifier::{Classifier, ClassifierConfig, ClassifierKind};
pub use gan::{Conditioning, Discriminator, GanConfig, GanKind, Generator};
pub use judge::Judge;
pub use layers::{Op, Seq};

/// What every network can say about itself.
pub trait Network {
    /// A Keras-style table: each layer's name, type, output shape and parameter count.
    fn summary(&self, device: tch::Device) -> String;
}
