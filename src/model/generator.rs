//! The generator: a set-conditioned variational graph decoder.
//!
//! `v = SetEncoder(X)`, `μ = fc1(v)`, `logvar = fc2(v)` (official sizes `[56]`); at search
//! time `z = μ` and [`GraphDecoder`] turns `z` into graphs. The official checkpoint also holds an
//! unused D-VAE graph encoder (`grue_*`, `gate_*`, `mapper_*`, `hg_unify`, `enc_g_mu`,
//! `enc_g_var`); when those tensors are present it is loaded too ([`Generator::graph_latent`]).

use std::path::Path;

use super::decoder::{DecodeMode, GraphDecoder};
use super::dims::GeneratorDims;
use super::graph_encoder::GraphEncoder;
use super::set_encoder::SetEncoder;
use crate::error::{Error, Result};
use crate::graph::Dag;
use crate::nn::Linear;
use crate::rng::Rng;
use crate::weights::WeightStore;

/// The generator's leftover graph encoder with its two heads.
#[derive(Debug)]
pub struct GeneratorGraphEncoder {
    pub encoder: GraphEncoder,
    pub mu: Linear,
    pub logvar: Linear,
}

#[derive(Debug)]
pub struct Generator {
    pub set_encoder: SetEncoder,
    pub fc1: Linear,
    pub fc2: Linear,
    pub decoder: GraphDecoder,
    pub graph_encoder: Option<GeneratorGraphEncoder>,
    pub dims: GeneratorDims,
}

impl Generator {
    /// Maps a safetensors file and loads the generator from it.
    pub fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(&WeightStore::open(path)?)
    }

    /// Loads every tensor the generator uses, checking names and shapes.
    pub fn load(store: &WeightStore) -> Result<Self> {
        let dims = GeneratorDims::from_store(store)?;
        let d = dims;
        let graph_encoder = if store.contains("enc_g_mu.weight") {
            Some(GeneratorGraphEncoder {
                encoder: GraphEncoder::load(store, d.hs, d.nvt, d.max_n)?,
                mu: Linear::load(store, "enc_g_mu", d.hs, d.nz, true)?,
                logvar: Linear::load(store, "enc_g_var", d.hs, d.nz, true)?,
            })
        } else {
            None
        };
        Ok(Generator {
            set_encoder: SetEncoder::load(store, d.set)?,
            fc1: Linear::load(store, "fc1", d.set.out_dim, d.nz, true)?,
            fc2: Linear::load(store, "fc2", d.set.out_dim, d.nz, true)?,
            decoder: GraphDecoder::load(store, &d)?,
            graph_encoder,
            dims,
        })
    }

    /// `(μ, logvar)` of `tasks` datasets, each `[tasks, nz]` (see [`SetEncoder::encode`]).
    pub fn latent(
        &self,
        x: &[f32],
        tasks: usize,
        classes: usize,
        per_class: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let v = self.set_encoder.encode(x, tasks, classes, per_class)?;
        Ok(self.heads(&v, tasks))
    }

    /// `(fc1(v), fc2(v))` for set embeddings `v: [tasks, d]`.
    pub fn heads(&self, v: &[f32], tasks: usize) -> (Vec<f32>, Vec<f32>) {
        (self.fc1.forward(v, tasks), self.fc2.forward(v, tasks))
    }

    /// Decodes one graph per latent row (see [`GraphDecoder::decode`]).
    pub fn decode(&self, z: &[f32], mode: DecodeMode, rngs: &mut [Rng]) -> Result<Vec<Dag>> {
        self.decoder.decode(z, mode, rngs)
    }

    /// `(μ, logvar)` of graphs through the checkpoint's graph encoder, when it was kept.
    pub fn graph_latent(&self, graphs: &[Dag]) -> Result<(Vec<f32>, Vec<f32>)> {
        let ge = self.graph_encoder.as_ref().ok_or_else(|| {
            Error::invalid("these generator weights do not include the graph encoder (it is unused at search time and was dropped on import)")
        })?;
        let hg = ge.encoder.graph_state(graphs)?;
        Ok((
            ge.mu.forward(&hg, graphs.len()),
            ge.logvar.forward(&hg, graphs.len()),
        ))
    }
}
