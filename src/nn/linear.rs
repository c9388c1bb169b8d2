//! `Linear` with PyTorch semantics: `y = x Wᵀ + b`, `W: [out, in]`.

use super::linalg::matmul_wt;
use crate::error::Result;
use crate::weights::{Param, WeightStore};

/// A fully connected layer, `weight: [out, in]`, optional `bias: [out]`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl Linear {
    /// Loads `{prefix}.weight` `[out, in]` and, when `bias`, `{prefix}.bias` `[out]`.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = store.param(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(store.param(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// `y[rows×out] = x[rows×in] Wᵀ + b`.
    pub fn forward_into(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        self.forward_cols_into(x, self.in_dim, rows, 0, self.in_dim, y, true);
    }

    /// `x[rows×in] Wᵀ + b` as a new vector.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0.0; rows * self.out_dim];
        self.forward_into(x, rows, &mut y);
        y
    }

    /// Product with a column block of the weight: `y = x[rows×cols] · W[:, col..col+cols]ᵀ`
    /// (`x` with row stride `ldx`), plus the bias when `with_bias`. This is how a layer applied
    /// to a concatenation `[a ; b]` is split into one product per part.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_cols_into(
        &self,
        x: &[f32],
        ldx: usize,
        rows: usize,
        col: usize,
        cols: usize,
        y: &mut [f32],
        with_bias: bool,
    ) {
        let n = self.out_dim;
        let y = &mut y[..rows * n];
        let accumulate = match (&self.bias, with_bias) {
            (Some(b), true) => {
                for r in y.chunks_exact_mut(n) {
                    r.copy_from_slice(b);
                }
                true
            }
            _ => false,
        };
        matmul_wt(
            y,
            x,
            ldx,
            &self.weight[col..],
            self.in_dim,
            rows,
            n,
            cols,
            accumulate,
        );
    }

    /// Column `c` of the weight, i.e. the layer's response to the one-hot vector `e_c` (no bias).
    pub fn column(&self, c: usize) -> Vec<f32> {
        (0..self.out_dim)
            .map(|o| self.weight[o * self.in_dim + c])
            .collect()
    }
}
