//! Adam whose state we own, so a checkpoint can hold it and a resumed run continues exactly.
//! (tch's `nn::Optimizer` keeps its moments inside libtorch, out of reach.)

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{nn::VarStore, Tensor};

use crate::ops::{fused_adam, AdamStep};

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of updates made so far (for bias correction).
    pub t: i64,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per parameter, a multiplier of `lr` (1 for all but those [`Adam::set_lr_mult`] chose).
    lr_mult: Vec<f64>,
}

impl Adam {
    /// Adam over the trainable variables of `vs`, in name order.
    pub fn new(vs: &VarStore, lr: f64, beta1: f64, beta2: f64) -> Self {
        let trainable: Vec<Tensor> = vs.trainable_variables();
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| trainable.iter().any(|x| x.data_ptr() == t.data_ptr()))
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let lr_mult = vec![1.0; params.len()];
        Self {
            lr_mult,
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            t: 0,
            params,
            m,
            v,
        }
    }

    /// Train the parameters whose names `pick` accepts at `mult` × the learning rate.
    pub fn set_lr_mult(&mut self, pick: impl Fn(&str) -> bool, mult: f64) {
        for ((name, _), m) in self.params.iter().zip(&mut self.lr_mult) {
            if pick(name) {
                *m = mult;
            }
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One Adam update from the current gradients, in ATen's fused kernel (one call per
    /// learning-rate multiplier). Parameters without a gradient are left alone.
    pub fn step(&mut self) {
        self.t += 1;
        // (multiplier, [params, grads, m, v]) for the parameters that have a gradient.
        let mut groups: Vec<(f64, [Vec<Tensor>; 4])> = Vec::new();
        for ((((_, p), m), v), &mult) in self
            .params
            .iter()
            .zip(&self.m)
            .zip(&self.v)
            .zip(&self.lr_mult)
        {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let at = match groups.iter().position(|(k, _)| *k == mult) {
                Some(i) => i,
                None => {
                    groups.push((mult, Default::default()));
                    groups.len() - 1
                }
            };
            let [ps, gs, ms, vs] = &mut groups[at].1;
            ps.push(p.shallow_clone());
            gs.push(g);
            ms.push(m.shallow_clone());
            vs.push(v.shallow_clone());
        }
        for (mult, [ps, gs, ms, vs]) in groups {
            let h = AdamStep {
                t: self.t,
                lr: self.lr * mult,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
            };
            fused_adam(&ps, &gs, &ms, &vs, h);
        }
    }

    /// The moments as named tensors (`<prefix>m.<var>`, `<prefix>v.<var>`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (((name, _), m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("{prefix}m.{name}"), m.shallow_clone()));
            out.push((format!("{prefix}v.{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restore the moments written by [`Adam::state`]; `t` is restored by the caller.
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (((name, _), m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
            for (kind, dst) in [("m", m), ("v", v)] {
                let key = format!("{prefix}{kind}.{name}");
                let Some(src) = tensors.get(&key) else {
                    bail!("checkpoint has no optimizer state `{key}`");
                };
                if src.size() != dst.size() {
                    bail!(
                        "optimizer state `{key}` has shape {:?}, the model needs {:?}",
                        src.size(),
                        dst.size()
                    );
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_torch_adam_on_a_quadratic() {
        // Minimise sum((w - 3)^2) from w = 0; with lr 0.1 Adam moves about 0.1 per step.
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[4]);
        let mut opt = Adam::new(&vs, 0.1, 0.9, 0.999);
        for _ in 0..5 {
            opt.zero_grad();
            (&w - 3.0).square().sum(Kind::Float).backward();
            opt.step();
        }
        let got = Vec::<f32>::try_from(&w).unwrap();
        // Reference, measured: torch.optim.Adam(lr=0.1, betas=(0.9, 0.999)), 5 steps from 0
        // on sum((w - 3)^2) gives 0.4982205629348755.
        for x in got {
            assert!((x - 0.498_220_56).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn a_learning_rate_multiplier_scales_only_its_parameters_and_gradless_ones_stay() {
        // With |g| constant, Adam's first step moves each weight by lr (its sign's direction),
        // so the multiplier shows directly in the step size.
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().zeros("a", &[2]);
        let b = vs.root().zeros("b", &[2]);
        let idle = vs.root().zeros("idle", &[2]);
        let mut opt = Adam::new(&vs, 0.1, 0.9, 0.999);
        opt.set_lr_mult(|name| name == "b", 10.0);
        opt.zero_grad();
        ((&a - 3.0).square().sum(Kind::Float) + (&b - 3.0).square().sum(Kind::Float)).backward();
        opt.step();
        for x in Vec::<f32>::try_from(&a).unwrap() {
            assert!((x - 0.1).abs() < 1e-6, "{x}");
        }
        for x in Vec::<f32>::try_from(&b).unwrap() {
            assert!((x - 1.0).abs() < 1e-5, "{x}");
        }
        assert_eq!(Vec::<f32>::try_from(&idle).unwrap(), vec![0.0, 0.0]);
    }
}
