//! The MetaD2A set encoder: a dataset, given as `C` classes of `n` feature rows each (`n` = 20
//! in the paper), is pooled inside each class (intra-class `SetPool`, classes on the batch axis)
//! to `C` prototypes, then across the prototypes (inter-class `SetPool`) to one vector.
//!
//! Shapes: `[C * n, feat_dim]` → intra → `[C, proto_dim]` → inter → `[out_dim]` (56 in the
//! official models). Many tasks are encoded in one call, all with the same `C` and `n`.

use super::dims::SetEncoderDims;
use crate::error::{Error, Result};
use crate::nn::SetPool;
use crate::weights::WeightStore;

#[derive(Debug)]
pub struct SetEncoder {
    pub intra: SetPool,
    pub inter: SetPool,
    pub dims: SetEncoderDims,
}

impl SetEncoder {
    /// Loads `intra_setpool.*` and `inter_setpool.*`.
    pub fn load(store: &WeightStore, dims: SetEncoderDims) -> Result<Self> {
        let d = dims;
        Ok(SetEncoder {
            intra: SetPool::load(
                store,
                "intra_setpool",
                d.feat_dim,
                d.intra_hidden,
                d.proto_dim,
                d.heads,
            )?,
            inter: SetPool::load(
                store,
                "inter_setpool",
                d.proto_dim,
                d.inter_hidden,
                d.out_dim,
                d.heads,
            )?,
            dims,
        })
    }

    /// Encodes `tasks` datasets: `x` is `[tasks * classes * per_class, feat_dim]`, each task's
    /// rows class-contiguous. Returns `[tasks, out_dim]`.
    pub fn encode(
        &self,
        x: &[f32],
        tasks: usize,
        classes: usize,
        per_class: usize,
    ) -> Result<Vec<f32>> {
        let want = tasks * classes * per_class * self.dims.feat_dim;
        if x.len() != want || tasks == 0 || classes == 0 || per_class == 0 {
            return Err(Error::invalid(format!(
                "set encoder input has {} values; {tasks} tasks x {classes} classes x {per_class} rows x {} features = {want} expected, none of them zero",
                x.len(),
                self.dims.feat_dim
            )));
        }
        let protos = self.intra.forward(x, tasks * classes, per_class);
        Ok(self.inter.forward(&protos, tasks, classes))
    }

    /// As [`encode`](Self::encode), from the first attention block's input projections of each
    /// row (`q`, `k`, `v`, each `[tasks * classes * per_class, intra_hidden]`).
    pub fn encode_projected(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        tasks: usize,
        classes: usize,
        per_class: usize,
    ) -> Vec<f32> {
        let protos = self
            .intra
            .forward_projected(q, k, v, tasks * classes, per_class);
        self.inter.forward(&protos, tasks, classes)
    }
}
