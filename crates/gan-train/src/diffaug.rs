//! Differentiable augmentation (DiffAugment, Zhao et al. 2020) applied to real and fake
//! images before D, so a D trained on 10 images cannot just memorise them. Every op is a
//! tensor op, so gradients flow back to G. Randomness comes from libtorch's generator
//! (seeded per step by the trainer).

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aug {
    /// Random brightness, saturation and contrast.
    Color,
    /// Random shift by up to 1/8 of the side, zero padded.
    Translation,
    /// A random square of half the side set to zero.
    Cutout,
}

pub fn diff_augment(x: &Tensor, policy: &[Aug]) -> Tensor {
    policy.iter().fold(x.shallow_clone(), |x, a| match a {
        Aug::Color => color(&x),
        Aug::Translation => translation(&x, 0.125),
        Aug::Cutout => cutout(&x, 0.5),
    })
}

fn rand_like_batch(x: &Tensor) -> Tensor {
    Tensor::rand([x.size()[0], 1, 1, 1], (Kind::Float, x.device()))
}

fn color(x: &Tensor) -> Tensor {
    let x = x + (rand_like_batch(x) - 0.5);
    let mean_c = x.mean_dim(1, true, Kind::Float);
    let x = (&x - &mean_c) * (rand_like_batch(&x) * 2.0) + &mean_c;
    let mean = x.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    (&x - &mean) * (rand_like_batch(&x) + 0.5) + &mean
}

fn translation(x: &Tensor, ratio: f64) -> Tensor {
    let s = x.size();
    let (n, h, w) = (s[0], s[2], s[3]);
    let (mh, mw) = (
        (h as f64 * ratio + 0.5) as i64,
        (w as f64 * ratio + 0.5) as i64,
    );
    let opts = (Kind::Float, x.device());
    let dy = Tensor::randint_low(-mh, mh + 1, [n], (Kind::Int64, x.device())).to_kind(Kind::Float);
    let dx = Tensor::randint_low(-mw, mw + 1, [n], (Kind::Int64, x.device())).to_kind(Kind::Float);
    // Whole-pixel shifts as an affine grid (normalised coordinates, 2/W per pixel).
    let zeros = Tensor::zeros([n], opts);
    let ones = Tensor::ones([n], opts);
    let theta = Tensor::stack(
        &[
            Tensor::stack(&[&ones, &zeros, &(dx * (2.0 / w as f64))], 1),
            Tensor::stack(&[&zeros, &ones, &(dy * (2.0 / h as f64))], 1),
        ],
        1,
    );
    let grid = Tensor::affine_grid_generator(&theta, s.as_slice(), false);
    x.grid_sampler(&grid, 1, 0, false)
}

fn cutout(x: &Tensor, ratio: f64) -> Tensor {
    let s = x.size();
    let (n, h, w) = (s[0], s[2], s[3]);
    let (ch, cw) = (
        (h as f64 * ratio + 0.5) as i64,
        (w as f64 * ratio + 0.5) as i64,
    );
    let dev = x.device();
    let cy = Tensor::randint_low(0, h + (1 - ch % 2), [n, 1, 1], (Kind::Int64, dev));
    let cx = Tensor::randint_low(0, w + (1 - cw % 2), [n, 1, 1], (Kind::Int64, dev));
    let ys = Tensor::arange(h, (Kind::Int64, dev)).view([1, h, 1]);
    let xs = Tensor::arange(w, (Kind::Int64, dev)).view([1, 1, w]);
    let inside = (ys - cy)
        .abs()
        .le(ch / 2)
        .logical_and(&(xs - cx).abs().le(cw / 2));
    x * inside.logical_not().to_kind(Kind::Float).unsqueeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_kept_and_gradients_flow() {
        tch::manual_seed(1);
        let x =
            Tensor::rand([4, 1, 16, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let y = diff_augment(&x, &[Aug::Color, Aug::Translation, Aug::Cutout]);
        assert_eq!(y.size(), vec![4, 1, 16, 16]);
        y.sum(Kind::Float).backward();
        assert!(x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // Cutout zeroes a square of about half the side in every image.
        let c = cutout(
            &Tensor::ones([3, 1, 16, 16], (Kind::Float, tch::Device::Cpu)),
            0.5,
        );
        for i in 0..3 {
            let zeros = c.get(i).eq(0.0).sum(Kind::Int64).int64_value(&[]);
            assert!((16..=81).contains(&zeros), "{zeros} zeroed pixels");
        }
        // A translation moves content but keeps the sum of a shifted-in-bounds image.
        let t = translation(
            &Tensor::ones([2, 1, 16, 16], (Kind::Float, tch::Device::Cpu)),
            0.0,
        );
        assert!(t.eq(1.0).all().int64_value(&[]) == 1);
    }
}
