//! The classifiers: LeNet-5, a small CNN and a residual CNN, each a [`Backbone`] that builds a
//! [`Seq`] of features, with one linear head. The `features` (penultimate activations) are what
//! the judge measures Fréchet distances in.

pub use rebalance_core::contract::classify::{ClassifierConfig, ClassifierKind};
use tch::{nn, Tensor};

use super::layers::{format_summary, probe, Op, ResidualBlock, Seq, SummaryRow};
use super::Network;

/// The architecture behind a name.
pub fn backbone(kind: ClassifierKind) -> &'static dyn Backbone {
    match kind {
        ClassifierKind::Lenet5 => &Lenet5,
        ClassifierKind::SmallCnn => &SmallCnn,
        ClassifierKind::Resnet => &Resnet,
    }
}

/// The common face of the classifier architectures.
pub trait Backbone: Sync {
    /// Dropout between the features and the head while training.
    fn head_dropout(&self) -> f64 {
        0.0
    }
    /// The feature layers, input `[N, C, H, W]` in [−1, 1], output `[N, cfg.feature_dim]`.
    fn build(&self, p: &nn::Path, cfg: &ClassifierConfig) -> Seq;
}

/// LeNet-5: C1 (6@5×5) → pool → C3 (16@5×5) → pool → C5 (120@5×5) → F6 (84), all tanh.
pub struct Lenet5;

impl Backbone for Lenet5 {
    fn build(&self, p: &nn::Path, cfg: &ClassifierConfig) -> Seq {
        let c = cfg.channels;
        let mut s = Seq::new();
        match (cfg.height, cfg.width) {
            // LeCun's 28×28 digits sit centred in a 32×32 field of background.
            (28, 28) => {
                s.push("pad", Op::PadBackground(2));
            }
            (32, 32) => {}
            _ => {
                s.push("resize", Op::Resize(32));
            }
        }
        s.push(
            "c1",
            Op::Conv(nn::conv2d(p / "c1", c, 6, 5, Default::default())),
        )
        .push("tanh1", Op::Tanh)
        .push("s2", Op::AvgPool2)
        .push(
            "c3",
            Op::Conv(nn::conv2d(p / "c3", 6, 16, 5, Default::default())),
        )
        .push("tanh3", Op::Tanh)
        .push("s4", Op::AvgPool2)
        .push(
            "c5",
            Op::Conv(nn::conv2d(p / "c5", 16, 120, 5, Default::default())),
        )
        .push("tanh5", Op::Tanh)
        .push("flatten", Op::Flatten)
        .push(
            "f6",
            Op::Linear(nn::linear(p / "f6", 120, 84, Default::default())),
        )
        .push("tanh6", Op::Tanh);
        s
    }
}

/// Two blocks of conv-conv-max-pool-dropout (32, then 64 filters) and a 128-unit dense layer.
pub struct SmallCnn;

impl Backbone for SmallCnn {
    fn head_dropout(&self) -> f64 {
        0.3
    }

    fn build(&self, p: &nn::Path, cfg: &ClassifierConfig) -> Seq {
        let pad = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut s = Seq::new();
        for (i, &(a, b)) in [(cfg.channels, 32), (32, 32), (32, 64), (64, 64)]
            .iter()
            .enumerate()
        {
            let conv = nn::conv2d(p / format!("conv{i}"), a, b, 3, pad);
            s.push(format!("conv{i}"), Op::Conv(conv))
                .push(format!("relu{i}"), Op::Relu);
            if i % 2 == 1 {
                s.push(format!("pool{i}"), Op::MaxPool2)
                    .push(format!("drop{i}"), Op::Dropout(0.25));
            }
        }
        let flat = 64 * (cfg.height / 4) * (cfg.width / 4);
        s.push("flatten", Op::Flatten)
            .push(
                "fc",
                Op::Linear(nn::linear(p / "fc", flat, 128, Default::default())),
            )
            .push("relu_fc", Op::Relu);
        s
    }
}

