//! The one idiom every network here is written in: a list of named layers ([`Seq`]) that runs
//! in order and can describe itself as a Keras-style summary.

use tch::{nn, nn::Module, nn::ModuleT, Kind, Tensor};

/// One layer of a sequential stack.
#[derive(Debug)]
pub enum Op {
    Linear(nn::Linear),
    Conv(nn::Conv2D),
    ConvT(ConvT),
    Bn(nn::BatchNorm),
    Relu,
    /// LeakyReLU(0.2), ATen's fused kernel.
    LeakyRelu,
    Tanh,
    Dropout(f64),
    /// 2×2 average pooling, stride 2.
    AvgPool2,
    /// 2×2 max pooling, stride 2.
    MaxPool2,
    /// Global average pooling to 1×1.
    GlobalAvgPool,
    /// Pad every side by this many pixels of background (−1, black in the [−1, 1] range).
    PadBackground(i64),
    /// Bilinear resize to this square side.
    Resize(i64),
    /// A residual basic block (two 3×3 convolutions with batch norm, and a shortcut).
    Residual(Box<ResidualBlock>),
    /// Minibatch standard deviation (Karras et al. 2018, ProGAN): one extra channel holding the
    /// batch's mean per-feature standard deviation, so D sees how varied a batch is and a
    /// generator that ignores its noise is easy to tell from real data.
    MinibatchStd,
    /// Class-conditional batch norm: needs the labels ([`Seq::forward_labelled`]); without
    /// them (summaries) it only normalises.
    CondBn(CondBatchNorm),
    /// A convolution or linear layer whose weight is divided by its largest singular value.
    SpectralNorm(SpectralNorm),
    Reshape(Vec<i64>),
    Flatten,
}

impl Op {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Op::Linear(l) => l.forward(x),
            Op::Conv(c) => c.forward(x),
            Op::ConvT(c) => c.forward(x),
            Op::Bn(b) => b.forward_t(x, train),
            Op::Relu => x.relu(),
            Op::LeakyRelu => crate::ops::leaky_relu(x, 0.2),
            Op::Tanh => x.tanh(),
            Op::Dropout(p) => x.dropout(*p, train),
            Op::AvgPool2 => x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None),
            Op::MaxPool2 => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            Op::GlobalAvgPool => x.adaptive_avg_pool2d([1, 1]),
            Op::PadBackground(p) => (x + 1.0).constant_pad_nd([*p, *p, *p, *p]) - 1.0,
            Op::Resize(s) => x.upsample_bilinear2d([*s, *s], false, None, None),
            Op::Residual(b) => b.forward_t(x, train),
            Op::MinibatchStd => minibatch_std(x),
            Op::SpectralNorm(l) => l.forward_t(x, train),
            Op::CondBn(b) => b.bn.forward_t(x, train),
            Op::Reshape(s) => x.reshape(s.as_slice()),
            Op::Flatten => x.flatten(1, -1),
        }
    }

    /// The layer's type as the summary shows it, and its parameter count.
    pub(crate) fn describe(&self) -> (String, i64) {
        let lin =
            |ws: &Tensor, bs: &Option<Tensor>| ws.numel() + bs.as_ref().map_or(0, |b| b.numel());
        let (kind, params) = match self {
            Op::Linear(l) => ("Linear".to_string(), lin(&l.ws, &l.bs)),
            Op::Conv(c) => ("Conv2d".into(), lin(&c.ws, &c.bs)),
            Op::ConvT(c) => ("ConvTranspose2d".into(), lin(&c.conv.ws, &c.conv.bs)),
            Op::Bn(b) => (
                "BatchNorm2d".into(),
                b.ws.as_ref().map_or(0, |w| w.numel()) * 2,
            ),
            Op::Relu => ("ReLU".into(), 0),
            Op::LeakyRelu => ("LeakyReLU(0.2)".into(), 0),
            Op::Tanh => ("Tanh".into(), 0),
            Op::Dropout(p) => (format!("Dropout({p})"), 0),
            Op::AvgPool2 => ("AvgPool2d(2)".into(), 0),
            Op::MaxPool2 => ("MaxPool2d(2)".into(), 0),
            Op::GlobalAvgPool => ("AdaptiveAvgPool2d(1)".into(), 0),
            Op::PadBackground(p) => (format!("Pad({p}, -1)"), 0),
            Op::Resize(s) => (format!("Resize({s}×{s})"), 0),
            Op::Residual(b) => ("ResidualBlock".into(), b.params() as usize),
            Op::MinibatchStd => ("MinibatchStd".into(), 0),
            Op::CondBn(b) => (
                "CondBatchNorm2d".into(),
                b.gamma.ws.numel() + b.beta.ws.numel(),
            ),
            Op::SpectralNorm(l) => (
                format!("SN({})", if l.conv.is_some() { "Conv2d" } else { "Linear" }),
                l.ws.numel() + l.bs.numel(),
            ),
            Op::Reshape(_) => ("Reshape".into(), 0),
            Op::Flatten => ("Flatten".into(), 0),
        };
        (kind, params as i64)
    }
}

