//! The classifiers: LeNet-5, a small CNN and a residual CNN, with a `features` layer for the
//! judge (the penultimate activations, used for the Fréchet distance in `filter`).

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// LeNet-5 (LeCun 1998): 32×32 input (28×28 is padded), tanh, average pooling, 84-unit F6.
    Lenet5,
    /// Two conv+conv+max-pool blocks (32, 64 filters) and a 128-unit dense layer, for small sets.
    SmallCnn,
    /// A residual CNN (stages of basic blocks with batch norm, global pooling) for 32–128 px colour data.
    Resnet,
}

/// Everything needed to rebuild a classifier (`config.json` beside `model.safetensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub contract_version: String,
    pub model: ModelKind,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub classes: Vec<String>,
    /// Width of the `features` layer.
    pub feature_dim: i64,
}

impl ClassifierConfig {
    pub fn new(
        model: ModelKind,
        channels: i64,
        height: i64,
        width: i64,
        classes: Vec<String>,
    ) -> Result<Self> {
        if channels != 1 && channels != 3 {
            bail!("images have {channels} channels; the classifiers take 1 or 3");
        }
        if height < 8 || width < 8 {
            bail!("images are {height}×{width}; the classifiers need at least 8×8");
        }
        if classes.len() < 2 {
            bail!(
                "a classifier needs at least 2 classes, the set has {}",
                classes.len()
            );
        }
        let feature_dim = match model {
            ModelKind::Lenet5 => 84,
            ModelKind::SmallCnn => 128,
            ModelKind::Resnet => {
                if height.min(width) >= 64 {
                    256
                } else {
                    128
                }
            }
        };
        Ok(Self {
            contract_version: rebalance_core::CONTRACT_VERSION.to_string(),
            model,
            channels,
            height,
            width,
            classes,
            feature_dim,
        })
    }

    pub fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }
}

/// u8 pixels `[N, C, H, W]` to the network input: floats in [-1, 1].
pub fn prepare(images_u8: &Tensor) -> Tensor {
    images_u8.to_kind(tch::Kind::Float) / 127.5 - 1.0
}

/// A classifier: `logits = head(features(x))`.
#[derive(Debug)]
pub struct Classifier {
    body: Body,
    head: nn::Linear,
    pub config: ClassifierConfig,
}

#[derive(Debug)]
enum Body {
    Lenet {
        c1: nn::Conv2D,
        c3: nn::Conv2D,
        c5: nn::Conv2D,
        f6: nn::Linear,
    },
    Small {
        convs: Vec<nn::Conv2D>,
        fc: nn::Linear,
    },
    Res {
        stem: nn::Conv2D,
        stem_bn: nn::BatchNorm,
        blocks: Vec<Block>,
    },
}

#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: nn::Path, cin: i64, cout: i64, stride: i64) -> Self {
        let c3 = |s| nn::ConvConfig {
            stride: s,
            padding: 1,
            bias: false,
            ..Default::default()
        };
        let shortcut = (stride != 1 || cin != cout).then(|| {
            (
                nn::conv2d(
                    &p / "short",
                    cin,
                    cout,
                    1,
                    nn::ConvConfig {
                        stride,
                        bias: false,
                        ..Default::default()
                    },
                ),
                nn::batch_norm2d(&p / "short_bn", cout, Default::default()),
            )
        });
        Self {
            conv1: nn::conv2d(&p / "conv1", cin, cout, 3, c3(stride)),
            bn1: nn::batch_norm2d(&p / "bn1", cout, Default::default()),
            conv2: nn::conv2d(&p / "conv2", cout, cout, 3, c3(1)),
            bn2: nn::batch_norm2d(&p / "bn2", cout, Default::default()),
            shortcut,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train);
        let s = match &self.shortcut {
            Some((c, bn)) => x.apply(c).apply_t(bn, train),
            None => x.shallow_clone(),
        };
        (y + s).relu()
    }
}

