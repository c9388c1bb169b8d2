//! The meta-performance predictor: `ŷ = pred_fc([D ; G])` with the dataset embedding `D` from
//! its own set encoder and the graph embedding `G = fc1(hg)` from the bidirectional graph
//! encoder; `pred_fc = Linear(d_D + d_G → P) → tanh → Linear(P → 1)`.
//!
//! Weights may add a [`CellPrior`] and a [`CellMix`] (not in the official model); the score of
//! a graph is then `ŷ + prior(graph) + mix(D, graph)` (see [`Predictor::add_prior`] and
//! [`Predictor::add_mix`]).
//!
//! Official NB201 sizes: `D: [56]`, `hg: [512]`, `G: [56]`, `P = 512`. The output is a
//! normalised accuracy, `((acc − mean) / std) / 100` of the meta-training split; only its order
//! matters for ranking.

use std::path::Path;

use super::cell_mix::CellMix;
use super::cell_prior::CellPrior;
use super::dims::PredictorDims;
use super::graph_encoder::GraphEncoder;
use super::set_encoder::SetEncoder;
use crate::error::{Error, Result};
use crate::graph::Dag;
use crate::nn::Linear;
use crate::weights::WeightStore;

#[derive(Debug)]
pub struct Predictor {
    pub set_encoder: SetEncoder,
    /// Reached through [`Predictor::graph_encoder`]: with a graph cache, NB201 searches never
    /// use it, and its ~10 MB are then never read.
    graph_encoder: GraphEncoder,
    /// The store, to check the graph encoder's tensors on its first use.
    store: WeightStore,
    pub fc1: Linear,
    pub head: [Linear; 2],
    /// The optional cell prior (see [`CellPrior`]); absent in official checkpoints.
    pub cell_prior: Option<CellPrior>,
    /// The optional cell mix (see [`CellMix`]); absent in official checkpoints.
    pub cell_mix: Option<CellMix>,
    pub dims: PredictorDims,
}

/// The cell mix on one dataset ([`Predictor::mix_values`]).
#[derive(Clone, Debug)]
pub struct MixValues {
    /// The value of every (vertex, operation) input.
    pub values: Vec<f32>,
    /// The novelty of the dataset's mean embedding and the gate there (gated mixes only).
    pub fit: Option<(f32, f32)>,
}