/// A residual CNN: a 3×3 stem, basic blocks of 32, 64, 128 (and 256 from 64 px) channels,
/// global average pooling.
pub struct Resnet;

impl Backbone for Resnet {
    fn head_dropout(&self) -> f64 {
        0.3
    }

    fn build(&self, p: &nn::Path, cfg: &ClassifierConfig) -> Seq {
        let mut widths = vec![(32, 1), (64, 2), (128, 2)];
        if cfg.feature_dim == 256 {
            widths.push((256, 2));
        }
        // The blocks are made before the stem: the order variables are created in fixes their
        // initial values for a seed, and saved models were made in this order.
        let mut cin = 32;
        let blocks: Vec<ResidualBlock> = widths
            .iter()
            .enumerate()
            .map(|(i, &(w, stride))| {
                let b = ResidualBlock::new(p / format!("block{i}"), cin, w, stride);
                cin = w;
                b
            })
            .collect();
        let stem_cfg = nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        let mut s = Seq::new();
        s.push(
            "stem",
            Op::Conv(nn::conv2d(p / "stem", cfg.channels, 32, 3, stem_cfg)),
        )
        .push(
            "stem_bn",
            Op::Bn(nn::batch_norm2d(p / "stem_bn", 32, Default::default())),
        )
        .push("stem_relu", Op::Relu);
        for (i, b) in blocks.into_iter().enumerate() {
            s.push(format!("block{i}"), Op::Residual(Box::new(b)));
        }
        s.push("pool", Op::GlobalAvgPool)
            .push("flatten", Op::Flatten);
        s
    }
}

/// A classifier: `logits = head(dropout(features(x)))`.
#[derive(Debug)]
pub struct Classifier {
    features: Seq,
    head_dropout: f64,
    head: nn::Linear,
    pub config: ClassifierConfig,
}

impl Classifier {
    pub fn new(p: &nn::Path, config: &ClassifierConfig) -> Self {
        let backbone = backbone(config.model);
        let features = backbone.build(p, config);
        Self {
            features,
            head_dropout: backbone.head_dropout(),
            head: nn::linear(
                p / "head",
                config.feature_dim,
                config.num_classes(),
                Default::default(),
            ),
            config: config.clone(),
        }
    }

    /// Penultimate activations `[N, feature_dim]` of inputs in [−1, 1].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features.forward_t(x, train)
    }

    /// Class logits `[N, K]` of inputs in [−1, 1].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let f = self.features_t(x, train);
        let f = if self.head_dropout > 0.0 {
            f.dropout(self.head_dropout, train)
        } else {
            f
        };
        f.apply(&self.head)
    }

    /// Run `f` on batches of u8 images `[N, C, H, W]` mapped to [−1, 1] (no grad), concatenated.
    pub fn batched(&self, images_u8: &Tensor, batch: i64, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let n = images_u8.size()[0];
        let outs: Vec<Tensor> = (0..n)
            .step_by(batch.max(1) as usize)
            .map(|s| {
                let x = crate::to_unit_range(&images_u8.narrow(0, s, batch.min(n - s)));
                tch::no_grad(|| f(&x))
            })
            .collect();
        if outs.is_empty() {
            return Tensor::zeros([0], (tch::Kind::Float, images_u8.device()));
        }
        Tensor::cat(&outs, 0)
    }
}

impl Network for Classifier {
    fn summary(&self, device: tch::Device) -> String {
        let c = &self.config;
        let mut rows = self
            .features
            .summary_rows(&probe(&[c.channels, c.height, c.width], device));
        rows.push(SummaryRow {
            name: "head".into(),
            kind: "Linear".into(),
            shape: vec![-1, c.num_classes()],
            params: c.feature_dim * c.num_classes() + c.num_classes(),
        });
        format_summary(
            &format!("Classifier ({})", c.model),
            &[c.channels, c.height, c.width],
            &rows,
        )
    }
}