impl Classifier {
    pub fn new(p: &nn::Path, config: &ClassifierConfig) -> Self {
        let c = config.channels;
        let body = match config.model {
            ModelKind::Lenet5 => Body::Lenet {
                c1: nn::conv2d(p / "c1", c, 6, 5, Default::default()),
                c3: nn::conv2d(p / "c3", 6, 16, 5, Default::default()),
                c5: nn::conv2d(p / "c5", 16, 120, 5, Default::default()),
                f6: nn::linear(p / "f6", 120, 84, Default::default()),
            },
            ModelKind::SmallCnn => {
                let pad = nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                };
                let convs = [(c, 32), (32, 32), (32, 64), (64, 64)]
                    .iter()
                    .enumerate()
                    .map(|(i, &(a, b))| nn::conv2d(p / format!("conv{i}"), a, b, 3, pad))
                    .collect();
                let flat = 64 * (config.height / 4) * (config.width / 4);
                Body::Small {
                    convs,
                    fc: nn::linear(p / "fc", flat, 128, Default::default()),
                }
            }
            ModelKind::Resnet => {
                let mut widths = vec![(32, 1), (64, 2), (128, 2)];
                if config.feature_dim == 256 {
                    widths.push((256, 2));
                }
                let mut cin = 32;
                let blocks = widths
                    .iter()
                    .enumerate()
                    .map(|(i, &(w, s))| {
                        let b = Block::new(p / format!("block{i}"), cin, w, s);
                        cin = w;
                        b
                    })
                    .collect();
                Body::Res {
                    stem: nn::conv2d(
                        p / "stem",
                        c,
                        32,
                        3,
                        nn::ConvConfig {
                            padding: 1,
                            bias: false,
                            ..Default::default()
                        },
                    ),
                    stem_bn: nn::batch_norm2d(p / "stem_bn", 32, Default::default()),
                    blocks,
                }
            }
        };
        Self {
            body,
            head: nn::linear(
                p / "head",
                config.feature_dim,
                config.num_classes(),
                Default::default(),
            ),
            config: config.clone(),
        }
    }

    /// Penultimate activations `[N, feature_dim]` of prepared inputs.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.body {
            Body::Lenet { c1, c3, c5, f6 } => {
                let (h, w) = (self.config.height, self.config.width);
                let x = if h == 28 && w == 28 {
                    // LeCun's 28×28 digits sit centred in a 32×32 field of background (-1).
                    (x + 1.0).constant_pad_nd([2, 2, 2, 2]) - 1.0
                } else if h == 32 && w == 32 {
                    x.shallow_clone()
                } else {
                    x.upsample_bilinear2d([32, 32], false, None, None)
                };
                let pool = |t: Tensor| t.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
                let y = pool(x.apply(c1).tanh());
                let y = pool(y.apply(c3).tanh());
                let y = y.apply(c5).tanh().flatten(1, -1);
                y.apply(f6).tanh()
            }
            Body::Small { convs, fc } => {
                let mut y = x.shallow_clone();
                for (i, c) in convs.iter().enumerate() {
                    y = y.apply(c).relu();
                    if i % 2 == 1 {
                        y = y
                            .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
                            .dropout(0.25, train);
                    }
                }
                y.flatten(1, -1).apply(fc).relu()
            }
            Body::Res {
                stem,
                stem_bn,
                blocks,
            } => {
                let mut y = x.apply(stem).apply_t(stem_bn, train).relu();
                for b in blocks {
                    y = b.forward_t(&y, train);
                }
                y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
            }
        }
    }

    /// Run `f` on prepared batches of u8 images `[N, C, H, W]` (no grad) and concatenate.
    pub fn batched(&self, images_u8: &Tensor, batch: i64, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let n = images_u8.size()[0];
        let outs: Vec<Tensor> = (0..n)
            .step_by(batch.max(1) as usize)
            .map(|s| {
                let x = prepare(&images_u8.narrow(0, s, batch.min(n - s)));
                tch::no_grad(|| f(&x))
            })
            .collect();
        if outs.is_empty() {
            return Tensor::zeros([0], (tch::Kind::Float, images_u8.device()));
        }
        Tensor::cat(&outs, 0)
    }

    /// Class logits `[N, K]` of prepared inputs.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let f = self.features_t(x, train);
        let f = match self.config.model {
            ModelKind::SmallCnn | ModelKind::Resnet => f.dropout(0.3, train),
            ModelKind::Lenet5 => f,
        };
        f.apply(&self.head)
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Classifier::forward_t(self, xs, train)
    }
}
