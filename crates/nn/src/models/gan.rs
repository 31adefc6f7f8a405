//! The GANs' generator and discriminator, sized from the image shape, as [`Seq`] layer lists.

use anyhow::Result;
pub use rebalance_core::contract::gan::{Conditioning, GanConfig, GanKind};
use tch::{nn, nn::Module, Kind, Tensor};

use super::layers::{
    format_summary, probe, CondBatchNorm, ConvT, Op, Seq, SpectralNorm, SummaryRow,
};
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

/// A stride-2, 4×4 convolution that halves the side (D and DAGAN's encoder), DCGAN-initialised.
fn down_conv() -> nn::ConvConfig {
    let (ws, bs) = dcgan_init();
    nn::ConvConfig {
        stride: 2,
        padding: 1,
        ws_init: ws,
        bs_init: bs,
        ..Default::default()
    }
}

pub struct Generator {
    /// Noise (and label embedding) to the first feature map.
    head: Seq,
    /// DAGAN: the conditioning image down to a feature map of the head's size.
    encoder: Option<Seq>,
    /// The feature map (with the encoder's concatenated) up to the image.
    body: Seq,
    embed: Option<nn::Embedding>,
    z_in: i64,
    image: Vec<i64>,
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
        let cbn = cfg.model.conditional() && cfg.conditioning == Conditioning::Cbn;
        let embed = (cfg.model.conditional() && !cbn).then(|| {
            nn::embedding(
                &p / "embed",
                cfg.classes.len() as i64,
                cfg.embed_dim,
                Default::default(),
            )
        });
        let n_classes = cfg.classes.len() as i64;
        // G's batch norms: class-conditional ones under `--conditioning cbn`.
        let bn = |name: String, c: i64| {
            if cbn {
                Op::CondBn(CondBatchNorm::new(&p / name, c, n_classes))
            } else {
                Op::Bn(nn::batch_norm2d(&p / name, c, Default::default()))
            }
        };
        let z_in = cfg.z_dim + if embed.is_some() { cfg.embed_dim } else { 0 };
        let mut head = Seq::new();
        let fc = nn::linear(&p / "fc", z_in, ch(0) * s0 * s0, Default::default());
        head.push("fc", Op::Linear(fc))
            .push("reshape", Op::Reshape(vec![-1, ch(0), s0, s0]));
        let encoder = cfg
            .model
            .image_conditioned()
            .then(|| image_encoder(&p / "enc", cfg, k));
        let c0 = ch(0) * if encoder.is_some() { 2 } else { 1 };
        let mut body = Seq::new();
        body.push("bn0", bn("bn0".into(), c0))
            .push("relu0", Op::Relu);
        for i in 1..k {
            let c_in = if i == 1 { c0 } else { ch(i - 1) };
            let up = ConvT::new(&p / format!("up{i}"), c_in, ch(i), 4, conv);
            body.push(format!("up{i}"), Op::ConvT(up))
                .push(format!("bn{i}"), bn(format!("bn{i}"), ch(i)))
                .push(format!("relu{i}"), Op::Relu);
            if cfg.g_dropout > 0.0 {
                body.push(format!("drop{i}"), Op::Dropout(cfg.g_dropout));
            }
        }
        let c_last = if k == 1 { c0 } else { ch(k - 1) };
        let out = ConvT::new(&p / "out", c_last, cfg.channels, 4, conv);
        body.push("out", Op::ConvT(out)).push("tanh", Op::Tanh);
        Ok(Self {
            head,
            encoder,
            body,
            embed,
            z_in,
            image: vec![cfg.channels, cfg.height, cfg.width],
        })
    }

    /// Images from noise and labels (label models; the label is ignored by dcgan).
    pub fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        self.forward_scaled(z, labels, 1.0, train)
    }

    /// As [`Self::forward_t`], with the label embedding multiplied by `cond`: transitional
    /// conditioning fades it in from 0 (unconditional) to 1.
    pub fn forward_scaled(&self, z: &Tensor, labels: &Tensor, cond: f64, train: bool) -> Tensor {
        let input = match &self.embed {
            Some(e) => Tensor::cat(&[z.shallow_clone(), e.forward(labels) * cond], 1),
            None => z.shallow_clone(),
        };
        let h = self.head.forward_t(&input, train);
        self.body.forward_labelled(&h, labels, cond, train)
    }

    /// DAGAN: variations of the real images `x` (in [-1, 1]) drawn by the noise `z`.
    pub fn forward_image(&self, x: &Tensor, z: &Tensor, train: bool) -> Tensor {
        let h = self.head.forward_t(z, train);
        let h = match &self.encoder {
            Some(enc) => Tensor::cat(&[h, enc.forward_t(x, train)], 1),
            None => h,
        };
        self.body.forward_t(&h, train)
    }
}

