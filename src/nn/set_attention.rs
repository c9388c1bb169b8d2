//! Set Transformer blocks (Lee et al., ICML 2019) as MetaD2A uses them: no LayerNorm, 4 heads,
//! and the attention scaled by `sqrt(d_V)` (the full width, not the head width; kept for
//! checkpoint compatibility).
//!
//! `MAB(Q, K)`: `Q' = Q W_qᵀ + b_q`, `K' = K W_kᵀ + b_k`, `V' = K W_vᵀ + b_v`, split into heads
//! by column blocks; per head `O_h = Q'_h + softmax(Q'_h K'_hᵀ / √d_V) V'_h`; heads concatenated;
//! `O = O + ReLU(O W_oᵀ + b_o)`. `SAB(X) = MAB(X, X)`; `PMA(X) = MAB(S, X)` with a learned seed.
//! `SetPool = SAB → SAB → PMA(1 seed) → Linear`, mapping a set `[n, d_in]` to `[d_out]`.
//!
//! Batches of equal-size sets are stored as `[nsets * n, d]`, set-major.

use super::linalg::{add_relu, exp_normal};
use super::linear::Linear;
use crate::error::{Error, Result};
use crate::weights::{Param, WeightStore};

/// Multihead attention block with `heads` heads, output width `dim_v`.
#[derive(Debug)]
pub struct Mab {
    pub fc_q: Linear,
    pub fc_k: Linear,
    pub fc_v: Linear,
    pub fc_o: Linear,
    pub dim_v: usize,
    pub heads: usize,
}

impl Mab {
    /// Loads `{prefix}.fc_q`, `.fc_k`, `.fc_v` (`[dim_v, dim_q|dim_k]`) and `.fc_o` (`[dim_v, dim_v]`).
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        dim_q: usize,
        dim_k: usize,
        dim_v: usize,
        heads: usize,
    ) -> Result<Self> {
        if heads == 0 || dim_v % heads != 0 {
            return Err(Error::InconsistentModel {
                file: store.label().to_string(),
                reason: format!("{prefix}: width {dim_v} is not divisible by {heads} heads"),
            });
        }
        Ok(Mab {
            fc_q: Linear::load(store, &format!("{prefix}.fc_q"), dim_q, dim_v, true)?,
            fc_k: Linear::load(store, &format!("{prefix}.fc_k"), dim_k, dim_v, true)?,
            fc_v: Linear::load(store, &format!("{prefix}.fc_v"), dim_k, dim_v, true)?,
            fc_o: Linear::load(store, &format!("{prefix}.fc_o"), dim_v, dim_v, true)?,
            dim_v,
            heads,
        })
    }

    /// `MAB(Q, K)` for `nsets` sets: `q: [nsets*nq, dim_q]`, `k: [nsets*nk, dim_k]`,
    /// returns `[nsets*nq, dim_v]`.
    pub fn forward(&self, q: &[f32], k: &[f32], nsets: usize, nq: usize, nk: usize) -> Vec<f32> {
        let qp = self.fc_q.forward(q, nsets * nq);
        let kp = self.fc_k.forward(k, nsets * nk);
        let vp = self.fc_v.forward(k, nsets * nk);
        self.attend(&qp, false, &kp, &vp, nsets, nq, nk)
    }

    /// The block after the input projections. `qp` is `[nsets*nq, dim_v]`, or `[nq, dim_v]`
    /// shared by every set when `q_shared` (PMA); `kp`, `vp` are `[nsets*nk, dim_v]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        qp: &[f32],
        q_shared: bool,
        kp: &[f32],
        vp: &[f32],
        nsets: usize,
        nq: usize,
        nk: usize,
    ) -> Vec<f32> {
        let dv = self.dim_v;
        let mut o = vec![0.0f32; nsets * nq * dv];
        attention_heads(qp, q_shared, kp, vp, nsets, nq, nk, dv, self.heads, &mut o);
        self.output_ff(&mut o, nsets * nq);
        o
    }

    /// `O = O + ReLU(O W_oᵀ + b_o)` in place.
    fn output_ff(&self, o: &mut [f32], rows: usize) {
        let ff = self.fc_o.forward(o, rows);
        add_relu(o, &ff);
    }
}