/// A 2-D transposed convolution (tch's layer and variables, so the same checkpoint names) whose
/// bias is added as a separate broadcast add. The values are the same as `nn::ConvTranspose2D`'s
/// (the bias is added to the same sums), but oneDNN adds a transposed convolution's bias with its
/// reference kernel: on CPU that took 30–45% of the forward pass of the GAN generators' layers
/// (measured, batch 64: 128→64 channels at 7 px, 5.7 ms against 3.2 ms; 64→1 at 14 px, 2.2
/// against 1.5).
#[derive(Debug)]
pub struct ConvT {
    pub conv: nn::ConvTranspose2D,
    cfg: nn::ConvTransposeConfig,
}

impl ConvT {
    /// As `nn::conv_transpose2d(p, cin, cout, k, cfg)`.
    pub fn new(p: nn::Path, cin: i64, cout: i64, k: i64, cfg: nn::ConvTransposeConfig) -> Self {
        Self {
            conv: nn::conv_transpose2d(p, cin, cout, k, cfg),
            cfg,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let c = &self.cfg;
        let y = Tensor::conv_transpose2d(
            x,
            &self.conv.ws,
            None::<&Tensor>,
            [c.stride; 2],
            [c.padding; 2],
            [c.output_padding; 2],
            c.groups,
            [c.dilation; 2],
        );
        match &self.conv.bs {
            Some(b) => y + b.view([1, -1, 1, 1]),
            None => y,
        }
    }
}

/// `x` `[N, C, H, W]` with one more channel: the mean over features of the standard deviation
/// over the batch (0 for a batch of one).
fn minibatch_std(x: &Tensor) -> Tensor {
    let size = x.size();
    let s = if size[0] > 1 {
        (x.var_dim(0, false, true) + 1e-8).sqrt().mean(Kind::Float)
    } else {
        Tensor::zeros([], (Kind::Float, x.device()))
    };
    let channel = s.expand([size[0], 1, size[2], size[3]], false);
    Tensor::cat(&[x.shallow_clone(), channel], 1)
}

/// Class-conditional batch norm (de Vries et al. 2017): batch norm without its own affine
/// part, then a per-class scale 1 + γ_y and shift β_y (both start at 0).
#[derive(Debug)]
pub struct CondBatchNorm {
    bn: nn::BatchNorm,
    gamma: nn::Embedding,
    beta: nn::Embedding,
}

impl CondBatchNorm {
    pub fn new(p: nn::Path, channels: i64, classes: i64) -> Self {
        let zeros = nn::EmbeddingConfig {
            ws_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Self {
            bn: nn::batch_norm2d(
                &p / "bn",
                channels,
                nn::BatchNormConfig {
                    affine: false,
                    ..Default::default()
                },
            ),
            gamma: nn::embedding(&p / "gamma", classes, channels, zeros),
            beta: nn::embedding(&p / "beta", classes, channels, zeros),
        }
    }

    /// `cond` scales the class terms (transitional conditioning; 1 = fully conditional).
    pub fn forward_labelled(&self, x: &Tensor, y: &Tensor, cond: f64, train: bool) -> Tensor {
        let h = self.bn.forward_t(x, train);
        let c = x.size()[1];
        let g = (self.gamma.forward(y) * cond + 1.0).view([-1, c, 1, 1]);
        let b = (self.beta.forward(y) * cond).view([-1, c, 1, 1]);
        h * g + b
    }
}

/// Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for Generative
/// Adversarial Networks"): the layer computes with W / σ(W), σ estimated by one power
/// iteration per training forward pass. The power-iteration vector `u` is a non-trainable
/// variable, so it is saved with the weights and a resumed run continues it exactly.
#[derive(Debug)]
pub struct SpectralNorm {
    ws: Tensor,
    bs: Tensor,
    u: Tensor,
    /// (stride, padding) for a convolution; None for a linear layer.
    conv: Option<(i64, i64)>,
}

impl SpectralNorm {
    /// A `k`×`k` convolution, DCGAN-initialised.
    pub fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        Self::new(p, &[cout, cin, k, k], Some((stride, padding)))
    }