impl Predictor {
    /// Maps a safetensors file and loads the predictor from it.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(&WeightStore::open(path)?)
    }

    /// Loads the predictor, checking the names and shapes of every tensor it uses; the graph
    /// encoder's tensors are checksummed when it is first used ([`Predictor::graph_encoder`]).
    pub fn load(store: &WeightStore) -> Result<Self> {
        let dims = PredictorDims::from_store(store)?;
        let d = dims;
        Ok(Predictor {
            set_encoder: SetEncoder::load(store, d.set)?,
            // Views of the mapping with their shapes checked; their checksums are checked on
            // first use.
            graph_encoder: GraphEncoder::load(&store.deferring_checks(), d.hs, d.nvt, d.max_n)?,
            store: store.clone(),
            fc1: Linear::load(store, "fc1", d.hs, d.nz, true)?,
            head: [
                Linear::load(
                    store,
                    "pred_fc.0",
                    d.set.out_dim + d.nz,
                    d.head_hidden,
                    true,
                )?,
                Linear::load(store, "pred_fc.2", d.head_hidden, 1, true)?,
            ],
            cell_prior: CellPrior::load_optional(store, d.nvt, d.max_n)?,
            cell_mix: CellMix::load_optional(store, d.set.out_dim, d.nvt, d.max_n)?,
            dims,
        })
    }

    /// The graph encoder; the first call checks the tensors not yet checked against the
    /// manifest's checksums (when the store has them).
    /// (The store remembers which tensors it checked: later calls hash nothing.)
    pub fn graph_encoder(&self) -> Result<&GraphEncoder> {
        self.store.check_all()?;
        Ok(&self.graph_encoder)
    }

    /// Graph embeddings `G = fc1(hg)`, `[n, nz]`.
    pub fn graph_embedding(&self, graphs: &[Dag]) -> Result<Vec<f32>> {
        let hg = self.graph_encoder()?.graph_state(graphs)?;
        Ok(self.fc1.forward(&hg, graphs.len()))
    }

    /// Adds the cell prior of each graph to its head score `scores` (nothing without a prior).
    pub fn add_prior(&self, graphs: &[Dag], scores: &mut [f32]) {
        if let Some(p) = &self.cell_prior {
            for (s, g) in scores.iter_mut().zip(graphs) {
                *s += p.score(g);
            }
        }
    }

    /// The cell mix's value of every (vertex, operation) input for dataset rows `d` (`[R, d_D]`)
    /// weighted by `weights` (`[R]`, summing to 1): the values of the weighted mean embedding
    /// (see [`CellMix`]), and the novelty of that mean and the gate there (`None` without a
    /// gate), each computed once. `None` without a mix.
    pub fn mix_values(&self, d: &[f32], weights: &[f32]) -> Option<MixValues> {
        let mix = self.cell_mix.as_ref()?;
        let mean = self.weighted_mean(d, weights);
        let fit = mix.fit(&mean);
        let gate = fit.map_or(1.0, |(_, gate)| gate);
        Some(MixValues {
            values: mix.values_gated(&mean, gate),
            fit,
        })
    }

    fn weighted_mean(&self, d: &[f32], weights: &[f32]) -> Vec<f32> {
        let dd = self.dims.set.out_dim;
        let mut mean = vec![0.0f32; dd];
        for (row, &w) in d.chunks_exact(dd).zip(weights) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += w * x;
            }
        }
        mean
    }

    /// Adds the cell mix of each graph, with values from [`Predictor::mix_values`], to its
    /// score (nothing without a mix).
    pub fn add_mix(&self, values: &[f32], graphs: &[Dag], scores: &mut [f32]) {
        if let Some(m) = &self.cell_mix {
            for (s, g) in scores.iter_mut().zip(graphs) {
                *s += m.score(values, g);
            }
        }
    }

    /// Scores of `n` graph embeddings `g: [n, nz]` on one dataset embedding `d: [d_D]`.
    pub fn predict(&self, d: &[f32], g: &[f32]) -> Result<Vec<f32>> {
        let (dd, nz) = (self.dims.set.out_dim, self.dims.nz);
        if d.len() != dd || !g.len().is_multiple_of(nz) {
            return Err(Error::invalid(format!(
                "predict needs a dataset embedding of {dd} and graph embeddings of {nz} values each; got {} and {}",
                d.len(),
                g.len()
            )));
        }
        Ok(self.mean_scores(&self.head_graph_part(g), &self.head_dataset_part(d), &[1.0]))
    }

    /// The graph half of the head's first layer, bias included: `A = G W₁[:, d_D..]ᵀ + b₁`,
    /// `[n, P]` for graph embeddings `G: [n, nz]`. It depends only on the weights and the
    /// graph, so callers may keep it.
    pub fn head_graph_part(&self, g: &[f32]) -> Vec<f32> {
        let (dd, nz, p) = (self.dims.set.out_dim, self.dims.nz, self.dims.head_hidden);
        let n = g.len() / nz;
        let mut a = vec![0.0; n * p];
        self.head[0].forward_cols_into(g, nz, n, dd, nz, &mut a, true);
        a
    }

    /// The dataset half of the head's first layer: `c = D W₁[:, ..d_D]ᵀ`, `[R, P]` for dataset
    /// embeddings `D: [R, d_D]`.
    pub fn head_dataset_part(&self, d: &[f32]) -> Vec<f32> {
        let (dd, p) = (self.dims.set.out_dim, self.dims.head_hidden);
        let r = d.len() / dd;
        let mut c = vec![0.0; r * p];
        self.head[0].forward_cols_into(d, dd, r, 0, dd, &mut c, false);
        c
    }

    /// For each graph row `a` of `A` (`[n, P]`), the weighted mean over the dataset rows `c_r`
    /// of `C` (`[R, P]`, weights `[R]` summing to 1) of `pred_fc.2(tanh(a + c_r))`: the score
    /// averaged over dataset samples.
    pub fn mean_scores(&self, a: &[f32], c: &[f32], weights: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        let p = self.dims.head_hidden;
        debug_assert_eq!(c.len(), weights.len() * p);
        let w2 = &self.head[1].weight[..p];
        let b2 = self.head[1].bias.as_ref().map_or(0.0, |b| b[0]);
        let score = |row: &[f32]| {
            let total: f32 = c
                .chunks_exact(p)
                .zip(weights)
                .map(|(cr, &wr)| wr * crate::nn::linalg::dot_tanh(row, cr, w2))
                .sum();
            total + b2
        };
        // Fixed chunks: the result does not depend on the number of threads.
        const CHUNK: usize = 256;
        let mut out = vec![0.0; a.len() / p];
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK * p))
            .for_each(|(o, rows)| {
                for (x, row) in o.iter_mut().zip(rows.chunks_exact(p)) {
                    *x = score(row);
                }
            });
        out
    }
}
