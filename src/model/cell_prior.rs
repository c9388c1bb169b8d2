//! The cell prior: an optional extension of the predictor (not in the official model) that adds
//! a data-independent score to every graph,
//!
//! `prior(g) = cell_prior.2(tanh(cell_prior.0(x(g))))`,
//!
//! where `x(g)` is the one-hot vertex type of each operation vertex (vertices `1..n-1`; a
//! NAS-Bench-201 cell gives 6 × 5 = 30 inputs). The predictor's score of a graph on a dataset
//! becomes `pred_fc([D; G]) + prior(g)`: the prior carries what a source benchmark says about
//! the cell (meta-trained on the NAS-Bench-201 ImageNet16-120 column, see
//! `src/train/ranker.rs`), the official head what the dataset changes about it.
//!
//! Weights without `cell_prior.*` tensors (every official checkpoint) have no prior, and their
//! scores are exactly the official ones.

use crate::error::{Error, Result};
use crate::graph::Dag;
use crate::nn::linalg::dot_tanh;
use crate::nn::Linear;
use crate::weights::WeightStore;

/// Tensor-name prefix of the prior's two layers.
pub const PREFIX: &str = "cell_prior";

#[derive(Debug)]
pub struct CellPrior {
    /// `cell_prior.0`'s weight transposed, `[inputs, hidden]`: one contiguous row per input.
    cols: Vec<f32>,
    bias: Vec<f32>,
    out: Vec<f32>,
    out_bias: f32,
    /// Operation types per vertex (`nvt − 2`) and operation vertices (`max_n − 2`).
    types: usize,
    slots: usize,
    hidden: usize,
}

impl CellPrior {
    /// Number of inputs of a prior for graphs of `max_n` vertices of `nvt` types.
    pub fn inputs(nvt: usize, max_n: usize) -> usize {
        nvt.saturating_sub(2) * max_n.saturating_sub(2)
    }

    /// The prior of a predictor file, or `None` when it has no `cell_prior.*` tensors.
    pub fn load_optional(store: &WeightStore, nvt: usize, max_n: usize) -> Result<Option<Self>> {
        let w0 = format!("{PREFIX}.0.weight");
        if !store.contains(&w0) {
            return Ok(None);
        }
        let inputs = Self::inputs(nvt, max_n);
        let shape = store.shape(&w0)?.to_vec();
        if shape.len() != 2 || shape[1] != inputs || shape[0] == 0 {
            return Err(Error::invalid(format!(
                "{w0} has shape {shape:?}; a prior for {max_n}-vertex graphs of {nvt} types needs [hidden, {inputs}]"
            )));
        }
        let hidden = shape[0];
        let l0 = Linear::load(store, &format!("{PREFIX}.0"), inputs, hidden, true)?;
        let l2 = Linear::load(store, &format!("{PREFIX}.2"), hidden, 1, true)?;
        let cols = (0..inputs).flat_map(|c| l0.column(c)).collect();
        Ok(Some(CellPrior {
            cols,
            bias: l0.bias.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
            out: l2.weight.to_vec(),
            out_bias: l2.bias.as_ref().map_or(0.0, |b| b[0]),
            types: nvt - 2,
            slots: max_n - 2,
            hidden,
        }))
    }

    /// The prior of one graph. Vertices beyond the prior's slots and non-operation types
    /// (START, END) contribute nothing.
    pub fn score(&self, g: &Dag) -> f32 {
        let mut h = vec![0.0f32; self.hidden];
        for (k, &t) in g.types.iter().skip(1).take(self.slots).enumerate() {
            let t = t as usize;
            if (2..2 + self.types).contains(&t) {
                let c = k * self.types + t - 2;
                for (h, w) in h.iter_mut().zip(&self.cols[c * self.hidden..]) {
                    *h += w;
                }
            }
        }
        dot_tanh(&h, &self.bias, &self.out) + self.out_bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::space::Nb201Arch;

    /// A prior with random weights, and the same weights as plain vectors.
    fn random_prior(hidden: usize) -> (CellPrior, Vec<f32>, Vec<f32>, Vec<f32>, f32) {
        let mut rng = Rng::new(7, 1);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32 * 0.5).collect() };
        let (w0, b0, w2, b2) = (r(hidden * 30), r(hidden), r(hidden), r(1));
        let tensors = vec![
            (format!("{PREFIX}.0.weight"), vec![hidden, 30], w0.clone()),
            (format!("{PREFIX}.0.bias"), vec![hidden], b0.clone()),
            (format!("{PREFIX}.2.weight"), vec![1, hidden], w2.clone()),
            (format!("{PREFIX}.2.bias"), vec![1], b2.clone()),
        ];
        let store = WeightStore::from_tensors("prior", &tensors).unwrap();
        let prior = CellPrior::load_optional(&store, 7, 8).unwrap().unwrap();
        (prior, w0, b0, w2, b2[0])
    }

    #[test]
    fn scores_equal_a_plain_mlp_on_the_one_hot_operations() {
        let hidden = 24;
        let (prior, w0, b0, w2, b2) = random_prior(hidden);
        let mut worst = 0.0f32;
        for code in (0..15_625).step_by(97) {
            let a = Nb201Arch::from_code(code).unwrap();
            let mut x = [0.0f32; 30];
            for (k, &op) in a.ops.iter().enumerate() {
                x[k * 5 + op as usize] = 1.0;
            }
            let mut y = b2;
            for j in 0..hidden {
                let h: f32 = b0[j] + (0..30).map(|i| w0[j * 30 + i] * x[i]).sum::<f32>();
                y += w2[j] * h.tanh();
            }
            let got = prior.score(&a.to_graph());
            worst = worst.max((got - y).abs() / y.abs().max(1.0));
        }
        assert!(worst < 1e-5, "worst relative error {worst}");
    }

    #[test]
    fn weights_without_a_prior_have_none_and_a_wrong_shape_is_refused() {
        let store =
            WeightStore::from_tensors("none", &[("x".to_string(), vec![1], vec![0.0])]).unwrap();
        assert!(CellPrior::load_optional(&store, 7, 8).unwrap().is_none());
        let (prior, ..) = random_prior(4);
        assert_eq!(prior.hidden, 4);
        let store = WeightStore::from_tensors(
            "bad",
            &[(format!("{PREFIX}.0.weight"), vec![4, 29], vec![0.0; 116])],
        )
        .unwrap();
        let err = CellPrior::load_optional(&store, 7, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[hidden, 30]"), "{err}");
    }
}
