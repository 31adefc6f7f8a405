//! Image transforms on the device, shared by `augment` (static copies written once) and
//! `classify` (a fresh transform for every image of every batch):
//! - [`affine`]: random affine transforms (Keras semantics) and Simard's elastic distortion;
//! - [`trivial`]: TrivialAugment, as torchvision's `TrivialAugmentWide`;
//! - [`Online`]: `classify --augment`, one of them (or flip + shift) drawn per image.

pub mod affine;
pub mod trivial;

use rand::Rng;
pub use rebalance_core::contract::classify::OnlineAugment;
use tch::Tensor;

pub use affine::{
    elastic_offsets, parse_elastic, transform, warp, warp_nearest, AffineRanges, ClassicalParams,
    ClassicalRanges, Elastic, Padding,
};

/// A training-time transform: what `classify --augment` applies to each batch.
#[derive(Debug, Clone)]
pub struct Online {
    pub augment: OnlineAugment,
    pub affine: AffineRanges,
    pub elastic: Elastic,
    /// flip-shift: the largest shift as a fraction of the side (whole pixels).
    pub max_shift: f64,
    ops: Vec<trivial::Op>,
}

impl Online {
    pub fn new(
        augment: OnlineAugment,
        affine: AffineRanges,
        elastic: Elastic,
        max_shift: f64,
        channels: i64,
    ) -> Self {
        Self {
            augment,
            affine,
            elastic,
            max_shift,
            ops: trivial::Op::for_channels(channels),
        }
    }

    /// The ranges the contract records (none for `none` and `trivial`).
    pub fn ranges(&self) -> Option<ClassicalRanges> {
        match self.augment {
            OnlineAugment::None | OnlineAugment::Trivial => None,
            OnlineAugment::Affine => Some(self.affine.ranges(None)),
            OnlineAugment::AffineElastic => Some(self.affine.ranges(Some(self.elastic))),
            OnlineAugment::FlipShift => Some(ClassicalRanges {
                shift: self.max_shift,
                hflip: true,
                ..Default::default()
            }),
        }
    }

    /// Transform float images `[N, C, H, W]` with values in 0..=255 (on any device), each with
    /// its own random draw: the draws from `rng`, an elastic field from libtorch's generator.
    pub fn apply(&self, x: &Tensor, rng: &mut impl Rng) -> Tensor {
        let n = x.size()[0] as usize;
        match self.augment {
            OnlineAugment::None => x.shallow_clone(),
            OnlineAugment::Affine | OnlineAugment::AffineElastic => {
                let mats: Vec<[f32; 6]> = (0..n).map(|_| self.affine.sample(rng)).collect();
                let elastic =
                    (self.augment == OnlineAugment::AffineElastic).then_some(self.elastic);
                warp(x, &mats, elastic, Padding::Border)
            }
            OnlineAugment::FlipShift => {
                let s = x.size();
                let mats: Vec<[f32; 6]> = (0..n)
                    .map(|_| flip_shift_matrix(self.max_shift, s[2], s[3], rng))
                    .collect();
                warp_nearest(x, &mats, Padding::Zeros)
            }
            OnlineAugment::Trivial => trivial::apply(x, &trivial::draw(n, &self.ops, rng)),
        }
    }
}

/// A flip with probability 0.5 and a shift of whole pixels, at most `max_shift` of each side.
fn flip_shift_matrix(max_shift: f64, h: i64, w: i64, rng: &mut impl Rng) -> [f32; 6] {
    let flip = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
    let px = |side: i64, rng: &mut dyn rand::RngCore| {
        let m = (max_shift * side as f64).round() as i64;
        if m > 0 {
            rng.random_range(-m..=m) as f64
        } else {
            0.0
        }
    };
    let (dx, dy) = (px(w, rng), px(h, rng));
    [
        flip,
        0.0,
        (-2.0 * dx / w as f64) as f32,
        0.0,
        1.0,
        (-2.0 * dy / h as f64) as f32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::{Device, Kind};

    fn online(a: OnlineAugment) -> Online {
        Online::new(
            a,
            AffineRanges::default(),
            Elastic {
                alpha: 34.0,
                sigma: 4.0,
            },
            0.125,
            1,
        )
    }

    #[test]
    fn every_transform_keeps_shape_and_range_and_is_seeded() {
        tch::manual_seed(3);
        let x = Tensor::randint(256, [16, 1, 28, 28], (Kind::Float, Device::Cpu));
        for a in [
            OnlineAugment::None,
            OnlineAugment::Affine,
            OnlineAugment::AffineElastic,
            OnlineAugment::FlipShift,
            OnlineAugment::Trivial,
        ] {
            let o = online(a);
            let run = || {
                tch::manual_seed(9);
                o.apply(&x, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5))
            };
            let y = run();
            assert_eq!(y.size(), x.size(), "{a}");
            assert_eq!(y.kind(), Kind::Float);
            assert!(y.min().double_value(&[]) >= -1e-3, "{a}");
            assert!(y.max().double_value(&[]) <= 255.0 + 1e-3, "{a}");
            assert!(run().equal(&y), "{a}: the same seeds give the same batch");
            let moved = y.ne_tensor(&x).any().int64_value(&[]) == 1;
            assert_eq!(moved, a != OnlineAugment::None, "{a}");
            let other = o.apply(&x, &mut rand_chacha::ChaCha8Rng::seed_from_u64(6));
            assert_eq!(
                other.equal(&y),
                a == OnlineAugment::None,
                "{a}: fresh draws differ"
            );
        }
    }

    #[test]
    fn flip_shift_moves_whole_pixels_only() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let m = flip_shift_matrix(0.125, 32, 32, &mut rng);
            assert!(m[0] == 1.0 || m[0] == -1.0);
            for t in [m[2], m[5]] {
                let px = t * 32.0 / 2.0;
                assert!((px - px.round()).abs() < 1e-5 && px.abs() <= 4.0, "{px}");
            }
        }
        // A shifted image holds the same pixel values (nearest sampling, zero fill).
        let x = Tensor::arange(64, (Kind::Float, Device::Cpu)).view([1, 1, 8, 8]) + 1.0;
        let y = warp_nearest(&x, &[[1.0, 0.0, -0.25, 0.0, 1.0, 0.0]], Padding::Zeros);
        let v = Vec::<f32>::try_from(y.view([-1])).unwrap();
        assert_eq!(&v[0..8], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    }
}