/// DAGAN's encoder: stride-2 convolutions mirroring G's up-sampling, ending at G's first
/// feature map (channels and side).
fn image_encoder(p: nn::Path, cfg: &GanConfig, k: i64) -> Seq {
    let conv = down_conv();
    let mut enc = Seq::new();
    let mut c_in = cfg.channels;
    // Stage i halves the side; the last stage lands on G's first map, side s0.
    for i in 0..k {
        let c_out = cfg.g_width << i;
        let c = nn::conv2d(&p / format!("conv{i}"), c_in, c_out, 4, conv);
        enc.push(format!("enc_conv{i}"), Op::Conv(c));
        if i > 0 {
            let bn = nn::batch_norm2d(&p / format!("bn{i}"), c_out, Default::default());
            enc.push(format!("enc_bn{i}"), Op::Bn(bn));
        }
        enc.push(format!("enc_lrelu{i}"), Op::LeakyRelu);
        c_in = c_out;
    }
    enc
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
        let z = probe(&[self.z_in], device);
        rows.extend(self.head.summary_rows(&z));
        let mut h = self.head.forward_t(&z, false);
        if let Some(enc) = &self.encoder {
            let x = probe(&self.image, device);
            rows.extend(enc.summary_rows(&x));
            h = Tensor::cat(&[h, enc.forward_t(&x, false)], 1);
        }
        rows.extend(self.body.summary_rows(&h));
        format_summary("Generator", &[self.z_in], &rows)
    }
}

pub struct Discriminator {
    body: Seq,
    out: Op,
    /// Projection discriminator: logit += <embed(y), features>.
    embed: Option<nn::Embedding>,
    input: Vec<i64>,
}

impl Discriminator {
    pub fn new(p: nn::Path, cfg: &GanConfig) -> Result<Self> {
        let (k, s0) = cfg.stages()?;
        let conv = down_conv();
        let batch_norm = cfg.model != GanKind::WganGp; // the gradient penalty is per sample
        let mut body = Seq::new();
        // DAGAN's D sees a pair: the conditioning image and a real or generated partner.
        let pair = if cfg.model.image_conditioned() { 2 } else { 1 };
        let mut c_in = cfg.channels * pair;
        let input = vec![c_in, cfg.height, cfg.width];
        for i in 0..k {
            let c_out = cfg.d_width << i;
            let name = format!("conv{i}");
            let c = if cfg.spectral_norm {
                Op::SpectralNorm(SpectralNorm::conv(&p / &name, c_in, c_out, 4, 2, 1))
            } else {
                Op::Conv(nn::conv2d(&p / &name, c_in, c_out, 4, conv))
            };
            body.push(name, c);
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
        let out = if cfg.spectral_norm {
            Op::SpectralNorm(SpectralNorm::linear(&p / "out", feat, 1))
        } else {
            Op::Linear(nn::linear(&p / "out", feat, 1, Default::default()))
        };
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
            input,
        })
    }

    /// Logits `[N]`.
    pub fn forward_t(&self, x: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        self.forward_scaled(x, labels, 1.0, train)
    }

    /// As [`Self::forward_t`], with the projection term multiplied by `cond` (transitional
    /// conditioning: 0 is an unconditional D).
    pub fn forward_scaled(&self, x: &Tensor, labels: &Tensor, cond: f64, train: bool) -> Tensor {
        let h = self.body.forward_t(x, train);
        let o = self.out.forward_t(&h, train).squeeze_dim(-1);
        match &self.embed {
            Some(e) if cond != 0.0 => {
                o + (e.forward(labels) * &h).sum_dim_intlist(1, false, Kind::Float) * cond
            }
            _ => o,
        }
    }
}

impl Network for Discriminator {
    fn summary(&self, device: tch::Device) -> String {
        let mut rows = self.body.summary_rows(&probe(&self.input, device));
        let (kind, params) = self.out.describe();
        rows.push(SummaryRow {
            name: "out".into(),
            kind,
            shape: vec![-1, 1],
            params,
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
