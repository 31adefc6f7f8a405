//! How varied a set of images is: the mean pairwise RMS pixel distance, used by `gan-train` (its
//! collapse warning) and `filter` (per class, generated against real).

use tch::{Device, Kind, Tensor};

/// Mean pairwise RMS distance within images `[N, ...]` whose pixels are in [0, 1]. `None` for
/// fewer than 2 images.
pub fn diversity(images: &Tensor) -> Option<f64> {
    let n = images.size()[0];
    if n < 2 {
        return None;
    }
    let x = images.to_kind(Kind::Float).reshape([n, -1]);
    let d = x.size()[1] as f64;
    let sum = f64::try_from(Tensor::cdist(&x, &x, 2.0, None::<i64>).sum(Kind::Double)).ok()?;
    Some(sum / d.sqrt() / (n * (n - 1)) as f64)
}

/// [`diversity`] of u8 images `[N, C, H, W]` (pixels / 255), over at most the first `max`.
pub fn diversity_u8(images: &Tensor, max: i64, device: Device) -> Option<f64> {
    let n = images.size()[0].min(max);
    if n < 2 {
        return None;
    }
    diversity(
        &(images
            .narrow(0, 0, n)
            .to_device(device)
            .to_kind(Kind::Float)
            / 255.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_for_copies_positive_otherwise_none_for_one() {
        let one = Tensor::randint(255, [1, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        let copies = one.repeat([5, 1, 1, 1]);
        assert!(diversity_u8(&copies, 100, Device::Cpu).unwrap() < 1e-6);
        let varied = Tensor::randint(255, [5, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        assert!(diversity_u8(&varied, 100, Device::Cpu).unwrap() > 0.2);
        assert!(diversity_u8(&one, 100, Device::Cpu).is_none());
    }

    #[test]
    fn two_opposite_images_are_one_apart() {
        let x = Tensor::cat(
            &[
                Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu)),
                Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        assert!((diversity(&x).unwrap() - 1.0).abs() < 1e-6);
    }
}
