//! Model sizes, read from the weights rather than assumed.
//!
//! A handful of anchor tensors give every size (feature dim, set-encoder widths, GRU hidden
//! size, latent size, number of vertex types, number of vertices); every other tensor is then
//! checked against the shape these sizes imply when the model loads.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::WeightStore;

use crate::graph::MAX_VERTICES;

/// Attention heads of every MAB in MetaD2A (not recorded in the weights; fixed by the code).
pub const HEADS: usize = 4;

/// Sizes of the two-level set encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEncoderDims {
    /// Width of a feature row (512 for ResNet-18 features, 1280 for EfficientNet-Lite0).
    pub feat_dim: usize,
    /// Hidden width of the intra-class pool.
    pub intra_hidden: usize,
    /// Width of a class prototype.
    pub proto_dim: usize,
    /// Hidden width of the inter-class pool.
    pub inter_hidden: usize,
    /// Width of the dataset embedding.
    pub out_dim: usize,
    pub heads: usize,
}

/// Sizes of the generator (set-conditioned D-VAE decoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorDims {
    pub set: SetEncoderDims,
    /// Latent size (`fc1`/`fc2` outputs).
    pub nz: usize,
    /// Decoder GRU hidden size.
    pub hs: usize,
    /// Number of vertex types.
    pub nvt: usize,
    /// Number of vertices of a complete graph.
    pub max_n: usize,
}

/// Sizes of the meta-performance predictor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictorDims {
    pub set: SetEncoderDims,
    /// Graph embedding size (`fc1` output).
    pub nz: usize,
    /// Graph encoder GRU hidden size.
    pub hs: usize,
    pub nvt: usize,
    pub max_n: usize,
    /// Hidden width of the `pred_fc` head.
    pub head_hidden: usize,
}

fn dims2(store: &WeightStore, name: &str) -> Result<(usize, usize)> {
    match *store.shape(name)? {
        [a, b] => Ok((a, b)),
        ref other => Err(Error::InconsistentModel {
            file: store.label().to_string(),
            reason: format!("`{name}` should be a matrix, found shape {other:?}"),
        }),
    }
}

fn inconsistent(store: &WeightStore, reason: String) -> Error {
    Error::InconsistentModel {
        file: store.label().to_string(),
        reason,
    }
}

fn heads_of(store: &WeightStore) -> Result<usize> {
    match store.metadata().get("heads") {
        None => Ok(HEADS),
        Some(h) => {
            h.parse().ok().filter(|&h: &usize| h > 0).ok_or_else(|| {
                inconsistent(store, format!("metadata heads = {h:?} is not a count"))
            })
        }
    }
}

impl SetEncoderDims {
    pub fn from_store(store: &WeightStore) -> Result<Self> {
        let (intra_hidden, feat_dim) = dims2(store, "intra_setpool.enc.0.mab.fc_q.weight")?;
        let (proto_dim, _) = dims2(store, "intra_setpool.dec.1.weight")?;
        let (inter_hidden, _) = dims2(store, "inter_setpool.enc.0.mab.fc_q.weight")?;
        let (out_dim, _) = dims2(store, "inter_setpool.dec.1.weight")?;
        Ok(SetEncoderDims {
            feat_dim,
            intra_hidden,
            proto_dim,
            inter_hidden,
            out_dim,
            heads: heads_of(store)?,
        })
    }
}

/// `(hidden, nvt)` of a GRU cell from its `weight_hh` / `weight_ih`.
fn gru_dims(store: &WeightStore, prefix: &str) -> Result<(usize, usize)> {
    let (h3, hs) = dims2(store, &format!("{prefix}.weight_hh"))?;
    let (_, nvt) = dims2(store, &format!("{prefix}.weight_ih"))?;
    if h3 != 3 * hs {
        return Err(inconsistent(
            store,
            format!("{prefix}.weight_hh is [{h3}, {hs}], expected [3*{hs}, {hs}]"),
        ));
    }
    Ok((hs, nvt))
}

fn max_n_of(store: &WeightStore, gate: &str, hs: usize) -> Result<usize> {
    let (_, vs) = dims2(store, gate)?;
    let max_n = vs
        .checked_sub(hs)
        .filter(|&n| (2..=MAX_VERTICES).contains(&n))
        .ok_or_else(|| {
            inconsistent(
                store,
                format!("`{gate}` input width {vs} gives no vertex count in 2..={MAX_VERTICES} with hidden {hs}"),
            )
        })?;
    Ok(max_n)
}

impl GeneratorDims {
    pub fn from_store(store: &WeightStore) -> Result<Self> {
        let set = SetEncoderDims::from_store(store)?;
        let (hs, nvt) = gru_dims(store, "grud")?;
        let max_n = max_n_of(store, "decoding_gate.0.weight", hs)?;
        let (nz, _) = dims2(store, "fc1.weight")?;
        if nvt < 3 {
            return Err(inconsistent(
                store,
                format!("{nvt} vertex types: START, END and at least one operation are needed"),
            ));
        }
        Ok(GeneratorDims {
            set,
            nz,
            hs,
            nvt,
            max_n,
        })
    }
}

impl PredictorDims {
    pub fn from_store(store: &WeightStore) -> Result<Self> {
        let set = SetEncoderDims::from_store(store)?;
        let (hs, nvt) = gru_dims(store, "grue_forward")?;
        let max_n = max_n_of(store, "gate_forward.0.weight", hs)?;
        let (nz, _) = dims2(store, "fc1.weight")?;
        let (head_hidden, _) = dims2(store, "pred_fc.0.weight")?;
        Ok(PredictorDims {
            set,
            nz,
            hs,
            nvt,
            max_n,
            head_hidden,
        })
    }
}