    pub fn linear(p: nn::Path, cin: i64, cout: i64) -> Self {
        Self::new(p, &[cout, cin], None)
    }

    fn new(p: nn::Path, shape: &[i64], conv: Option<(i64, i64)>) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let ws = p.var("weight", shape, init);
        let bs = p.zeros("bias", &[shape[0]]);
        let u = p.zeros_no_train("sn_u", &[shape[0]]);
        tch::no_grad(|| {
            let r = Tensor::randn([shape[0]], (Kind::Float, u.device()));
            u.shallow_clone().copy_(&normalize(&r));
        });
        Self { ws, bs, u, conv }
    }

    /// The weight divided by its spectral norm; a training pass first refines `u`.
    fn weight(&self, train: bool) -> Tensor {
        let w = self.ws.reshape([self.ws.size()[0], -1]);
        let (u, v) = tch::no_grad(|| {
            let mut u = self.u.shallow_clone();
            let v = normalize(&w.tr().mv(&u));
            if train {
                u.copy_(&normalize(&w.mv(&v)));
            }
            (u.copy(), v)
        });
        let sigma = u.dot(&w.mv(&v));
        &self.ws / sigma
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let w = self.weight(train);
        match self.conv {
            Some((stride, padding)) => x.conv2d(
                &w,
                Some(&self.bs),
                [stride, stride],
                [padding, padding],
                [1, 1],
                1,
            ),
            None => x.linear(&w, Some(&self.bs)),
        }
    }
}

fn normalize(v: &Tensor) -> Tensor {
    v / (v.norm() + 1e-12)
}

/// A residual basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).
#[derive(Debug)]
pub struct ResidualBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl ResidualBlock {
    pub fn new(p: nn::Path, cin: i64, cout: i64, stride: i64) -> Self {
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

    fn params(&self) -> i64 {
        let bn = |b: &nn::BatchNorm| b.ws.as_ref().map_or(0, |w| w.numel()) * 2;
        let mut n = self.conv1.ws.numel() + bn(&self.bn1) + self.conv2.ws.numel() + bn(&self.bn2);
        if let Some((c, b)) = &self.shortcut {
            n += c.ws.numel() + bn(b);
        }
        n as i64
    }
}

/// Named layers run in order.
#[derive(Debug, Default)]
pub struct Seq {
    layers: Vec<(String, Op)>,
}

impl Seq {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a layer.
    pub fn push(&mut self, name: impl Into<String>, op: Op) -> &mut Self {
        self.layers.push((name.into(), op));
        self
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |x, (_, op)| op.forward_t(&x, train))
    }

