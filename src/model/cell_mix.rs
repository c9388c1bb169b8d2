//! The cell mix: an optional extension of the predictor (not in the official model) that adds a
//! dataset-dependent value of each operation on each edge,
//!
//! `mix(D, g) = x(g) · (W D + b)`,
//!
//! where `x(g)` is the one-hot vertex type of each operation vertex (the layout of the
//! [cell prior](super::CellPrior): vertices `1..n-1`, 6 × 5 = 30 inputs for a NAS-Bench-201
//! cell), `D` the set encoder's dataset embedding, `W: [inputs, d_D]` and `b: [inputs]`. `b`
//! says which operation helps on every dataset, `W D` what this dataset changes: the head of the
//! official model reads `D` and the graph side by side and, trained on our tasks, lets the
//! dataset change the ranking little; here each edge's operation is priced by the data. The
//! term is linear in `D`, so its mean over set samples is the term of the mean embedding.
//! Meta-trained in `src/train/ranker.rs` (`--mix`).
//!
//! Weights without `cell_mix.*` tensors (every official checkpoint) have no mix, and their
//! scores are exactly the official ones.

use crate::error::{Error, Result};
use crate::graph::Dag;
use crate::weights::WeightStore;

/// Tensor-name prefix of the mix.
pub const PREFIX: &str = "cell_mix";

#[derive(Debug)]
pub struct CellMix {
    /// `W`, `[inputs, d_D]`: one row per (vertex, operation) input.
    weight: Vec<f32>,
    bias: Vec<f32>,
    dd: usize,
    /// Operation types per vertex (`nvt − 2`) and operation vertices (`max_n − 2`).
    types: usize,
    slots: usize,
}

impl CellMix {
    /// The mix of a predictor file, or `None` when it has no `cell_mix.*` tensors.
    pub fn load_optional(
        store: &WeightStore,
        dd: usize,
        nvt: usize,
        max_n: usize,
    ) -> Result<Option<Self>> {
        let w = format!("{PREFIX}.weight");
        if !store.contains(&w) {
            return Ok(None);
        }
        let inputs = super::CellPrior::inputs(nvt, max_n);
        let b = format!("{PREFIX}.bias");
        let weight = store.param(&w, &[inputs, dd])?;
        let bias = store.param(&b, &[inputs])?;
        if inputs == 0 {
            return Err(Error::invalid(format!(
                "{w}: graphs of {max_n} vertices of {nvt} types have no operation inputs"
            )));
        }
        Ok(Some(CellMix {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            dd,
            types: nvt - 2,
            slots: max_n - 2,
        }))
    }

    /// `W d + b` for a dataset embedding `d` (`[d_D]`): the value of every (vertex, operation)
    /// input on this dataset.
    pub fn values(&self, d: &[f32]) -> Vec<f32> {
        debug_assert_eq!(d.len(), self.dd);
        self.weight
            .chunks_exact(self.dd)
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().zip(d).map(|(w, x)| w * x).sum::<f32>())
            .collect()
    }

    /// The mix of one graph given [`CellMix::values`]. Vertices beyond the slots and
    /// non-operation types (START, END) contribute nothing.
    pub fn score(&self, values: &[f32], g: &Dag) -> f32 {
        g.types
            .iter()
            .skip(1)
            .take(self.slots)
            .enumerate()
            .filter_map(|(k, &t)| {
                let t = t as usize;
                (2..2 + self.types)
                    .contains(&t)
                    .then(|| values[k * self.types + t - 2])
            })
            .sum()
    }

    /// The mix of a NAS-Bench-201 cell given [`CellMix::values`] (the same sum as
    /// [`CellMix::score`] on its graph, without building the graph).
    pub fn score_nb201(&self, values: &[f32], a: &crate::space::Nb201Arch) -> f32 {
        a.ops
            .iter()
            .enumerate()
            .take(self.slots)
            .map(|(k, &op)| values[k * self.types + op as usize])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::space::Nb201Arch;

    fn random_mix(dd: usize) -> (CellMix, Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(11, 2);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32 * 0.5).collect() };
        let (w, b) = (r(30 * dd), r(30));
        let tensors = vec![
            (format!("{PREFIX}.weight"), vec![30, dd], w.clone()),
            (format!("{PREFIX}.bias"), vec![30], b.clone()),
        ];
        let bytes =
            crate::weights::serialize(&tensors, crate::weights::import::ExportDtype::F32, None)
                .unwrap();
        let store = WeightStore::from_bytes("mix", bytes).unwrap();
        (
            CellMix::load_optional(&store, dd, 7, 8).unwrap().unwrap(),
            w,
            b,
        )
    }

    /// Against the formula written out: one-hot inputs times `W d + b`, in f64.
    #[test]
    fn scores_equal_the_one_hot_inputs_times_the_dataset_values() {
        let dd = 9;
        let (mix, w, b) = random_mix(dd);
        let d: Vec<f32> = (0..dd).map(|i| (i as f32 * 0.37).sin()).collect();
        let v = mix.values(&d);
        let mut worst = 0.0f64;
        for code in (0..15_625).step_by(89) {
            let a = Nb201Arch::from_code(code).unwrap();
            let mut want = 0.0f64;
            for (k, &op) in a.ops.iter().enumerate() {
                let i = k * 5 + op as usize;
                want += b[i] as f64
                    + (0..dd)
                        .map(|j| w[i * dd + j] as f64 * d[j] as f64)
                        .sum::<f64>();
            }
            let by_graph = mix.score(&v, &a.to_graph()) as f64;
            let by_ops = mix.score_nb201(&v, &a) as f64;
            assert_eq!(by_graph.to_bits(), by_ops.to_bits(), "cell {code}");
            worst = worst.max((by_graph - want).abs());
        }
        assert!(worst < 1e-5, "worst error {worst}");
    }

    #[test]
    fn weights_without_a_mix_have_none_and_a_wrong_shape_is_refused() {
        let bytes = crate::weights::serialize(
            &[("x".to_string(), vec![1], vec![0.0])],
            crate::weights::import::ExportDtype::F32,
            None,
        )
        .unwrap();
        let store = WeightStore::from_bytes("none", bytes).unwrap();
        assert!(CellMix::load_optional(&store, 4, 7, 8).unwrap().is_none());
        let bad = crate::weights::serialize(
            &[
                (format!("{PREFIX}.weight"), vec![30, 5], vec![0.0; 150]),
                (format!("{PREFIX}.bias"), vec![30], vec![0.0; 30]),
            ],
            crate::weights::import::ExportDtype::F32,
            None,
        )
        .unwrap();
        let store = WeightStore::from_bytes("bad", bad).unwrap();
        let err = CellMix::load_optional(&store, 4, 7, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains(PREFIX), "{err}");
    }
}
