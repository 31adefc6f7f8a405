//! Early stopping on a validation score: the best epoch so far (higher macro-F1, ties broken by
//! lower loss) and how many epochs have passed without beating it. Serialisable, so it rides in
//! a checkpoint and a resumed run stops where an uninterrupted one would.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement that end training (0 = never stop early).
    pub patience: usize,
    pub best_epoch: usize,
    pub best_score: f64,
    pub best_loss: f64,
    pub bad_epochs: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            best_epoch: 0,
            best_score: -1.0,
            best_loss: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// Record an epoch's validation score and loss; true when it is the new best.
    pub fn update(&mut self, epoch: usize, score: f64, loss: f64) -> bool {
        let better = score > self.best_score + 1e-9
            || ((score - self.best_score).abs() <= 1e-9 && loss < self.best_loss);
        if better {
            self.best_score = score;
            self.best_loss = loss;
            self.best_epoch = epoch;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        better
    }

    /// True once `patience` epochs in a row failed to improve.
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.bad_epochs >= self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_bad_epochs_and_keeps_the_best() {
        let mut es = EarlyStopping::new(2);
        assert!(es.update(1, 0.5, 1.0));
        assert!(es.update(2, 0.6, 0.9));
        assert!(!es.update(3, 0.55, 0.8));
        assert!(!es.should_stop());
        assert!(
            !es.update(4, 0.6, 0.95),
            "a tie with a higher loss is no better"
        );
        assert!(es.should_stop());
        assert_eq!(es.best_epoch, 2);
    }

    #[test]
    fn a_tie_with_lower_loss_is_better_and_resets_the_count() {
        let mut es = EarlyStopping::new(3);
        es.update(1, 0.7, 0.5);
        es.update(2, 0.6, 0.5);
        assert!(es.update(3, 0.7, 0.4));
        assert_eq!((es.best_epoch, es.bad_epochs), (3, 0));
    }

    #[test]
    fn patience_zero_never_stops() {
        let mut es = EarlyStopping::new(0);
        es.update(1, 0.9, 0.1);
        for e in 2..50 {
            es.update(e, 0.1, 1.0);
        }
        assert!(!es.should_stop());
    }
}
