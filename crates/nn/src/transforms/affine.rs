//! Random affine transforms with Keras `ImageDataGenerator` semantics
//! (rotation, shear, zoom, shift, horizontal flip), optionally followed by an elastic
//! distortion (Simard, Steinkraus & Platt 2003, "Best practices for convolutional neural
//! networks applied to visual document analysis": a random displacement field smoothed by a
//! Gaussian of width σ and scaled by α pixels). Both go into one sampling grid, applied to whole
//! batches on the device with `grid_sample` (bilinear, edge pixels repeated like Keras'
//! `fill_mode="nearest"`), so each image is resampled once. `augment` writes such copies once
//! (its `classical` strategy); `classify --augment affine|affine+elastic` draws them afresh for
//! every batch.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Ranges of the random affine transform. All are symmetric: a value `r` draws from `[-r, r]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct AffineRanges {
    /// Rotation range in degrees (Keras `rotation_range`).
    #[arg(long, default_value_t = 20.0)]
    pub rotation: f64,
    /// Shear range in radians (Keras 1 `shear_range`; 0.6 ≈ 34°).
    #[arg(long, default_value_t = 0.3)]
    pub shear: f64,
    /// Zoom range: each axis is scaled by a factor in [1 - zoom, 1 + zoom] (Keras `zoom_range`).
    #[arg(long, default_value_t = 0.2)]
    pub zoom: f64,
    /// Shift range as a fraction of width and height (Keras `width_shift_range`/`height_shift_range`).
    #[arg(long, default_value_t = 0.1)]
    pub shift: f64,
    /// Also flip horizontally with probability 0.5 (wrong for digits and signs; right for cows and horses).
    #[arg(long)]
    pub hflip: bool,
}

impl Default for AffineRanges {
    fn default() -> Self {
        Self {
            rotation: 20.0,
            shear: 0.3,
            zoom: 0.2,
            shift: 0.1,
            hflip: false,
        }
    }
}

/// `augment`'s classical transform: the affine ranges, then an optional elastic distortion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ClassicalParams {
    #[command(flatten)]
    #[serde(flatten)]
    pub affine: AffineRanges,
    /// Elastic distortion after the affine transform, `ALPHA,SIGMA` in pixels (Simard et al.
    /// 2003; `34,4` is their MNIST setting). Off by default.
    #[arg(long, value_name = "ALPHA,SIGMA", value_parser = parse_elastic)]
    pub elastic: Option<Elastic>,
}

pub use rebalance_core::contract::augment::{ClassicalRanges, Elastic};

/// `ALPHA,SIGMA`: two non-negative numbers, σ > 0.
pub fn parse_elastic(s: &str) -> Result<Elastic, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [a, g] = parts.as_slice() else {
        return Err(format!("`{s}` is not ALPHA,SIGMA (for example 34,4)"));
    };
    let num = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
    match (num(a), num(g)) {
        (Some(alpha), Some(sigma)) if sigma > 0.0 => Ok(Elastic { alpha, sigma }),
        _ => Err(format!(
            "`{s}`: ALPHA must be a number ≥ 0 and SIGMA a number > 0 (for example 34,4)"
        )),
    }
}

impl ClassicalParams {
    /// The ranges as `composition.json` records them.
    pub fn ranges(&self) -> ClassicalRanges {
        self.affine.ranges(self.elastic)
    }

    /// One random matrix (see [`AffineRanges::sample`]).
    pub fn sample(&self, rng: &mut impl Rng) -> [f32; 6] {
        self.affine.sample(rng)
    }
}

impl AffineRanges {
    /// The ranges, with `elastic`, as the contract records them.
    pub fn ranges(&self, elastic: Option<Elastic>) -> ClassicalRanges {
        ClassicalRanges {
            rotation: self.rotation,
            shear: self.shear,
            zoom: self.zoom,
            shift: self.shift,
            hflip: self.hflip,
            elastic,
        }
    }

    /// One random 2×3 matrix that maps output to input coordinates in [-1, 1] units, as Keras
    /// builds it: rotation · shift · shear · zoom.
    pub fn sample(&self, rng: &mut impl Rng) -> [f32; 6] {
        let u = |rng: &mut dyn rand::RngCore, r: f64| {
            if r > 0.0 {
                rng.random_range(-r..=r)
            } else {
                0.0
            }
        };
        let theta = u(rng, self.rotation).to_radians();
        let shear = u(rng, self.shear);
        let (zx, zy) = if self.zoom > 0.0 {
            (
                rng.random_range(1.0 - self.zoom..=1.0 + self.zoom),
                rng.random_range(1.0 - self.zoom..=1.0 + self.zoom),
            )
        } else {
            (1.0, 1.0)
        };
        // A shift of `s` of the width is 2s in [-1, 1] units.
        let tx = 2.0 * u(rng, self.shift);
        let ty = 2.0 * u(rng, self.shift);
        let flip = if self.hflip && rng.random_bool(0.5) {
            -1.0
        } else {
            1.0
        };
        let (c, s) = (theta.cos(), theta.sin());
        // rotation [[c, -s], [s, c]] · shear [[1, -sin(sh)], [0, cos(sh)]] · zoom diag(zx, zy)
        let a = [[c, -s], [s, c]];
        let sh = [[1.0, -shear.sin()], [0.0, shear.cos()]];
        let mut m = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                m[i][j] = (0..2).map(|k| a[i][k] * sh[k][j]).sum::<f64>();
            }
        }
        let m = [
            [m[0][0] * zx * flip, m[0][1] * zy],
            [m[1][0] * zx * flip, m[1][1] * zy],
        ];
        // translation goes through the rotation, as in Keras' rotation · shift product
        let t = [c * tx - s * ty, s * tx + c * ty];
        [
            m[0][0] as f32,
            m[0][1] as f32,
            t[0] as f32,
            m[1][0] as f32,
            m[1][1] as f32,
            t[1] as f32,
        ]
    }
}

