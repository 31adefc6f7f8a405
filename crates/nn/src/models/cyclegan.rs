//! CycleGAN's networks (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
//! Cycle-Consistent Adversarial Networks"), sized for 28–128 px:
//! - the ResNet generator: a 7×7 convolution, two stride-2 downsamplings, residual blocks at
//!   a quarter of the side, two upsamplings and a 7×7 convolution to the image, with reflection
//!   padding and instance norm (no affine part, as the reference code's default);
//! - the PatchGAN discriminator: 4×4 convolutions, LeakyReLU(0.2) and instance norm, ending in
//!   one real/fake score per overlapping patch (no sigmoid: the loss is least squares).

use anyhow::{bail, Result};
use tch::{nn, nn::Module, Tensor};

use super::layers::ConvT;

fn init() -> (nn::Init, nn::Init) {
    (
        nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        nn::Init::Const(0.0),
    )
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let (ws, bs) = init();
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            ws_init: ws,
            bs_init: bs,
            ..Default::default()
        },
    )
}

/// Instance norm without affine parameters.
fn inorm(x: &Tensor) -> Tensor {
    x.instance_norm(
        None::<Tensor>,
        None::<Tensor>,
        None::<Tensor>,
        None::<Tensor>,
        true,
        0.1,
        1e-5,
        false,
    )
}

/// Residual blocks of the generator for an image side: 6 from 64 px (the paper's 128 px
/// setting), 4 below.
pub fn resnet_blocks(side: i64) -> i64 {
    if side >= 64 {
        6
    } else {
        4
    }
}

/// PatchGAN's stride-2 layers for an image side: 3 from 64 px (70×70 patches at 256 px), 2 below
/// so a 28 px image still gives a grid of patches.
pub fn patch_layers(side: i64) -> i64 {
    if side >= 64 {
        3
    } else {
        2
    }
}

pub struct ResnetGenerator {
    c_in: nn::Conv2D,
    down: Vec<nn::Conv2D>,
    blocks: Vec<(nn::Conv2D, nn::Conv2D)>,
    up: Vec<ConvT>,
    c_out: nn::Conv2D,
}

impl ResnetGenerator {
    /// `width`: channels of the first layer (ngf); the side must be divisible by 4.
    pub fn new(p: nn::Path, channels: i64, side: i64, width: i64) -> Result<Self> {
        if side % 4 != 0 || side < 16 {
            bail!("cyclegan needs a square image side divisible by 4 and at least 16, not {side}");
        }
        let w = width;
        let c_in = conv(&p / "c_in", channels, w, 7, 1, 0);
        let down = vec![
            conv(&p / "down1", w, 2 * w, 3, 2, 1),
            conv(&p / "down2", 2 * w, 4 * w, 3, 2, 1),
        ];
        let blocks = (0..resnet_blocks(side))
            .map(|i| {
                let b = &p / format!("block{i}");
                (
                    conv(&b / "conv1", 4 * w, 4 * w, 3, 1, 0),
                    conv(&b / "conv2", 4 * w, 4 * w, 3, 1, 0),
                )
            })
            .collect();
        let (ws, bs) = init();
        let upc = nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            output_padding: 1,
            ws_init: ws,
            bs_init: bs,
            ..Default::default()
        };
        let up = vec![
            ConvT::new(&p / "up1", 4 * w, 2 * w, 3, upc),
            ConvT::new(&p / "up2", 2 * w, w, 3, upc),
        ];
        let c_out = conv(&p / "c_out", w, channels, 7, 1, 0);
        Ok(Self {
            c_in,
            down,
            blocks,
            up,
            c_out,
        })
    }

    /// Images in [-1, 1] to images in [-1, 1] of the same shape.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = inorm(&self.c_in.forward(&x.reflection_pad2d([3, 3, 3, 3]))).relu();
        for d in &self.down {
            h = inorm(&d.forward(&h)).relu();
        }
        for (c1, c2) in &self.blocks {
            let r = inorm(&c1.forward(&h.reflection_pad2d([1, 1, 1, 1]))).relu();
            let r = inorm(&c2.forward(&r.reflection_pad2d([1, 1, 1, 1])));
            // Out of place: the previous block's padding saved `h` for its backward.
            h = &h + r;
        }
        for u in &self.up {
            h = inorm(&u.forward(&h)).relu();
        }
        self.c_out.forward(&h.reflection_pad2d([3, 3, 3, 3])).tanh()
    }
}

pub struct PatchDiscriminator {
    layers: Vec<nn::Conv2D>,
}

impl PatchDiscriminator {
    pub fn new(p: nn::Path, channels: i64, side: i64, width: i64) -> Self {
        let n = patch_layers(side);
        let mut layers = vec![conv(&p / "c0", channels, width, 4, 2, 1)];
        let mut c = width;
        for i in 1..n {
            let next = (c * 2).min(8 * width);
            layers.push(conv(&p / format!("c{i}"), c, next, 4, 2, 1));
            c = next;
        }
        let next = (c * 2).min(8 * width);
        layers.push(conv(&p / format!("c{n}"), c, next, 4, 1, 1));
        layers.push(conv(&p / "out", next, 1, 4, 1, 1));
        Self { layers }
    }

    /// One score per patch, `[N, 1, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i == last {
                break;
            }
            if i > 0 {
                h = inorm(&h);
            }
            h = crate::ops::leaky_relu(&h, 0.2);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn shapes_from_28_to_128_px() {
        for (c, side, patches) in [
            (1, 28, 5),
            (3, 32, 6),
            (1, 48, 10),
            (3, 64, 6),
            (3, 128, 14),
        ] {
            let vs = VarStore::new(Device::Cpu);
            let g = ResnetGenerator::new(vs.root() / "g", c, side, 8).unwrap();
            let d = PatchDiscriminator::new(vs.root() / "d", c, side, 8);
            let x = Tensor::rand([2, c, side, side], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            let y = g.forward(&x);
            assert_eq!(y.size(), [2, c, side, side]);
            assert!(y.abs().max().double_value(&[]) <= 1.0);
            assert_eq!(d.forward(&y).size(), [2, 1, patches, patches], "{side} px");
        }
        let vs = VarStore::new(Device::Cpu);
        assert!(ResnetGenerator::new(vs.root(), 1, 30, 8).is_err());
    }
}
