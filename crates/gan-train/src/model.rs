//! Generator and discriminator, sized from the image shape, as named layer lists so that a
//! Keras-style summary can walk them.

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, nn::ModuleT, Kind, Tensor};

/// Which GAN to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Unconditional DCGAN, on one class or a pooled set of classes.
    Dcgan,
    /// Label-conditioned DCGAN: G embeds the label, D is a projection discriminator.
    Cgan,
    /// Conditional WGAN with gradient penalty (critic without batch norm).
    WganGp,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            self.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
    }
}

impl ModelKind {
    pub fn conditional(self) -> bool {
        self != ModelKind::Dcgan
    }
}

/// Everything needed to rebuild the networks (written as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    pub model: ModelKind,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub z_dim: i64,
    pub g_width: i64,
    pub d_width: i64,
    pub embed_dim: i64,
    pub g_dropout: f64,
    /// All classes of the dataset (label i = classes[i]).
    pub classes: Vec<String>,
    /// The labels the GAN was trained on.
    pub trained_classes: Vec<i64>,
}

impl NetConfig {
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
            "{} {}x{}x{}, z {}, G width {}, D width {}, {} classes",
            self.model,
            self.channels,
            self.height,
            self.width,
            self.z_dim,
            self.g_width,
            self.d_width,
            self.classes.len()
        )
    }

    /// True when weights of `other` fit these networks.
    pub fn same_architecture(&self, other: &NetConfig) -> bool {
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
        )
    }
}

/// One layer of a sequential stack.
enum Op {
    Linear(nn::Linear),
    Conv(nn::Conv2D),
    ConvT(nn::ConvTranspose2D),
    Bn(nn::BatchNorm),
    Relu,
    /// LeakyReLU(0.2), ATen's fused kernel.
    LeakyRelu,
    Tanh,
    Dropout(f64),
    Reshape(Vec<i64>),
    Flatten,
}

pub struct Seq {
    layers: Vec<(String, Op)>,
}

impl Seq {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |x, (_, op)| apply(op, &x, train))
    }

    /// Rows of (name, type, output shape, parameters) for an input of shape `[1, ...input]`.
    fn summary_rows(&self, input: &Tensor) -> Vec<(String, String, Vec<i64>, i64)> {
        let mut x = input.shallow_clone();
        let mut rows = Vec::new();
        tch::no_grad(|| {
            for (name, op) in &self.layers {
                x = apply(op, &x, false);
                let (kind, params) = match op {
                    Op::Linear(l) => (
                        "Linear",
                        l.ws.numel() + l.bs.as_ref().map_or(0, |b| b.numel()),
                    ),
                    Op::Conv(c) => (
                        "Conv2d",
                        c.ws.numel() + c.bs.as_ref().map_or(0, |b| b.numel()),
                    ),
                    Op::ConvT(c) => (
                        "ConvTranspose2d",
                        c.ws.numel() + c.bs.as_ref().map_or(0, |b| b.numel()),
                    ),
                    Op::Bn(b) => ("BatchNorm2d", b.ws.as_ref().map_or(0, |w| w.numel()) * 2),
                    Op::Relu => ("ReLU", 0),
                    Op::LeakyRelu => ("LeakyReLU(0.2)", 0),
                    Op::Tanh => ("Tanh", 0),
                    Op::Dropout(_) => ("Dropout", 0),
                    Op::Reshape(_) => ("Reshape", 0),
                    Op::Flatten => ("Flatten", 0),
                };
                let mut shape = x.size();
                shape[0] = -1;
                rows.push((name.clone(), kind.to_string(), shape, params as i64));
            }
        });
        rows
    }
}

fn apply(op: &Op, x: &Tensor, train: bool) -> Tensor {
    match op {
        Op::Linear(l) => l.forward(x),
        Op::Conv(c) => c.forward(x),
        Op::ConvT(c) => c.forward(x),
        Op::Bn(b) => b.forward_t(x, train),
        Op::Relu => x.relu(),
        Op::LeakyRelu => rebalance_nn::ops::leaky_relu(x, 0.2),
        Op::Tanh => x.tanh(),
        Op::Dropout(p) => x.dropout(*p, train),
        Op::Reshape(s) => x.reshape(s.as_slice()),
        Op::Flatten => x.flatten(1, -1),
    }
}

fn dcgan_init() -> (nn::Init, nn::Init) {
    (
        nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        nn::Init::Const(0.0),
    )
}

pub struct Generator {
    body: Seq,
    embed: Option<nn::Embedding>,
    z_in: i64,
}

