//! TrivialAugment (Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet State-of-the-Art Data
//! Augmentation") in torchvision's `TrivialAugmentWide` form: each image gets one operation,
//! drawn uniformly, at one of 31 magnitudes, drawn uniformly (with a random sign for the signed
//! operations). The operations and magnitude ranges are torchvision's:
//!
//! | operation | magnitudes (31 bins) | signed |
//! |---|---|---|
//! | Identity, AutoContrast, Equalize | — | no |
//! | ShearX, ShearY | 0 … 0.99 (the shear's tangent) | yes |
//! | TranslateX, TranslateY | 0 … 32 pixels (whole pixels) | yes |
//! | Rotate | 0 … 135 degrees | yes |
//! | Brightness, Color, Contrast, Sharpness | factor 1 + (0 … 0.99) | yes |
//! | Posterize | 8 … 2 bits kept | no |
//! | Solarize | threshold 255 … 0 | no |
//!
//! Color (saturation) changes nothing in a grey image, so grey images draw from the other 13.
//! Geometric operations resample with the nearest pixel and fill with 0, as torchvision's
//! defaults do; intensity operations follow torchvision's uint8 arithmetic (results truncated
//! to whole values). Everything runs batched on the images' device: the images that drew the
//! same operation are transformed together.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use super::affine::{warp_nearest, Padding};

/// Magnitude bins, as torchvision's default `num_magnitude_bins`.
pub const BINS: usize = 31;

/// One of TrivialAugmentWide's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

const ALL: [Op; 14] = [
    Op::Identity,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
    Op::Rotate,
    Op::Brightness,
    Op::Color,
    Op::Contrast,
    Op::Sharpness,
    Op::Posterize,
    Op::Solarize,
    Op::AutoContrast,
    Op::Equalize,
];

impl Op {
    /// The operations that make sense for images of `channels` channels.
    pub fn for_channels(channels: i64) -> Vec<Op> {
        ALL.into_iter()
            .filter(|&o| o != Op::Color || channels == 3)
            .collect()
    }

    fn signed(self) -> bool {
        use Op::*;
        matches!(
            self,
            ShearX
                | ShearY
                | TranslateX
                | TranslateY
                | Rotate
                | Brightness
                | Color
                | Contrast
                | Sharpness
        )
    }

    /// The magnitude of bin `b` (0-based, of [`BINS`]); `None` for the operations without one.
    pub fn magnitude(self, b: usize) -> Option<f64> {
        use Op::*;
        let t = b as f64 / (BINS - 1) as f64;
        Some(match self {
            Identity | AutoContrast | Equalize => return None,
            ShearX | ShearY | Brightness | Color | Contrast | Sharpness => 0.99 * t,
            TranslateX | TranslateY => 32.0 * t,
            Rotate => 135.0 * t,
            // 8 - round(b / ((BINS - 1) / 6)): 8 bits at bin 0 down to 2 at the last.
            Posterize => 8.0 - (b as f64 / ((BINS - 1) as f64 / 6.0)).round(),
            Solarize => 255.0 * (1.0 - t),
        })
    }

    fn geometric(self) -> bool {
        use Op::*;
        matches!(self, ShearX | ShearY | TranslateX | TranslateY | Rotate)
    }
}

/// One image's drawn operation and (signed) magnitude.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub op: Op,
    pub magnitude: f64,
}

/// Draw one operation for each of `n` images, as torchvision does: the operation uniformly, a
/// bin uniformly, then a sign.
pub fn draw(n: usize, ops: &[Op], rng: &mut impl Rng) -> Vec<Draw> {
    (0..n)
        .map(|_| {
            let op = ops[rng.random_range(0..ops.len())];
            let mut magnitude = op.magnitude(rng.random_range(0..BINS)).unwrap_or_default();
            if op.signed() && rng.random_bool(0.5) {
                magnitude = -magnitude;
            }
            Draw { op, magnitude }
        })
        .collect()
}

