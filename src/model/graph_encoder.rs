//! The bidirectional D-VAE graph encoder (the meta-predictor's graph branch; the generator
//! carries an identical, unused copy).
//!
//! Forward pass in vertex order: `hf_v = GRU_f(e_type(v), Σ_{u ∈ pred(v)} m_f(hf_u, u))`;
//! backward pass in reverse order over successors with `GRU_b` and `m_b`; the graph state is
//! `hg_unify([hf_last ; hb_0])` (`[2H] → [H]`), where `m(h, u)` is the gated message of
//! [`crate::nn::GatedMessage`]. Shapes: graphs of at most `max_n` vertices → `[n, H]`.
//!
//! All graphs of a batch advance together, one vertex index per step, so each step is one
//! matrix product per weight for the whole batch.

use super::graph::Dag;
use crate::error::{Error, Result};
use crate::nn::{GatedMessage, GruCell, Linear};
use crate::weights::WeightStore;

#[derive(Debug)]
pub struct GraphEncoder {
    pub forward_gru: GruCell,
    pub backward_gru: GruCell,
    pub forward_message: GatedMessage,
    pub backward_message: GatedMessage,
    pub hg_unify: Linear,
    pub hs: usize,
    pub nvt: usize,
    pub max_n: usize,
}

impl GraphEncoder {
    /// Loads `grue_forward`, `grue_backward`, `gate_{forward,backward}.0`,
    /// `mapper_{forward,backward}.0`, `hg_unify.0`.
    pub fn load(store: &WeightStore, hs: usize, nvt: usize, max_n: usize) -> Result<Self> {
        Ok(GraphEncoder {
            forward_gru: GruCell::load(store, "grue_forward", nvt, hs)?,
            backward_gru: GruCell::load(store, "grue_backward", nvt, hs)?,
            forward_message: GatedMessage::load(
                store,
                "gate_forward.0",
                "mapper_forward.0",
                hs,
                max_n,
            )?,
            backward_message: GatedMessage::load(
                store,
                "gate_backward.0",
                "mapper_backward.0",
                hs,
                max_n,
            )?,
            hg_unify: Linear::load(store, "hg_unify.0", 2 * hs, hs, true)?,
            hs,
            nvt,
            max_n,
        })
    }

    /// Checks that a graph fits this encoder: 1..=max_n vertices, known types, and vertices
    /// numbered in a topological order (every edge goes from a lower to a higher index).
    pub fn check(&self, g: &Dag) -> Result<()> {
        if g.is_empty() || g.len() > self.max_n {
            return Err(Error::invalid(format!(
                "graph has {} vertices; this model encodes 1..={}",
                g.len(),
                self.max_n
            )));
        }
        if let Some(&t) = g.types.iter().find(|&&t| t as usize >= self.nvt) {
            return Err(Error::invalid(format!(
                "vertex type {t} is outside this model's {} types",
                self.nvt
            )));
        }
        for (v, &p) in g.preds.iter().enumerate() {
            if p >> v != 0 {
                return Err(Error::invalid(format!(
                    "edge into vertex {v} from a vertex numbered {v} or later: vertices must be in topological order"
                )));
            }
        }
        Ok(())
    }

    /// Graph states `hg` of `graphs`, `[n, hs]`.
    pub fn graph_state(&self, graphs: &[Dag]) -> Result<Vec<f32>> {
        for g in graphs {
            self.check(g)?;
        }
        let (n, hs, mn) = (graphs.len(), self.hs, self.max_n);
        let fwd = self.propagate(graphs, false);
        let bwd = self.propagate(graphs, true);
        let mut cat = vec![0.0; n * 2 * hs];
        for (i, g) in graphs.iter().enumerate() {
            let last = g.len() - 1;
            cat[i * 2 * hs..i * 2 * hs + hs]
                .copy_from_slice(&fwd[(i * mn + last) * hs..(i * mn + last + 1) * hs]);
            cat[i * 2 * hs + hs..(i + 1) * 2 * hs]
                .copy_from_slice(&bwd[i * mn * hs..(i * mn + 1) * hs]);
        }
        Ok(self.hg_unify.forward(&cat, n))
    }

    /// Vertex states of one direction, `[n, max_n, hs]` (unused slots stay zero).
    fn propagate(&self, graphs: &[Dag], reverse: bool) -> Vec<f32> {
        let (n, hs, mn) = (graphs.len(), self.hs, self.max_n);
        let (gru, message) = if reverse {
            (&self.backward_gru, &self.backward_message)
        } else {
            (&self.forward_gru, &self.forward_message)
        };
        let neighbours: Vec<Vec<u64>> = graphs
            .iter()
            .map(|g| {
                (0..g.len())
                    .map(|v| {
                        if reverse {
                            g.successor_mask(v)
                        } else {
                            g.preds[v]
                        }
                    })
                    .collect()
            })
            .collect();
        let mut states = vec![0.0f32; n * mn * hs];
        let mut msgs = vec![0.0f32; n * mn * hs];
        let (mut scratch, mut scratch2) = (Vec::new(), Vec::new());
        let order: Vec<usize> = if reverse {
            (0..mn).rev().collect()
        } else {
            (0..mn).collect()
        };
        for v in order {
            let rows: Vec<usize> = (0..n).filter(|&g| graphs[g].len() > v).collect();
            if rows.is_empty() {
                continue;
            }
            let nr = rows.len();
            let mut hin = vec![0.0f32; nr * hs];
            let mut any = false;
            for (r, &g) in rows.iter().enumerate() {
                let mask = neighbours[g][v];
                for u in 0..graphs[g].len() {
                    if mask >> u & 1 == 1 {
                        any = true;
                        let m = &msgs[(g * mn + u) * hs..(g * mn + u + 1) * hs];
                        for (a, b) in hin[r * hs..(r + 1) * hs].iter_mut().zip(m) {
                            *a += b;
                        }
                    }
                }
            }
            let types: Vec<u8> = rows.iter().map(|&g| graphs[g].types[v]).collect();
            let mut hv = vec![0.0f32; nr * hs];
            gru.step_onehot(&types, any.then_some(&hin[..]), &mut hv, &mut scratch);
            let mut mv = vec![0.0f32; nr * hs];
            message.messages(&hv, nr, v, &mut mv, &mut scratch2);
            for (r, &g) in rows.iter().enumerate() {
                let at = (g * mn + v) * hs;
                states[at..at + hs].copy_from_slice(&hv[r * hs..(r + 1) * hs]);
                msgs[at..at + hs].copy_from_slice(&mv[r * hs..(r + 1) * hs]);
            }
        }
        states
    }
}