/// Transform u8 images `[N, C, H, W]` with one random matrix each, then the elastic
/// distortion when given (its random field drawn from libtorch's generator); returns u8 images
/// on the CPU.
pub fn transform(
    images_u8: &Tensor,
    mats: &[[f32; 6]],
    elastic: Option<Elastic>,
    device: Device,
) -> Tensor {
    if images_u8.size()[0] == 0 {
        return images_u8.shallow_clone();
    }
    let x = images_u8.to_device(device).to_kind(Kind::Float);
    warp(&x, mats, elastic, Padding::Border)
        .clamp(0.0, 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu)
}

/// What a sampling grid reads outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Zeros (background), as torchvision's affine with `fill=0`.
    Zeros,
    /// The nearest edge pixel, as Keras' `fill_mode="nearest"`.
    Border,
}

/// Resample float images `[N, C, H, W]` (on their device) bilinearly through one 2×3 matrix
/// each (output to input coordinates in [-1, 1] units), plus the elastic field when given.
pub fn warp(x: &Tensor, mats: &[[f32; 6]], elastic: Option<Elastic>, padding: Padding) -> Tensor {
    sample_grid(x, mats, elastic, padding, 0)
}

/// [`warp`] with nearest-neighbour sampling (`interpolation` 1), as torchvision's
/// TrivialAugmentWide and pad-and-crop shifts resample.
pub fn warp_nearest(x: &Tensor, mats: &[[f32; 6]], padding: Padding) -> Tensor {
    sample_grid(x, mats, None, padding, 1)
}

fn sample_grid(
    x: &Tensor,
    mats: &[[f32; 6]],
    elastic: Option<Elastic>,
    padding: Padding,
    interpolation: i64,
) -> Tensor {
    let size = x.size();
    let n = size[0];
    assert_eq!(n as usize, mats.len(), "one matrix per image");
    if n == 0 {
        return x.shallow_clone();
    }
    let device = x.device();
    let flat: Vec<f32> = mats.iter().flatten().copied().collect();
    let theta = Tensor::from_slice(&flat)
        .reshape([n, 2, 3])
        .to_device(device);
    let mut grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
    if let Some(e) = elastic {
        grid += elastic_offsets(n, size[2], size[3], e, device);
    }
    let pad = match padding {
        Padding::Zeros => 0,
        Padding::Border => 1,
    };
    x.grid_sampler(&grid, interpolation, pad, false)
}

/// Simard's displacement field as offsets of a sampling grid `[N, H, W, 2]` (x, y in [-1, 1]
/// units): uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of width σ
/// (truncated at 3σ, edges replicated), times α pixels. The separable smoothing is two small
/// matrix products (`S_h · noise · S_wᵀ`, each `S` the Gaussian with the edge replication folded
/// in), the same sums as a padded convolution at a fraction of its cost.
pub fn elastic_offsets(n: i64, h: i64, w: i64, e: Elastic, device: Device) -> Tensor {
    let noise = Tensor::rand([n * 2, h, w], (Kind::Float, device)) * 2.0 - 1.0;
    let (sh, sw) = (smoothing(h, e.sigma, device), smoothing(w, e.sigma, device));
    let smooth = sh.matmul(&noise).matmul(&sw.tr()).view([n, 2, h, w]);
    // A displacement of d pixels is 2d / side in [-1, 1] units.
    let scale = Tensor::from_slice(&[2.0 * e.alpha / w as f64, 2.0 * e.alpha / h as f64])
        .to_kind(Kind::Float)
        .to_device(device)
        .view([1, 1, 1, 2]);
    smooth.permute([0, 2, 3, 1]) * scale
}