/// The output-to-input matrix (in [-1, 1] units) of a geometric draw on an `h`×`w` image.
fn matrix(d: Draw, h: i64, w: i64) -> [f32; 6] {
    let (h, w, m) = (h as f64, w as f64, d.magnitude);
    let r = match d.op {
        // Shear about the top-left corner (torchvision's center=[0, 0]): x_in = x - m·y.
        Op::ShearX => [1.0, -m * h / w, -m * h / w, 0.0, 1.0, 0.0],
        Op::ShearY => [1.0, 0.0, 0.0, -m * w / h, 1.0, -m * w / h],
        // Whole pixels, as torchvision's int(magnitude).
        Op::TranslateX => [1.0, 0.0, -2.0 * m.trunc() / w, 0.0, 1.0, 0.0],
        Op::TranslateY => [1.0, 0.0, 0.0, 0.0, 1.0, -2.0 * m.trunc() / h],
        Op::Rotate => {
            let (s, c) = m.to_radians().sin_cos();
            [c, -s * h / w, 0.0, s * w / h, c, 0.0]
        }
        _ => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    };
    r.map(|v| v as f32)
}

/// A per-image factor `[n, 1, 1, 1]` on `device`.
fn per_image(v: &[f64], device: Device) -> Tensor {
    Tensor::from_slice(v)
        .to_kind(Kind::Float)
        .to_device(device)
        .view([-1, 1, 1, 1])
}

/// torchvision's `_blend` for uint8 images: `f·a + (1 − f)·b`, clamped, truncated.
fn blend(a: &Tensor, b: &Tensor, f: &Tensor) -> Tensor {
    (a * f + b * (f.neg() + 1.0)).clamp(0.0, 255.0).floor()
}

/// Greyscale of `[n, C, H, W]` as `[n, 1, H, W]` (ITU-R 601-2 luma, truncated as for uint8).
fn grey(x: &Tensor) -> Tensor {
    if x.size()[1] == 1 {
        return x.shallow_clone();
    }
    let w = Tensor::from_slice(&[0.2989f32, 0.587, 0.114])
        .to_device(x.device())
        .view([1, 3, 1, 1]);
    (x * w)
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        .floor()
}

/// torchvision's sharpness degenerate: a 3×3 smoothing (centre weight 5 of 13), rounded, with
/// the border pixels kept.
fn smoothed(x: &Tensor) -> Tensor {
    let s = x.size();
    let c = s[1];
    let k = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0])
        .to_device(x.device())
        .view([1, 1, 3, 3])
        / 13.0;
    let k = k.expand([c, 1, 3, 3], true).contiguous();
    let inner = x
        .conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
        .round();
    let out = x.copy();
    out.narrow(2, 1, s[2] - 2)
        .narrow(3, 1, s[3] - 2)
        .copy_(&inner);
    out
}

/// Per image and channel: stretch the range to 0..255 (unchanged where it is flat).
fn autocontrast(x: &Tensor) -> Tensor {
    let lo = x.amin([2i64, 3].as_slice(), true);
    let hi = x.amax([2i64, 3].as_slice(), true);
    let flat = hi.eq_tensor(&lo);
    let lo = lo.where_self(&flat.logical_not(), &lo.zeros_like());
    let scale = ((&hi - &lo).reciprocal() * 255.0).where_self(&flat.logical_not(), &hi.ones_like());
    ((x - lo) * scale).clamp(0.0, 255.0).floor()
}

/// Per image and channel, PIL's histogram equalisation as torchvision computes it: the step is
/// the pixel count outside the brightest occupied bin over 255, and a step of 0 leaves the
/// channel as it is.
fn equalize(x: &Tensor) -> Tensor {
    let s = x.size();
    let m = s[0] * s[1];
    let p = s[2] * s[3];
    let idx = x.reshape([m, p]).to_kind(Kind::Int64);
    let hist = Tensor::zeros([m, 256], (Kind::Float, x.device())).scatter_add(
        1,
        &idx,
        &Tensor::ones([m, p], (Kind::Float, x.device())),
    );
    let top = idx.amax([1i64].as_slice(), true);
    let last = hist.gather(1, &top, false);
    let step = ((p as f64 - last) / 255.0).floor();
    let safe = step.clamp_min(1.0);
    let lut = ((hist.cumsum(1, Kind::Float) + (&step / 2.0).floor()) / &safe).floor();
    let lut = Tensor::cat(
        &[lut.zeros_like().narrow(1, 0, 1), lut.narrow(1, 0, 255)],
        1,
    )
    .clamp(0.0, 255.0);
    let out = lut.gather(1, &idx, false);
    let keep = step.eq(0.0);
    out.where_self(&keep.logical_not(), &idx.to_kind(Kind::Float))
        .reshape(s.as_slice())
}

