//! The cell mix: an optional extension of the predictor (not in the official model) that adds a
//! dataset-dependent value of each operation on each edge,
//!
//! `mix(D, g) = x(g) · (γ(D) W (D − μ) + b)`,
//!
//! where `x(g)` is the one-hot vertex type of each operation vertex (the layout of the
//! [cell prior](super::CellPrior): vertices `1..n-1`, 6 × 5 = 30 inputs for a NAS-Bench-201
//! cell), `D` the set encoder's dataset embedding, `W: [inputs, d_D]`, `μ: [d_D]` (the mean
//! embedding of the meta-training tasks) and `b: [inputs]`. `b` says which operation helps on
//! every dataset, `W (D − μ)` what this dataset changes: the head of the official model reads
//! `D` and the graph side by side and, trained on our tasks, lets the dataset change the ranking
//! little; here each edge's operation is priced by the data.
//!
//! `γ` is the gate: `exp(−(ν / r)²)` with `ν` the dataset's *novelty*, its distance to the
//! nearest meta-training task (`anchors`, the tasks' mean embeddings), root mean square over
//! dimensions after dividing by `scale`. The data part was learned from a few image sources;
//! on held-out tasks of those sources it helps, on a source it never saw it hurts, and such
//! datasets lie farther from every anchor (`docs/ranker.md`). Far from every anchor the mix is
//! `b` alone. Weights without anchors have no gate (`γ = 1`).
//!
//! The mix is computed on the mean embedding of the search's set samples (without the gate it
//! is linear in `D`: the mean of the sample terms). Meta-trained in `src/train/ranker.rs`
//! (`--mix`, `--mix-gate`).
//!
//! Weights without `cell_mix.*` tensors (every official checkpoint) have no mix, and their
//! scores are exactly the official ones.

use crate::error::{Error, Result};
use crate::graph::Dag;
use crate::weights::WeightStore;

/// Tensor-name prefix of the mix.
pub const PREFIX: &str = "cell_mix";
/// The mix's tensors: `W`, `b`, `μ` and the gate's anchors, scale and radius.
pub const WEIGHT: &str = "cell_mix.weight";
pub const BIAS: &str = "cell_mix.bias";
pub const CENTER: &str = "cell_mix.center";
pub const ANCHORS: &str = "cell_mix.anchors";
pub const SCALE: &str = "cell_mix.scale";
pub const RADIUS: &str = "cell_mix.radius";

/// Root mean square distance, over dimensions and in units of `1 / inv_scale`, of `d` to the
/// nearest row of `anchors` (`[n, d.len()]`): a dataset's novelty. Infinite without anchors.
pub fn nearest_rms_distance(d: &[f32], anchors: &[f32], inv_scale: &[f32]) -> f32 {
    let nearest = anchors
        .chunks_exact(d.len())
        .map(|a| {
            a.iter()
                .zip(d)
                .zip(inv_scale)
                .map(|((a, x), s)| ((x - a) * s) * ((x - a) * s))
                .sum::<f32>()
        })
        .fold(f32::INFINITY, f32::min);
    (nearest / d.len() as f32).sqrt()
}

#[derive(Debug)]
pub struct CellMix {
    /// `W`, `[inputs, d_D]`: one row per (vertex, operation) input.
    weight: Vec<f32>,
    bias: Vec<f32>,
    center: Vec<f32>,
    gate: Option<Gate>,
    dd: usize,
    /// Operation types per vertex (`nvt − 2`) and operation vertices (`max_n − 2`).
    types: usize,
    slots: usize,
}

/// The novelty gate of a mix (see the module docs).
#[derive(Debug)]
struct Gate {
    /// `[tasks, d_D]`.
    anchors: Vec<f32>,
    /// `1 / scale`, `[d_D]`.
    inv_scale: Vec<f32>,
    radius: f32,
}