/// Per set and head: `o = q + softmax(q kᵀ / √dv) v`, written into `o` (`[nsets*nq, dv]`).
#[allow(clippy::too_many_arguments)]
fn attention_heads(
    qp: &[f32],
    q_shared: bool,
    kp: &[f32],
    vp: &[f32],
    nsets: usize,
    nq: usize,
    nk: usize,
    dv: usize,
    heads: usize,
    o: &mut [f32],
) {
    let dh = dv / heads;
    let scale = 1.0 / (dv as f32).sqrt();
    let mut scores = vec![0.0f32; nk];
    for s in 0..nsets {
        let kbase = s * nk;
        for i in 0..nq {
            let qrow = if q_shared { i } else { s * nq + i };
            let q = &qp[qrow * dv..(qrow + 1) * dv];
            let out = &mut o[(s * nq + i) * dv..(s * nq + i + 1) * dv];
            out.copy_from_slice(q);
            for h in 0..heads {
                let c0 = h * dh;
                let qh = &q[c0..c0 + dh];
                let mut max = f32::NEG_INFINITY;
                for (j, sc) in scores.iter_mut().enumerate() {
                    let kr = &kp[(kbase + j) * dv + c0..(kbase + j) * dv + c0 + dh];
                    let d: f32 = qh.iter().zip(kr).map(|(a, b)| a * b).sum();
                    *sc = d * scale;
                    max = max.max(*sc);
                }
                let mut sum = 0.0;
                for sc in scores.iter_mut() {
                    *sc = exp_normal(*sc - max);
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                let oh = &mut out[c0..c0 + dh];
                for (j, &a) in scores.iter().enumerate() {
                    let a = a * inv;
                    let vr = &vp[(kbase + j) * dv + c0..(kbase + j) * dv + c0 + dh];
                    for (x, &v) in oh.iter_mut().zip(vr) {
                        *x += a * v;
                    }
                }
            }
        }
    }
}

/// `SetPool` in MetaD2A's `sabPF` mode: `SAB(d_in→d_h) → SAB(d_h→d_h) → PMA(d_h, 1 seed) →
/// Linear(d_h→d_out)`; a set `[n, d_in]` becomes one vector `[d_out]`.
#[derive(Debug)]
pub struct SetPool {
    pub sab1: Mab,
    pub sab2: Mab,
    pub pma: Mab,
    /// The PMA seed `S: [1, 1, d_h]`.
    pub seed: Param,
    /// `S W_qᵀ + b_q` of the PMA: the same for every set, so computed once at load.
    pma_query: Vec<f32>,
    pub out: Linear,
    pub dim_in: usize,
    pub dim_hidden: usize,
    pub dim_out: usize,
}

impl SetPool {
    /// Loads `{prefix}.enc.0.mab.*`, `{prefix}.enc.1.mab.*`, `{prefix}.dec.0.S`,
    /// `{prefix}.dec.0.mab.*`, `{prefix}.dec.1.*`.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        dim_in: usize,
        dim_hidden: usize,
        dim_out: usize,
        heads: usize,
    ) -> Result<Self> {
        let (di, dh) = (dim_in, dim_hidden);
        let sab1 = Mab::load(store, &format!("{prefix}.enc.0.mab"), di, di, dh, heads)?;
        let sab2 = Mab::load(store, &format!("{prefix}.enc.1.mab"), dh, dh, dh, heads)?;
        let pma = Mab::load(store, &format!("{prefix}.dec.0.mab"), dh, dh, dh, heads)?;
        let seed = store.param(&format!("{prefix}.dec.0.S"), &[1, 1, dh])?;
        let out = Linear::load(store, &format!("{prefix}.dec.1"), dh, dim_out, true)?;
        let pma_query = pma.fc_q.forward(&seed, 1);
        Ok(SetPool {
            sab1,
            sab2,
            pma,
            seed,
            pma_query,
            out,
            dim_in,
            dim_hidden,
            dim_out,
        })
    }

    /// Pools `nsets` sets of `n` elements: `x: [nsets*n, d_in]` → `[nsets, d_out]`.
    pub fn forward(&self, x: &[f32], nsets: usize, n: usize) -> Vec<f32> {
        let rows = nsets * n;
        let q = self.sab1.fc_q.forward(x, rows);
        let k = self.sab1.fc_k.forward(x, rows);
        let v = self.sab1.fc_v.forward(x, rows);
        self.forward_projected(&q, &k, &v, nsets, n)
    }

    /// As [`forward`](Self::forward), starting from the first block's input projections
    /// (`[nsets*n, d_h]` each), which callers may have computed once for many sets.
    pub fn forward_projected(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        nsets: usize,
        n: usize,
    ) -> Vec<f32> {
        let h1 = self.sab1.attend(q, false, k, v, nsets, n, n);
        let h2 = self.sab2.forward(&h1, &h1, nsets, n, n);
        let kp = self.pma.fc_k.forward(&h2, nsets * n);
        let vp = self.pma.fc_v.forward(&h2, nsets * n);
        let pooled = self
            .pma
            .attend(&self.pma_query, true, &kp, &vp, nsets, 1, n);
        self.out.forward(&pooled, nsets)
    }
}