/// Apply each image's draw to float images `[N, C, H, W]` holding whole values in 0..=255 (on
/// any device); returns the same shape and range.
pub fn apply(x: &Tensor, draws: &[Draw]) -> Tensor {
    let s = x.size();
    assert_eq!(s[0] as usize, draws.len(), "one draw per image");
    let device = x.device();
    let mut out = x.copy();
    let rows = |pred: &dyn Fn(Op) -> bool| -> Vec<i64> {
        (0..draws.len() as i64)
            .filter(|&i| pred(draws[i as usize].op))
            .collect()
    };
    // All geometric draws in one resampling.
    let geo = rows(&|o: Op| o.geometric());
    if !geo.is_empty() {
        let mats: Vec<[f32; 6]> = geo
            .iter()
            .map(|&i| matrix(draws[i as usize], s[2], s[3]))
            .collect();
        let idx = Tensor::from_slice(&geo).to_device(device);
        let moved = warp_nearest(&x.index_select(0, &idx), &mats, Padding::Zeros);
        let _ = out.index_copy_(0, &idx, &moved);
    }
    for op in [
        Op::Brightness,
        Op::Color,
        Op::Contrast,
        Op::Sharpness,
        Op::Posterize,
        Op::Solarize,
        Op::AutoContrast,
        Op::Equalize,
    ] {
        let sel = rows(&|o: Op| o == op);
        if sel.is_empty() {
            continue;
        }
        let idx = Tensor::from_slice(&sel).to_device(device);
        let xs = x.index_select(0, &idx);
        let mags: Vec<f64> = sel.iter().map(|&i| draws[i as usize].magnitude).collect();
        let factor = || per_image(&mags.iter().map(|m| 1.0 + m).collect::<Vec<_>>(), device);
        let y = match op {
            Op::Brightness => blend(&xs, &xs.zeros_like(), &factor()),
            Op::Color => blend(&xs, &grey(&xs), &factor()),
            Op::Contrast => {
                let mean = grey(&xs).mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
                blend(&xs, &mean, &factor())
            }
            Op::Sharpness => blend(&xs, &smoothed(&xs), &factor()),
            Op::Posterize => {
                let q: Vec<f64> = mags.iter().map(|b| 2f64.powi(8 - *b as i32)).collect();
                let q = per_image(&q, device);
                (&xs / &q).floor() * q
            }
            Op::Solarize => {
                let t = per_image(&mags, device);
                (xs.neg() + 255.0).where_self(&xs.ge_tensor(&t), &xs)
            }
            Op::AutoContrast => autocontrast(&xs),
            Op::Equalize => equalize(&xs),
            _ => unreachable!("geometric and identity draws are handled above"),
        };
        let _ = out.index_copy_(0, &idx, &y);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn img(vals: &[f32], h: i64, w: i64) -> Tensor {
        Tensor::from_slice(vals).view([1, 1, h, w])
    }

    fn one(x: &Tensor, op: Op, magnitude: f64) -> Vec<f32> {
        let y = apply(x, &[Draw { op, magnitude }]);
        Vec::<f32>::try_from(y.view([-1])).unwrap()
    }

    #[test]
    fn magnitudes_are_torchvisions() {
        assert_eq!(Op::Rotate.magnitude(30), Some(135.0));
        assert_eq!(Op::TranslateX.magnitude(15), Some(16.0));
        assert_eq!(Op::Posterize.magnitude(0), Some(8.0));
        assert_eq!(Op::Posterize.magnitude(30), Some(2.0));
        assert_eq!(Op::Solarize.magnitude(0), Some(255.0));
        assert_eq!(Op::Solarize.magnitude(30), Some(0.0));
        assert_eq!(Op::Equalize.magnitude(3), None);
        assert_eq!(Op::for_channels(1).len(), 13);
        assert!(!Op::for_channels(1).contains(&Op::Color));
        assert_eq!(Op::for_channels(3).len(), 14);
    }

    #[test]
    fn intensity_ops_follow_the_uint8_arithmetic() {
        let x = img(&[0.0, 10.0, 100.0, 200.0], 2, 2);
        assert_eq!(one(&x, Op::Identity, 0.0), vec![0.0, 10.0, 100.0, 200.0]);
        assert_eq!(one(&x, Op::Brightness, 0.5), vec![0.0, 15.0, 150.0, 255.0]);
        assert_eq!(one(&x, Op::Solarize, 100.0), vec![0.0, 10.0, 155.0, 55.0]);
        // 2 bits kept: multiples of 64.
        assert_eq!(one(&x, Op::Posterize, 2.0), vec![0.0, 0.0, 64.0, 192.0]);
        // Mean 77.5; factor 0 gives the mean everywhere (truncated).
        assert_eq!(one(&x, Op::Contrast, -1.0), vec![77.0; 4]);
        assert_eq!(
            one(&x, Op::AutoContrast, 0.0),
            vec![0.0, 12.0, 127.0, 255.0]
        );
        let flat = img(&[9.0; 4], 2, 2);
        assert_eq!(one(&flat, Op::AutoContrast, 0.0), vec![9.0; 4]);
        assert_eq!(one(&flat, Op::Equalize, 0.0), vec![9.0; 4]);
    }

    #[test]
    fn equalize_spreads_a_narrow_histogram() {
        // 16 pixels, values 100..=103 four times each.
        let v: Vec<f32> = (0..16).map(|i| 100.0 + (i % 4) as f32).collect();
        let y = one(&img(&v, 4, 4), Op::Equalize, 0.0);
        // step = (16 - 4) / 255 = 0 → unchanged (PIL's rule for tiny images).
        assert_eq!(y, v);
        let v: Vec<f32> = (0..1024).map(|i| 100.0 + (i % 4) as f32).collect();
        let y = one(&img(&v, 32, 32), Op::Equalize, 0.0);
        let (lo, hi) = y
            .iter()
            .fold((f32::MAX, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!(lo, 0.0);
        assert!(hi >= 190.0, "{hi}");
    }

    #[test]
    fn geometric_ops_move_pixels_and_keep_the_range() {
        let mut v = vec![0.0f32; 16];
        v[5] = 200.0; // row 1, column 1
        let x = img(&v, 4, 4);
        let y = one(&x, Op::TranslateX, 1.7); // one whole pixel to the right
        assert_eq!(y[6], 200.0);
        assert_eq!(y.iter().filter(|&&p| p > 0.0).count(), 1);
        let y = one(&x, Op::TranslateY, -1.0);
        assert_eq!(y[1], 200.0);
        // A translation past the image leaves the background.
        assert!(one(&x, Op::TranslateX, 32.0).iter().all(|&p| p == 0.0));
        let y = one(&x, Op::Rotate, 90.0);
        assert_eq!(y.iter().filter(|&&p| p == 200.0).count(), 1);
        assert_ne!(y, v);
    }

    #[test]
    fn draws_are_seeded_and_cover_every_op() {
        let ops = Op::for_channels(1);
        let a = draw(2000, &ops, &mut rand_chacha::ChaCha8Rng::seed_from_u64(4));
        let b = draw(2000, &ops, &mut rand_chacha::ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        for op in &ops {
            let n = a.iter().filter(|d| d.op == *op).count();
            // 2000 / 13 ≈ 154 each.
            assert!((100..220).contains(&n), "{op:?}: {n}");
        }
        assert!(a.iter().any(|d| d.op == Op::Rotate && d.magnitude < 0.0));
        assert!(a
            .iter()
            .all(|d| d.op != Op::Posterize || d.magnitude >= 2.0));
        // A batch keeps its shape and range, whatever was drawn.
        tch::manual_seed(1);
        let x = Tensor::randint(256, [2000, 1, 28, 28], (Kind::Float, Device::Cpu));
        let y = apply(&x, &a);
        assert_eq!(y.size(), x.size());
        assert!(y.min().double_value(&[]) >= 0.0 && y.max().double_value(&[]) <= 255.0);
        let whole = (&y - y.round()).abs().max().double_value(&[]);
        assert!(whole < 1e-4, "values stay whole: {whole}");
    }
}