impl CellMix {
    /// The mix of a predictor file, or `None` when it has no `cell_mix.*` tensors.
    pub fn load_optional(
        store: &WeightStore,
        dd: usize,
        nvt: usize,
        max_n: usize,
    ) -> Result<Option<Self>> {
        if !store.contains(WEIGHT) {
            return Ok(None);
        }
        let inputs = super::CellPrior::inputs(nvt, max_n);
        if inputs == 0 {
            return Err(Error::invalid(format!(
                "{WEIGHT}: graphs of {max_n} vertices of {nvt} types have no operation inputs"
            )));
        }
        let weight = store.param(WEIGHT, &[inputs, dd])?;
        let bias = store.param(BIAS, &[inputs])?;
        let center = store.param(CENTER, &[dd])?;
        let gate = if store.contains(ANCHORS) {
            let shape = store.shape(ANCHORS)?.to_vec();
            if shape.len() != 2 || shape[1] != dd || shape[0] == 0 {
                return Err(Error::invalid(format!(
                    "{ANCHORS} has shape {shape:?}; it needs [tasks, {dd}]"
                )));
            }
            let anchors = store.param(ANCHORS, &shape)?.to_vec();
            let scale = store.param(SCALE, &[dd])?.to_vec();
            let radius = store.param(RADIUS, &[1])?.to_vec()[0];
            let positive = |v: f32| v.is_finite() && v > 0.0;
            if !positive(radius) || !scale.iter().all(|&s| positive(s)) {
                return Err(Error::invalid(format!(
                    "{PREFIX}: the gate needs a positive radius and positive scales (radius {radius})"
                )));
            }
            Some(Gate {
                anchors,
                inv_scale: scale.iter().map(|s| 1.0 / s).collect(),
                radius,
            })
        } else {
            None
        };
        Ok(Some(CellMix {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            center: center.to_vec(),
            gate,
            dd,
            types: nvt - 2,
            slots: max_n - 2,
        }))
    }

    /// The dataset's novelty: root mean square distance, over dimensions in units of the
    /// scale, of `d` to the nearest anchor (`None` without a gate).
    pub fn novelty(&self, d: &[f32]) -> Option<f32> {
        self.fit(d).map(|(nu, _)| nu)
    }

    /// The novelty of `d` and the gate `γ(d)` there (`None` without a gate).
    pub fn fit(&self, d: &[f32]) -> Option<(f32, f32)> {
        let g = self.gate.as_ref()?;
        let nu = nearest_rms_distance(d, &g.anchors, &g.inv_scale);
        Some((nu, (-(nu / g.radius) * (nu / g.radius)).exp()))
    }

    /// The gate's radius `r`: at novelty `r` the data part keeps `e⁻¹` (37%) of itself (`None`
    /// without a gate).
    pub fn radius(&self) -> Option<f32> {
        self.gate.as_ref().map(|g| g.radius)
    }

    /// The gate `γ(d)` (1 without a gate).
    pub fn gate(&self, d: &[f32]) -> f32 {
        self.fit(d).map_or(1.0, |(_, gate)| gate)
    }

    /// `γ(d) W (d − μ) + b` for a dataset embedding `d` (`[d_D]`): the value of every
    /// (vertex, operation) input on this dataset.
    pub fn values(&self, d: &[f32]) -> Vec<f32> {
        self.values_gated(d, self.gate(d))
    }