    /// As [`Self::forward_t`], giving the labels `y` (scaled by `cond`) to the class-conditional
    /// batch norms.
    pub fn forward_labelled(&self, x: &Tensor, y: &Tensor, cond: f64, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |x, (_, op)| match op {
                Op::CondBn(b) => b.forward_labelled(&x, y, cond, train),
                op => op.forward_t(&x, train),
            })
    }

    /// Summary rows for an input batch (evaluation mode, no gradients).
    pub fn summary_rows(&self, input: &Tensor) -> Vec<SummaryRow> {
        let mut x = input.shallow_clone();
        let mut rows = Vec::new();
        tch::no_grad(|| {
            for (name, op) in &self.layers {
                x = op.forward_t(&x, false);
                let (kind, params) = op.describe();
                let mut shape = x.size();
                shape[0] = -1;
                rows.push(SummaryRow {
                    name: name.clone(),
                    kind,
                    shape,
                    params,
                });
            }
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn spectral_norm_divides_the_weight_by_its_largest_singular_value() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = SpectralNorm::conv(vs.root() / "c", 3, 5, 4, 2, 1);
        let _ =
            l.ws.shallow_clone()
                .set_requires_grad(false)
                .normal_(0.0, 1.0);
        // Power iteration converges: after enough training passes σ(W / σ̂) is 1.
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        for _ in 0..50 {
            let _ = l.forward_t(&x, true);
        }
        let w = tch::no_grad(|| l.weight(false)).reshape([5, -1]);
        let (_, sv, _) = w.svd(true, false);
        let top = sv.double_value(&[0]);
        assert!((top - 1.0).abs() < 1e-3, "largest singular value {top}");
        // Evaluation passes leave u alone; its state is a saved, non-trainable variable.
        let u = l.u.copy();
        let _ = l.forward_t(&x, false);
        assert!(u.equal(&l.u));
        assert!(vs.variables().contains_key("c.sn_u"));
        assert_eq!(vs.trainable_variables().len(), 2);
        // The output keeps the convolution's shape.
        assert_eq!(l.forward_t(&x, false).size(), [2, 5, 4, 4]);
    }

    #[test]
    fn minibatch_std_adds_a_channel_that_is_zero_for_identical_samples() {
        let one = Tensor::randn([1, 3, 4, 4], (Kind::Float, Device::Cpu));
        let copies = one.repeat([5, 1, 1, 1]);
        let y = minibatch_std(&copies);
        assert_eq!(y.size(), [5, 4, 4, 4]);
        assert!(y.narrow(1, 0, 3).equal(&copies));
        assert!(y.narrow(1, 3, 1).abs().max().double_value(&[]) < 1e-3);
        let varied = Tensor::randn([5, 3, 4, 4], (Kind::Float, Device::Cpu));
        let s = minibatch_std(&varied).narrow(1, 3, 1);
        assert!(
            s.min().double_value(&[]) > 0.5,
            "unit-variance noise has std near 1"
        );
        assert_eq!(minibatch_std(&one).size(), [1, 4, 4, 4]);
    }
}

/// One line of a summary: layer name, type, output shape (−1 = batch), parameter count.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub name: String,
    pub kind: String,
    pub shape: Vec<i64>,
    pub params: i64,
}

/// A zero input batch of 2 for summaries: `[2, ...shape]`.
pub fn probe(shape: &[i64], device: tch::Device) -> Tensor {
    let mut s = vec![2];
    s.extend(shape);
    Tensor::zeros(s.as_slice(), (Kind::Float, device))
}

/// The Keras-style table: a title with the input shape, one line per layer, the total.
pub fn format_summary(title: &str, input: &[i64], rows: &[SummaryRow]) -> String {
    let shape = |s: &[i64]| {
        let dims: Vec<String> = s
            .iter()
            .map(|d| if *d < 0 { "N".into() } else { d.to_string() })
            .collect();
        format!("({})", dims.join(", "))
    };
    let mut input_shape = vec![-1];
    input_shape.extend(input);
    let mut s = format!("{title}: input {}\n", shape(&input_shape));
    s += &format!(
        "  {:<10} {:<24} {:<20} {:>10}\n",
        "layer", "type", "output shape", "params"
    );
    for r in rows {
        s += &format!(
            "  {:<10} {:<24} {:<20} {:>10}\n",
            r.name,
            r.kind,
            shape(&r.shape),
            r.params
        );
    }
    s += &format!(
        "  total parameters: {}\n",
        rows.iter().map(|r| r.params).sum::<i64>()
    );
    s
}
