//! The meta-performance predictor: `ŷ = pred_fc([D ; G])` with the dataset embedding `D` from
//! its own set encoder and the graph embedding `G = fc1(hg)` from the bidirectional graph
//! encoder; `pred_fc = Linear(d_D + d_G → P) → tanh → Linear(P → 1)`.
//!
//! Official NB201 sizes: `D: [56]`, `hg: [512]`, `G: [56]`, `P = 512`. The output is a
//! normalised accuracy, `((acc − mean) / std) / 100` of the meta-training split; only its order
//! matters for ranking.

use std::path::Path;

use super::dims::PredictorDims;
use super::graph::Dag;
use super::graph_encoder::GraphEncoder;
use super::set_encoder::SetEncoder;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::weights::WeightStore;

#[derive(Debug)]
pub struct Predictor {
    pub set_encoder: SetEncoder,
    pub graph_encoder: GraphEncoder,
    pub fc1: Linear,
    pub head: [Linear; 2],
    pub dims: PredictorDims,
}

impl Predictor {
    /// Maps a safetensors file and loads the predictor from it.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(&WeightStore::open(path)?)
    }

    /// Loads every tensor the predictor uses, checking names and shapes.
    pub fn load(store: &WeightStore) -> Result<Self> {
        let dims = PredictorDims::from_store(store)?;
        let d = dims;
        Ok(Predictor {
            set_encoder: SetEncoder::load(store, d.set)?,
            graph_encoder: GraphEncoder::load(store, d.hs, d.nvt, d.max_n)?,
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
            dims,
        })
    }

    /// Dataset embeddings `D` of `tasks` datasets, `[tasks, d_D]` (see [`SetEncoder::encode`]).
    pub fn dataset_embedding(
        &self,
        x: &[f32],
        tasks: usize,
        classes: usize,
        per_class: usize,
    ) -> Result<Vec<f32>> {
        self.set_encoder.encode(x, tasks, classes, per_class)
    }

    /// Graph embeddings `G = fc1(hg)`, `[n, nz]`.
    pub fn graph_embedding(&self, graphs: &[Dag]) -> Result<Vec<f32>> {
        let hg = self.graph_encoder.graph_state(graphs)?;
        Ok(self.fc1.forward(&hg, graphs.len()))
    }

    /// Scores of `n` graph embeddings `g: [n, nz]` on one dataset embedding `d: [d_D]`.
    pub fn predict(&self, d: &[f32], g: &[f32]) -> Result<Vec<f32>> {
        let (dd, nz) = (self.dims.set.out_dim, self.dims.nz);
        if d.len() != dd || g.len() % nz != 0 {
            return Err(Error::invalid(format!(
                "predict needs a dataset embedding of {dd} and graph embeddings of {nz} values each; got {} and {}",
                d.len(),
                g.len()
            )));
        }
        let n = g.len() / nz;
        let p = self.dims.head_hidden;
        // The dataset half of the first layer is the same for every graph: computed once.
        let mut base = vec![0.0; p];
        self.head[0].forward_cols_into(d, dd, 1, 0, dd, &mut base, true);
        let mut hidden = vec![0.0; n * p];
        for row in hidden.chunks_exact_mut(p) {
            row.copy_from_slice(&base);
        }
        crate::nn::linalg::matmul_wt(
            &mut hidden,
            g,
            nz,
            &self.head[0].weight[dd..],
            dd + nz,
            n,
            p,
            nz,
            true,
        );
        hidden.iter_mut().for_each(|x| *x = x.tanh());
        Ok(self.head[1].forward(&hidden, n))
    }
}