impl Generator {
    pub fn new(p: nn::Path, cfg: &NetConfig) -> Result<Self> {
        let (k, s0) = cfg.stages()?;
        let (ws, bs) = dcgan_init();
        let conv = nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            ws_init: ws,
            bs_init: bs,
            ..Default::default()
        };
        let ch = |i: i64| cfg.g_width << (k - 1 - i); // channels after stage i
        let embed = cfg.model.conditional().then(|| {
            nn::embedding(
                &p / "embed",
                cfg.classes.len() as i64,
                cfg.embed_dim,
                Default::default(),
            )
        });
        let z_in = cfg.z_dim + if embed.is_some() { cfg.embed_dim } else { 0 };
        let mut layers = vec![
            (
                "fc".to_string(),
                Op::Linear(nn::linear(
                    &p / "fc",
                    z_in,
                    ch(0) * s0 * s0,
                    Default::default(),
                )),
            ),
            ("reshape".into(), Op::Reshape(vec![-1, ch(0), s0, s0])),
            (
                "bn0".into(),
                Op::Bn(nn::batch_norm2d(&p / "bn0", ch(0), Default::default())),
            ),
            ("relu0".into(), Op::Relu),
        ];
        for i in 1..k {
            layers.push((
                format!("up{i}"),
                Op::ConvT(nn::conv_transpose2d(
                    &p / format!("up{i}"),
                    ch(i - 1),
                    ch(i),
                    4,
                    conv,
                )),
            ));
            layers.push((
                format!("bn{i}"),
                Op::Bn(nn::batch_norm2d(
                    &p / format!("bn{i}"),
                    ch(i),
                    Default::default(),
                )),
            ));
            layers.push((format!("relu{i}"), Op::Relu));
            if cfg.g_dropout > 0.0 {
                layers.push((format!("drop{i}"), Op::Dropout(cfg.g_dropout)));
            }
        }
        layers.push((
            "out".into(),
            Op::ConvT(nn::conv_transpose2d(
                &p / "out",
                ch(k - 1),
                cfg.channels,
                4,
                conv,
            )),
        ));
        layers.push(("tanh".into(), Op::Tanh));
        Ok(Self {
            body: Seq { layers },
            embed,
            z_in,
        })
    }

    pub fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let input = match &self.embed {
            Some(e) => Tensor::cat(&[z.shallow_clone(), e.forward(labels)], 1),
            None => z.shallow_clone(),
        };
        self.body.forward_t(&input, train)
    }

    pub fn summary(&self, device: tch::Device) -> String {
        let mut rows = Vec::new();
        if let Some(e) = &self.embed {
            rows.push((
                "embed".into(),
                "Embedding (concat to z)".into(),
                vec![-1, e.ws.size()[1]],
                e.ws.numel() as i64,
            ));
        }
        rows.extend(
            self.body
                .summary_rows(&Tensor::zeros([2, self.z_in], (Kind::Float, device))),
        );
        format_summary("Generator", vec![-1, self.z_in], rows)
    }
}

pub struct Discriminator {
    body: Seq,
    out: nn::Linear,
    /// Projection discriminator: logit += <embed(y), features>.
    embed: Option<nn::Embedding>,
    input: Vec<i64>,
}

impl Discriminator {
    pub fn new(p: nn::Path, cfg: &NetConfig) -> Result<Self> {
        let (k, s0) = cfg.stages()?;
        let (ws, bs) = dcgan_init();
        let conv = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ws_init: ws,
            bs_init: bs,
            ..Default::default()
        };
        let batch_norm = cfg.model != ModelKind::WganGp; // the gradient penalty is per sample
        let mut layers = Vec::new();
        let mut c_in = cfg.channels;
        for i in 0..k {
            let c_out = cfg.d_width << i;
            layers.push((
                format!("conv{i}"),
                Op::Conv(nn::conv2d(&p / format!("conv{i}"), c_in, c_out, 4, conv)),
            ));
            if i > 0 && batch_norm {
                layers.push((
                    format!("bn{i}"),
                    Op::Bn(nn::batch_norm2d(
                        &p / format!("bn{i}"),
                        c_out,
                        Default::default(),
                    )),
                ));
            }
            layers.push((format!("lrelu{i}"), Op::LeakyRelu));
            c_in = c_out;
        }
        layers.push(("flatten".into(), Op::Flatten));
        let feat = c_in * s0 * s0;
        let out = nn::linear(&p / "out", feat, 1, Default::default());
        let embed = cfg.model.conditional().then(|| {
            nn::embedding(
                &p / "embed",
                cfg.classes.len() as i64,
                feat,
                nn::EmbeddingConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                    ..Default::default()
                },
            )
        });
        Ok(Self {
            body: Seq { layers },
            out,
            embed,
            input: vec![cfg.channels, cfg.height, cfg.width],
        })
    }

    /// Logits `[N]`.
    pub fn forward_t(&self, x: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let h = self.body.forward_t(x, train);
        let o = self.out.forward(&h).squeeze_dim(-1);
        match &self.embed {
            Some(e) => o + (e.forward(labels) * &h).sum_dim_intlist(1, false, Kind::Float),
            None => o,
        }
    }

    pub fn summary(&self, device: tch::Device) -> String {
        let mut shape = vec![2];
        shape.extend(&self.input);
        let mut rows = self
            .body
            .summary_rows(&Tensor::zeros(shape.as_slice(), (Kind::Float, device)));
        rows.push((
            "out".into(),
            "Linear".into(),
            vec![-1, 1],
            self.out.ws.numel() as i64 + 1,
        ));
        if let Some(e) = &self.embed {
            rows.push((
                "embed".into(),
                "Embedding (projection)".into(),
                vec![-1, 1],
                e.ws.numel() as i64,
            ));
        }
        let mut input = vec![-1];
        input.extend(&self.input);
        format_summary("Discriminator", input, rows)
    }
}

fn format_summary(
    title: &str,
    input: Vec<i64>,
    rows: Vec<(String, String, Vec<i64>, i64)>,
) -> String {
    let shape = |s: &[i64]| {
        format!(
            "({})",
            s.iter()
                .map(|d| if *d < 0 { "N".into() } else { d.to_string() })
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut s = format!("{title}: input {}\n", shape(&input));
    s += &format!(
        "  {:<10} {:<24} {:<20} {:>10}\n",
        "layer", "type", "output shape", "params"
    );
    let mut total = 0;
    for (name, kind, out, params) in &rows {
        s += &format!(
            "  {:<10} {:<24} {:<20} {:>10}\n",
            name,
            kind,
            shape(out),
            params
        );
        total += params;
    }
    s += &format!("  total parameters: {total}\n");
    s
}
