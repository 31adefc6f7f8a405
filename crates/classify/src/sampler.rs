//! `--sampler`: which training images an epoch draws, in a (seed, epoch)-determined order.

use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::seq::SliceRandom;
use rand::Rng;
use rebalance_core::contract::classify::Sampler;

/// The training set's images by class, and how to draw from them.
pub struct Draws {
    sampler: Sampler,
    /// The images drawn from (indices into the training set).
    pool: Vec<i64>,
    by_class: Vec<Vec<i64>>,
    /// The class distribution of class-balanced and sqrt draws (over classes with images).
    classes: Option<(Vec<usize>, WeightedIndex<f64>)>,
}

impl Draws {
    /// Every image; `labels` are class indices below `k`.
    pub fn new(labels: &[i64], k: usize, sampler: Sampler) -> Self {
        let all: Vec<i64> = (0..labels.len() as i64).collect();
        Self::over(&all, labels, k, sampler)
    }

    /// The images `pool` (indices into `labels`, the whole set's) only.
    pub fn over(pool: &[i64], labels: &[i64], k: usize, sampler: Sampler) -> Self {
        let mut by_class = vec![Vec::new(); k];
        for &i in pool {
            by_class[labels[i as usize] as usize].push(i);
        }
        let present: Vec<usize> = (0..k).filter(|&c| !by_class[c].is_empty()).collect();
        let weight = |c: usize| match sampler {
            Sampler::Sqrt => (by_class[c].len() as f64).sqrt(),
            _ => 1.0,
        };
        let classes = (sampler != Sampler::Uniform && !present.is_empty()).then(|| {
            let w = WeightedIndex::new(present.iter().map(|&c| weight(c))).expect("weights > 0");
            (present, w)
        });
        Self {
            sampler,
            pool: pool.to_vec(),
            by_class,
            classes,
        }
    }

    /// Draws per epoch when `--epoch-size` is not given: one pass for uniform sampling; for
    /// the others, as many draws as the balanced set would hold (classes × the largest count).
    pub fn default_epoch_size(&self) -> usize {
        match self.sampler {
            Sampler::Uniform => self.pool.len(),
            _ => {
                let present = self.by_class.iter().filter(|c| !c.is_empty()).count();
                present * self.by_class.iter().map(Vec::len).max().unwrap_or(0)
            }
        }
    }

    /// One epoch of `size` image indices. Uniform: shuffled passes over the set, each image
    /// once per pass (one pass of the whole set is exactly the order classify always used).
    /// Otherwise: a class from the sampler's distribution, then one of its images, uniformly.
    pub fn epoch(&self, size: usize, rng: &mut impl Rng) -> Vec<i64> {
        let mut out = Vec::with_capacity(size);
        match &self.classes {
            None => {
                while out.len() < size && !self.pool.is_empty() {
                    let mut order = self.pool.clone();
                    order.shuffle(rng);
                    out.extend(order.into_iter().take(size - out.len()));
                }
            }
            Some((present, dist)) => {
                for _ in 0..size {
                    let imgs = &self.by_class[present[dist.sample(rng)]];
                    out.push(imgs[rng.random_range(0..imgs.len())]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// 300, 10, 10 images: labels 0…
    fn labels() -> Vec<i64> {
        let mut l = vec![0i64; 300];
        l.extend([1; 10]);
        l.extend([2; 10]);
        l
    }

    fn freq(d: &Draws, l: &[i64], size: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let e = d.epoch(size, &mut rng);
        assert_eq!(e.len(), size);
        let mut f = vec![0.0; 3];
        for i in e {
            f[l[i as usize] as usize] += 1.0 / size as f64;
        }
        f
    }

    #[test]
    fn class_balanced_draws_every_class_alike() {
        let l = labels();
        let d = Draws::new(&l, 3, Sampler::ClassBalanced);
        assert_eq!(d.default_epoch_size(), 900);
        let f = freq(&d, &l, 30_000, 1);
        for v in &f {
            assert!((v - 1.0 / 3.0).abs() < 0.015, "{f:?}");
        }
    }

    #[test]
    fn sqrt_draws_by_the_root_of_the_count() {
        let l = labels();
        let d = Draws::new(&l, 3, Sampler::Sqrt);
        let f = freq(&d, &l, 30_000, 2);
        let (a, b) = (300f64.sqrt(), 10f64.sqrt());
        let want = [a / (a + 2.0 * b), b / (a + 2.0 * b), b / (a + 2.0 * b)];
        for (v, w) in f.iter().zip(want) {
            assert!((v - w).abs() < 0.015, "{f:?} against {want:?}");
        }
    }

    #[test]
    fn uniform_is_shuffled_passes_and_seeded() {
        let l = labels();
        let d = Draws::new(&l, 3, Sampler::Uniform);
        assert_eq!(d.default_epoch_size(), 320);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut one = d.epoch(320, &mut rng);
        one.sort_unstable();
        assert_eq!(
            one,
            (0..320).collect::<Vec<i64>>(),
            "one pass: each image once"
        );
        // One pass is the order classify used before samplers: a shuffle of 0..n.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut want: Vec<i64> = (0..320).collect();
        want.shuffle(&mut rng);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        assert_eq!(d.epoch(320, &mut rng), want);
        let f = freq(&d, &l, 640, 5);
        assert!(
            (f[0] - 300.0 / 320.0).abs() < 1e-9,
            "two whole passes: {f:?}"
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let a = d.epoch(500, &mut rng);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        assert_eq!(d.epoch(500, &mut rng), a);
    }
}
