//! Adam whose state we own, so a checkpoint can hold it and a resumed run continues exactly.
//! (tch's `nn::Optimizer` keeps its moments inside libtorch, out of reach.)

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{nn::VarStore, Tensor};

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

    /// One Adam update from the current gradients.
    pub fn step(&mut self) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        let step_size = self.lr / bc1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for ((((_, p), m), v), mult) in self
                .params
                .iter_mut()
                .zip(&mut self.m)
                .zip(&mut self.v)
                .zip(&self.lr_mult)
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                // In place, as torch.optim.Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
                // p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
                let _ = m.lerp_(&g, 1.0 - b1);
                let _ = v.lerp_(&g.square(), 1.0 - b2);
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(eps);
                let _ = denom.g_mul_scalar_(-1.0 / (step_size * mult));
                let _ = p.addcdiv_(m, &denom);
            }
        });
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
}
