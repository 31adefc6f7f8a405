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
    // Rows cy - ch/2 .. cy - ch/2 + ch (ch of them), clipped at the border, as in the
    // reference implementation; the same for columns.
    let ys = Tensor::arange(h, (Kind::Int64, dev)).view([1, h, 1]) - cy + ch / 2;
    let xs = Tensor::arange(w, (Kind::Int64, dev)).view([1, 1, w]) - cx + cw / 2;
    let inside = ys
        .ge(0)
        .logical_and(&ys.lt(ch))
        .logical_and(&xs.ge(0))
        .logical_and(&xs.lt(cw));
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
    }

    #[test]
    fn cutout_zeroes_a_square_of_half_the_side_clipped_at_the_border() {
        tch::manual_seed(2);
        let c = cutout(
            &Tensor::ones([200, 1, 16, 16], (Kind::Float, tch::Device::Cpu)),
            0.5,
        );
        let zero = c.eq(0.0);
        let mut full = 0;
        for i in 0..200 {
            let z = zero.get(i).get(0);
            let n = z.sum(Kind::Int64).int64_value(&[]);
            // The zeroed pixels are a rectangle of at most 8×8.
            let rows = z.any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
            let cols = z.any_dim(0, false).sum(Kind::Int64).int64_value(&[]);
            assert!(rows <= 8 && cols <= 8, "image {i}: {rows}×{cols}");
            assert_eq!(n, rows * cols, "image {i}: not a rectangle");
            full += (n == 64) as usize;
        }
        assert!(full > 50, "only {full} of 200 squares lie fully inside");
    }

    #[test]
    fn translation_moves_by_whole_pixels_up_to_an_eighth_of_the_side() {
        tch::manual_seed(3);
        let n = 64;
        let x = Tensor::zeros([n, 1, 16, 16], (Kind::Float, tch::Device::Cpu));
        let _ = x.narrow(2, 8, 1).narrow(3, 8, 1).fill_(1.0);
        let t = translation(&x, 0.125);
        let mut shifts = std::collections::BTreeSet::new();
        for i in 0..n {
            let img = t.get(i).get(0);
            // One pixel of value 1 moved, nothing blurred (nearest sampling, whole pixels).
            assert_eq!(img.sum(Kind::Float).double_value(&[]), 1.0, "image {i}");
            let at = img.flatten(0, 1).argmax(0, false).int64_value(&[]);
            let (dy, dx) = (at / 16 - 8, at % 16 - 8);
            assert!(
                dy.abs() <= 2 && dx.abs() <= 2,
                "image {i}: shift ({dy}, {dx})"
            );
            shifts.insert((dy, dx));
        }
        assert!(shifts.len() >= 10, "only {} distinct shifts", shifts.len());
    }
}