    /// [`CellMix::values`] with the gate `γ(d)` already known.
    pub fn values_gated(&self, d: &[f32], gate: f32) -> Vec<f32> {
        debug_assert_eq!(d.len(), self.dd);
        let centred: Vec<f32> = d.iter().zip(&self.center).map(|(x, m)| x - m).collect();
        self.weight
            .chunks_exact(self.dd)
            .zip(&self.bias)
            .map(|(row, b)| b + gate * row.iter().zip(&centred).map(|(w, x)| w * x).sum::<f32>())
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

    /// A random mix, its `W`, `b`, `μ`, and with `gate` two anchors, a scale and radius 0.5.
    fn random_mix(dd: usize, gate: bool) -> (CellMix, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(11, 2);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32 * 0.5).collect() };
        let (w, b, mu) = (r(30 * dd), r(30), r(dd));
        let mut tensors = vec![
            (format!("{PREFIX}.weight"), vec![30, dd], w.clone()),
            (format!("{PREFIX}.bias"), vec![30], b.clone()),
            (format!("{PREFIX}.center"), vec![dd], mu.clone()),
        ];
        if gate {
            let mut anchors = mu.clone();
            anchors.extend(mu.iter().map(|m| m + 1.0));
            tensors.push((format!("{PREFIX}.anchors"), vec![2, dd], anchors));
            tensors.push((format!("{PREFIX}.scale"), vec![dd], vec![2.0; dd]));
            tensors.push((format!("{PREFIX}.radius"), vec![1], vec![0.5]));
        }
        let store = WeightStore::from_tensors("mix", &tensors).unwrap();
        (
            CellMix::load_optional(&store, dd, 7, 8).unwrap().unwrap(),
            w,
            b,
            mu,
        )
    }

    /// Against the formula written out: one-hot inputs times `W (d − μ) + b`, in f64.
    #[test]
    fn scores_equal_the_one_hot_inputs_times_the_dataset_values() {
        let dd = 9;
        let (mix, w, b, mu) = random_mix(dd, false);
        let d: Vec<f32> = (0..dd).map(|i| (i as f32 * 0.37).sin()).collect();
        let v = mix.values(&d);
        assert_eq!(mix.gate(&d), 1.0);
        let mut worst = 0.0f64;
        for code in (0..15_625).step_by(89) {
            let a = Nb201Arch::from_code(code).unwrap();
            let mut want = 0.0f64;
            for (k, &op) in a.ops.iter().enumerate() {
                let i = k * 5 + op as usize;
                want += b[i] as f64
                    + (0..dd)
                        .map(|j| w[i * dd + j] as f64 * (d[j] - mu[j]) as f64)
                        .sum::<f64>();
            }
            let by_graph = mix.score(&v, &a.to_graph()) as f64;
            let by_ops = mix.score_nb201(&v, &a) as f64;
            assert_eq!(by_graph.to_bits(), by_ops.to_bits(), "cell {code}");
            worst = worst.max((by_graph - want).abs());
        }
        assert!(worst < 1e-5, "worst error {worst}");
    }

    /// The gate: 1 at an anchor, `exp(−(ν/r)²)` between, and far from every anchor the values
    /// are `b` alone.
    #[test]
    fn the_gate_closes_far_from_every_anchor() {
        let dd = 6;
        let (mix, w, b, mu) = random_mix(dd, true);
        let data_part = |d: &[f32], i: usize| -> f64 {
            (0..dd)
                .map(|j| w[i * dd + j] as f64 * (d[j] - mu[j]) as f64)
                .sum()
        };
        // at the second anchor (μ + 1): novelty 0, full data part
        let at: Vec<f32> = mu.iter().map(|m| m + 1.0).collect();
        assert_eq!(mix.novelty(&at), Some(0.0));
        let v = mix.values(&at);
        for i in 0..30 {
            assert!((v[i] as f64 - b[i] as f64 - data_part(&at, i)).abs() < 1e-5);
        }
        // 0.3 beyond the first anchor in every dimension, scale 2: novelty 0.15
        let near: Vec<f32> = mu.iter().map(|m| m - 0.3).collect();
        let nu = mix.novelty(&near).unwrap();
        assert!((nu - 0.15).abs() < 1e-6, "{nu}");
        let g = (-(0.15f64 / 0.5).powi(2)).exp();
        assert!((mix.gate(&near) as f64 - g).abs() < 1e-6);
        let v = mix.values(&near);
        for i in 0..30 {
            assert!((v[i] as f64 - b[i] as f64 - g * data_part(&near, i)).abs() < 1e-5);
        }
        // far away: the values are b
        let far: Vec<f32> = mu.iter().map(|m| m + 20.0).collect();
        assert!(mix.gate(&far) < 1e-30);
        for (v, b) in mix.values(&far).iter().zip(&b) {
            assert!((v - b).abs() < 1e-6);
        }
    }

    #[test]
    fn weights_without_a_mix_have_none_and_a_wrong_shape_is_refused() {
        let store =
            WeightStore::from_tensors("none", &[("x".to_string(), vec![1], vec![0.0])]).unwrap();
        assert!(CellMix::load_optional(&store, 4, 7, 8).unwrap().is_none());
        let store = WeightStore::from_tensors(
            "bad",
            &[
                (format!("{PREFIX}.weight"), vec![30, 5], vec![0.0; 150]),
                (format!("{PREFIX}.bias"), vec![30], vec![0.0; 30]),
                (format!("{PREFIX}.center"), vec![4], vec![0.0; 4]),
            ],
        )
        .unwrap();
        let err = CellMix::load_optional(&store, 4, 7, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains(PREFIX), "{err}");
    }
}