/// The `side × side` matrix of a 1-D Gaussian smoothing of width σ, truncated at ⌈3σ⌉, over a
/// signal whose edge values repeat: row i holds the weights each input position gets in
/// output i.
fn smoothing(side: i64, sigma: f64, device: Device) -> Tensor {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    let mut m = vec![0f32; (side * side) as usize];
    for i in 0..side {
        for (t, kt) in (-r..=r).zip(&k) {
            let j = (i + t).clamp(0, side - 1);
            m[(i * side + j) as usize] += (kt / sum) as f32;
        }
    }
    Tensor::from_slice(&m).view([side, side]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_params_leave_images_unchanged() {
        let p = AffineRanges {
            rotation: 0.0,
            shear: 0.0,
            zoom: 0.0,
            shift: 0.0,
            hflip: false,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let m = p.sample(&mut rng);
        assert_eq!(m, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let img = Tensor::randint(255, [2, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        let out = transform(&img, &[m, m], None, Device::Cpu);
        assert!(out.equal(&img));
    }

    #[test]
    fn a_flip_mirrors_and_a_shift_moves() {
        let img = Tensor::arange(16, (Kind::Float, Device::Cpu))
            .reshape([1, 1, 4, 4])
            .to_kind(Kind::Uint8);
        let flip = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let out = transform(&img, &[flip], None, Device::Cpu);
        assert!(out.equal(&img.flip([3])));
        // Sampling input x + 0.5 (one pixel of four is 0.5 in [-1, 1] units) shifts content left by one.
        let shift = [1.0, 0.0, 0.5, 0.0, 1.0, 0.0];
        let out = transform(&img, &[shift], None, Device::Cpu);
        let v = Vec::<u8>::try_from(out.view([-1])).unwrap();
        assert_eq!(&v[0..4], &[1, 2, 3, 3]);
    }

    #[test]
    fn ranges_are_respected() {
        let p = AffineRanges {
            rotation: 45.0,
            shear: 0.0,
            zoom: 0.0,
            shift: 0.0,
            hflip: false,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let m = p.sample(&mut rng);
            // pure rotation: cos ≥ cos 45°
            assert!(m[0] as f64 >= (45f64).to_radians().cos() - 1e-6);
            assert!((m[0] - m[4]).abs() < 1e-6);
        }
    }

    #[test]
    fn elastic_keeps_shapes_moves_pixels_and_alpha_zero_is_the_affine_alone() {
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        tch::manual_seed(5);
        let img = Tensor::randint(255, [3, 1, 28, 28], (Kind::Uint8, Device::Cpu));
        let none = transform(
            &img,
            &[id; 3],
            Some(Elastic {
                alpha: 0.0,
                sigma: 4.0,
            }),
            Device::Cpu,
        );
        assert!(none.equal(&img), "α = 0 displaces nothing");
        tch::manual_seed(6);
        let e = Elastic {
            alpha: 34.0,
            sigma: 4.0,
        };
        let out = transform(&img, &[id; 3], Some(e), Device::Cpu);
        assert_eq!(out.size(), img.size());
        assert_eq!(out.kind(), Kind::Uint8);
        let moved = out
            .ne_tensor(&img)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(moved > 0.5, "most pixels move: {moved}");
        // The same seed gives the same field.
        tch::manual_seed(6);
        assert!(transform(&img, &[id; 3], Some(e), Device::Cpu).equal(&out));
        // Smooth: neighbouring displacements are alike (a smoothed field, not pixel noise).
        tch::manual_seed(7);
        let f = elastic_offsets(1, 28, 28, e, Device::Cpu);
        let dx = f.select(3, 0);
        let step = (dx.narrow(2, 1, 27) - dx.narrow(2, 0, 27))
            .abs()
            .mean(Kind::Float);
        let spread = dx.abs().mean(Kind::Float);
        assert!(step.double_value(&[]) < 0.3 * spread.double_value(&[]));
    }

    #[test]
    fn the_smoothing_matrices_equal_a_padded_convolution() {
        let sigma = 4.0;
        let r = 12;
        let k: Vec<f32> = (-r..=r)
            .map(|i: i64| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
            .collect();
        let sum: f32 = k.iter().sum();
        let k = Tensor::from_slice(&k) / sum as f64;
        tch::manual_seed(2);
        let x = Tensor::rand([3, 1, 20, 28], (Kind::Float, Device::Cpu));
        let conv = x
            .replication_pad2d([r, r, 0, 0])
            .conv2d(
                &k.view([1, 1, 1, 2 * r + 1]),
                None::<Tensor>,
                [1, 1],
                [0, 0],
                [1, 1],
                1,
            )
            .replication_pad2d([0, 0, r, r])
            .conv2d(
                &k.view([1, 1, 2 * r + 1, 1]),
                None::<Tensor>,
                [1, 1],
                [0, 0],
                [1, 1],
                1,
            );
        let mats = smoothing(20, sigma, Device::Cpu)
            .matmul(&x.view([3, 20, 28]))
            .matmul(&smoothing(28, sigma, Device::Cpu).tr());
        let d = (conv.view([3, 20, 28]) - mats)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn elastic_flag_parses_and_refuses_bad_values() {
        assert_eq!(
            parse_elastic("34,4"),
            Ok(Elastic {
                alpha: 34.0,
                sigma: 4.0
            })
        );
        assert!(parse_elastic("34").unwrap_err().contains("ALPHA,SIGMA"));
        assert!(parse_elastic("34,0").is_err());
        assert!(parse_elastic("-1,4").is_err());
        assert!(parse_elastic("a,b").is_err());
    }
}
