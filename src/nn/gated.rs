//! The D-VAE gated message: for a vertex `u` with state `h_u` and index `u`,
//! `m_u = σ(W_g [h_u ; e_u] + b_g) ⊙ (W_m [h_u ; e_u])`, and a vertex's input is the sum of its
//! neighbours' messages. `e_u` is the one-hot of the vertex index (the "vid"), so the product
//! with it is a column of the weight, added instead of multiplied.

use super::linalg::sigmoid;
use super::linear::Linear;
use crate::error::Result;
use crate::simd_fn;
use crate::weights::WeightStore;

#[derive(Debug)]
pub struct GatedMessage {
    /// `[hs, hs + max_n]` with bias, followed by a sigmoid.
    pub gate: Linear,
    /// `[hs, hs + max_n]`, no bias (so zero padding maps to zero).
    pub mapper: Linear,
    pub hs: usize,
    pub max_n: usize,
}

impl GatedMessage {
    /// Loads `{gate}.weight`, `{gate}.bias`, `{mapper}.weight`.
    pub fn load(
        store: &WeightStore,
        gate: &str,
        mapper: &str,
        hs: usize,
        max_n: usize,
    ) -> Result<Self> {
        Ok(GatedMessage {
            gate: Linear::load(store, gate, hs + max_n, hs, true)?,
            mapper: Linear::load(store, mapper, hs + max_n, hs, false)?,
            hs,
            max_n,
        })
    }

    /// Messages of `rows` vertices that all have index `vid`: `out[r] = m(h[r], vid)`.
    /// `scratch` is resized as needed.
    pub fn messages(
        &self,
        h: &[f32],
        rows: usize,
        vid: usize,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let hs = self.hs;
        let ld = hs + self.max_n;
        scratch.resize(rows * hs, 0.0);
        let g = &mut scratch[..rows * hs];
        self.gate.forward_cols_into(h, hs, rows, 0, hs, g, true);
        self.mapper
            .forward_cols_into(h, hs, rows, 0, hs, out, false);
        let gw: Vec<f32> = (0..hs)
            .map(|j| self.gate.weight[j * ld + hs + vid])
            .collect();
        let mw: Vec<f32> = (0..hs)
            .map(|j| self.mapper.weight[j * ld + hs + vid])
            .collect();
        for r in 0..rows {
            combine(
                &g[r * hs..(r + 1) * hs],
                &gw,
                &mw,
                &mut out[r * hs..(r + 1) * hs],
            );
        }
    }
}

simd_fn! {
    /// `o = σ(g + gw) ⊙ (o + mw)`.
    fn combine(g: &[f32], gw: &[f32], mw: &[f32], o: &mut [f32]) {
        let n = o.len();
        let (g, gw, mw) = (&g[..n], &gw[..n], &mw[..n]);
        for j in 0..n {
            o[j] = sigmoid(g[j] + gw[j]) * (o[j] + mw[j]);
        }
    }
}
