//! The GANs' generator and discriminator, sized from the image shape, as [`Seq`] layer lists.

use anyhow::Result;
pub use rebalance_core::contract::gan::{GanConfig, GanKind};
use tch::{nn, nn::Module, Kind, Tensor};

use super::layers::{format_summary, probe, Op, Seq, SummaryRow};
use super::Network;

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
    pub fn new(p: nn::Path, cfg: &GanConfig) -> Result<Self> {
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
        let mut body = Seq::new();
        let fc = nn::linear(&p / "fc", z_in, ch(0) * s0 * s0, Default::default());
        body.push("fc", Op::Linear(fc))
            .push("reshape", Op::Reshape(vec![-1, ch(0), s0, s0]))
            .push(
                "bn0",
                Op::Bn(nn::batch_norm2d(&p / "bn0", ch(0), Default::default())),
            )
            .push("relu0", Op::Relu);
        for i in 1..k {
            let up = nn::conv_transpose2d(&p / format!("up{i}"), ch(i - 1), ch(i), 4, conv);
            let bn = nn::batch_norm2d(&p / format!("bn{i}"), ch(i), Default::default());
            body.push(format!("up{i}"), Op::ConvT(up))
                .push(format!("bn{i}"), Op::Bn(bn))
                .push(format!("relu{i}"), Op::Relu);
            if cfg.g_dropout > 0.0 {
                body.push(format!("drop{i}"), Op::Dropout(cfg.g_dropout));
            }
        }
        let out = nn::conv_transpose2d(&p / "out", ch(k - 1), cfg.channels, 4, conv);
        body.push("out", Op::ConvT(out)).push("tanh", Op::Tanh);
        Ok(Self { body, embed, z_in })
    }

    pub fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let input = match &self.embed {
            Some(e) => Tensor::cat(&[z.shallow_clone(), e.forward(labels)], 1),
            None => z.shallow_clone(),
        };
        self.body.forward_t(&input, train)
    }
}

impl Network for Generator {
    fn summary(&self, device: tch::Device) -> String {
        let mut rows = Vec::new();
        if let Some(e) = &self.embed {
            rows.push(SummaryRow {
                name: "embed".into(),
                kind: "Embedding (concat to z)".into(),
                shape: vec![-1, e.ws.size()[1]],
                params: e.ws.numel() as i64,
            });
        }
        rows.extend(self.body.summary_rows(&probe(&[self.z_in], device)));
        format_summary("Generator", &[self.z_in], &rows)
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
    pub fn new(p: nn::Path, cfg: &GanConfig) -> Result<Self> {
        let (k, s0) = cfg.stages()?;
        let (ws, bs) = dcgan_init();
        let conv = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ws_init: ws,
            bs_init: bs,
            ..Default::default()
        };
        let batch_norm = cfg.model != GanKind::WganGp; // the gradient penalty is per sample
        let mut body = Seq::new();
        let mut c_in = cfg.channels;
        for i in 0..k {
            let c_out = cfg.d_width << i;
            let c = nn::conv2d(&p / format!("conv{i}"), c_in, c_out, 4, conv);
            body.push(format!("conv{i}"), Op::Conv(c));
            if i > 0 && batch_norm {
                let bn = nn::batch_norm2d(&p / format!("bn{i}"), c_out, Default::default());
                body.push(format!("bn{i}"), Op::Bn(bn));
            }
            body.push(format!("lrelu{i}"), Op::LeakyRelu);
            c_in = c_out;
            // After the first block, where the batch's variety is still visible in the features.
            if i == 0 && cfg.minibatch_std {
                body.push("mbstd", Op::MinibatchStd);
                c_in += 1;
            }
        }
        body.push("flatten", Op::Flatten);
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
            body,
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
}

impl Network for Discriminator {
    fn summary(&self, device: tch::Device) -> String {
        let mut rows = self.body.summary_rows(&probe(&self.input, device));
        rows.push(SummaryRow {
            name: "out".into(),
            kind: "Linear".into(),
            shape: vec![-1, 1],
            params: self.out.ws.numel() as i64 + 1,
        });
        if let Some(e) = &self.embed {
            rows.push(SummaryRow {
                name: "embed".into(),
                kind: "Embedding (projection)".into(),
                shape: vec![-1, 1],
                params: e.ws.numel() as i64,
            });
        }
        format_summary("Discriminator", &self.input, &rows)
    }
}
