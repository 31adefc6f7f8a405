//! Classical augmentation: random affine transforms with Keras `ImageDataGenerator` semantics
//! (rotation, shear, zoom, shift, horizontal flip), applied to whole batches on the device with
//! `affine_grid` + `grid_sample` (bilinear, edge pixels repeated like Keras' `fill_mode="nearest"`).

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Ranges of the random transform. All are symmetric: a value `r` draws from `[-r, r]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ClassicalParams {
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

impl ClassicalParams {
    /// The ranges as `composition.json` records them.
    pub fn ranges(&self) -> rebalance_core::contract::augment::ClassicalRanges {
        rebalance_core::contract::augment::ClassicalRanges {
            rotation: self.rotation,
            shear: self.shear,
            zoom: self.zoom,
            shift: self.shift,
            hflip: self.hflip,
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

/// Transform u8 images `[N, C, H, W]` with one random matrix each; returns u8 images.
pub fn transform(images_u8: &Tensor, mats: &[[f32; 6]], device: Device) -> Tensor {
    let size = images_u8.size();
    let n = size[0];
    assert_eq!(n as usize, mats.len(), "one matrix per image");
    if n == 0 {
        return images_u8.shallow_clone();
    }
    let flat: Vec<f32> = mats.iter().flatten().copied().collect();
    let theta = Tensor::from_slice(&flat)
        .reshape([n, 2, 3])
        .to_device(device);
    let x = images_u8.to_device(device).to_kind(Kind::Float);
    let grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
    // interpolation 0 = bilinear, padding 1 = border (repeat edge pixels)
    let y = x.grid_sampler(&grid, 0, 1, false);
    y.clamp(0.0, 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_params_leave_images_unchanged() {
        let p = ClassicalParams {
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
        let out = transform(&img, &[m, m], Device::Cpu);
        assert!(out.equal(&img));
    }

    #[test]
    fn a_flip_mirrors_and_a_shift_moves() {
        let img = Tensor::arange(16, (Kind::Float, Device::Cpu))
            .reshape([1, 1, 4, 4])
            .to_kind(Kind::Uint8);
        let flip = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let out = transform(&img, &[flip], Device::Cpu);
        assert!(out.equal(&img.flip([3])));
        // Sampling input x + 0.5 (one pixel of four is 0.5 in [-1, 1] units) shifts content left by one.
        let shift = [1.0, 0.0, 0.5, 0.0, 1.0, 0.0];
        let out = transform(&img, &[shift], Device::Cpu);
        let v = Vec::<u8>::try_from(out.view([-1])).unwrap();
        assert_eq!(&v[0..4], &[1, 2, 3, 3]);
    }

    #[test]
    fn ranges_are_respected() {
        let p = ClassicalParams {
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
}
