//! Judge-space quality: a Fréchet distance between two feature sets (FID-style, with the judge's
//! penultimate layer instead of Inception), and nearest-real-image distances for memorisation.

use tch::{Device, Kind, Tensor};

/// Mean `[D]` and covariance `[D, D]` (n − 1) of features `[N, D]`, in f64.
fn moments(f: &Tensor) -> (Tensor, Tensor) {
    let f = f.to_kind(Kind::Double);
    let n = f.size()[0];
    let mu = f.mean_dim(0, false, Kind::Double);
    let c = &f - &mu;
    let cov = c.transpose(0, 1).matmul(&c) / ((n - 1).max(1) as f64);
    (mu, cov)
}

/// Symmetric PSD square root by eigendecomposition (negative round-off eigenvalues clamped to 0).
fn sqrt_psd(m: &Tensor) -> Tensor {
    let (vals, vecs) = ((m + m.transpose(0, 1)) / 2.0).linalg_eigh("L");
    let s = vals.clamp_min(0.0).sqrt();
    (&vecs * s.unsqueeze(0)).matmul(&vecs.transpose(0, 1))
}

/// Fréchet distance between Gaussians fitted to features `a` `[N, D]` and `b` `[M, D]`:
/// ‖μa − μb‖² + tr(Σa) + tr(Σb) − 2 tr((Σa^½ Σb Σa^½)^½). `None` when either set has < 2 rows.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Option<f64> {
    if a.size()[0] < 2 || b.size()[0] < 2 {
        return None;
    }
    let (a, b) = (a.to_device(Device::Cpu), b.to_device(Device::Cpu));
    let (mu_a, cov_a) = moments(&a);
    let (mu_b, cov_b) = moments(&b);
    let ra = sqrt_psd(&cov_a);
    let mid = ra.matmul(&cov_b).matmul(&ra);
    let (vals, _) = ((&mid + mid.transpose(0, 1)) / 2.0).linalg_eigh("L");
    let tr_sqrt = f64::try_from(vals.clamp_min(0.0).sqrt().sum(Kind::Double)).ok()?;
    let diff = f64::try_from((&mu_a - &mu_b).square().sum(Kind::Double)).ok()?;
    let tr = f64::try_from(cov_a.trace() + cov_b.trace()).ok()?;
    Some((diff + tr - 2.0 * tr_sqrt).max(0.0))
}

/// For every image of `query` (u8 `[N, C, H, W]`), the RMS pixel distance (pixels in [0, 1]) to
/// its nearest image in `reference` (u8 `[M, C, H, W]`) and that image's index.
pub fn nearest(query: &Tensor, reference: &Tensor, device: Device) -> (Vec<f64>, Vec<i64>) {
    let n = query.size()[0];
    let m = reference.size()[0];
    if n == 0 || m == 0 {
        return (vec![f64::INFINITY; n as usize], vec![-1; n as usize]);
    }
    let flat = |t: &Tensor| {
        t.to_device(device)
            .to_kind(Kind::Float)
            .view([t.size()[0], -1])
            / 255.0
    };
    let r = flat(reference);
    let d = r.size()[1] as f64;
    let (mut dist, mut idx) = (Vec::new(), Vec::new());
    for s in (0..n).step_by(1024) {
        let q = flat(&query.narrow(0, s, 1024.min(n - s)));
        let dd = Tensor::cdist(&q, &r, 2.0, None::<i64>);
        let (v, i) = dd.min_dim(1, false);
        dist.extend(
            Vec::<f64>::try_from((v / d.sqrt()).to_kind(Kind::Double).to_device(Device::Cpu))
                .expect("f64"),
        );
        idx.extend(Vec::<i64>::try_from(i.to_device(Device::Cpu)).expect("i64"));
    }
    (dist, idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_of_a_set_with_itself_is_zero_and_grows_with_a_shift() {
        tch::manual_seed(0);
        let a = Tensor::randn([200, 16], (Kind::Double, Device::Cpu));
        let a = &a - a.mean_dim(0, true, Kind::Double); // centred, so scaling leaves the mean at 0
        let same = frechet_distance(&a, &a).unwrap();
        assert!(same.abs() < 1e-6, "{same}");
        // A mean shift of 1 in every one of 16 dimensions adds exactly 16.
        let shifted = frechet_distance(&a, &(&a + 1.0)).unwrap();
        assert!((shifted - 16.0).abs() < 1e-6, "{shifted}");
        // Scaling by 2: tr(S) + tr(4S) - 2 tr(2S) = tr(S) ≈ 16.
        let scaled = frechet_distance(&a, &(&a * 2.0)).unwrap();
        let tr = f64::try_from(moments(&a).1.trace()).unwrap();
        assert!((scaled - tr).abs() < 1e-6 * tr, "{scaled} vs {tr}");
        assert!(frechet_distance(&a.narrow(0, 0, 1), &a).is_none());
    }

    #[test]
    fn nearest_finds_a_planted_copy() {
        tch::manual_seed(1);
        let reference = Tensor::randint(255, [50, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        let copy = reference.narrow(0, 17, 1);
        let other = Tensor::randint(255, [1, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        let q = Tensor::cat(&[other, copy], 0);
        let (d, i) = nearest(&q, &reference, Device::Cpu);
        assert_eq!(i[1], 17);
        // cdist's matrix-product path leaves round-off of order 1e-4 on an exact copy, far
        // below the 0.05 near-copy threshold.
        assert!(d[1] < 1e-3, "{}", d[1]);
        assert!(d[0] > 0.2, "random images are far apart: {}", d[0]);
    }
}
