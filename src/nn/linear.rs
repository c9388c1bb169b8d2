//! `Linear` with PyTorch semantics: `y = x Wᵀ + b`, `W: [out, in]`.

use std::sync::OnceLock;

use super::linalg::{matmul_panels, Init, Panels};
use crate::error::Result;
use crate::weights::{Param, WeightStore};

/// A fully connected layer, `weight: [out, in]`, optional `bias: [out]`. The first product
/// packs the weight for the product kernel and keeps that copy, so replace a layer, not its
/// `weight`, to change it.
#[derive(Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub in_dim: usize,
    pub out_dim: usize,
    /// The weight's column blocks packed for products, made on first use: at most two blocks
    /// (`(col, cols)`), enough for a whole layer or the two halves of a concatenated input.
    packed: [OnceLock<(usize, usize, Panels)>; 2],
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
            packed: Default::default(),
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
        let init = match (&self.bias, with_bias) {
            (Some(b), true) => Init::Bias(b),
            _ => Init::Zero,
        };
        let packed;
        let w = match self.panels(col, cols) {
            Some(p) => p,
            None => {
                packed = Panels::pack(&self.weight[col..], self.in_dim, n, cols);
                &packed
            }
        };
        matmul_panels(&mut y[..rows * n], x, ldx, w, rows, init);
    }

    /// The packed block `W[:, col..col+cols]`, packed now if a slot is free.
    fn panels(&self, col: usize, cols: usize) -> Option<&Panels> {
        assert!(col + cols <= self.in_dim, "Linear: columns out of range");
        for slot in &self.packed {
            let (c, k, p) = slot.get_or_init(|| {
                (
                    col,
                    cols,
                    Panels::pack(&self.weight[col..], self.in_dim, self.out_dim, cols),
                )
            });
            if (*c, *k) == (col, cols) {
                return Some(p);
            }
        }
        None
    }

    /// Column `c` of the weight, i.e. the layer's response to the one-hot vector `e_c` (no bias).
    pub fn column(&self, c: usize) -> Vec<f32> {
        (0..self.out_dim)
            .map(|o| self.weight[o * self.in_dim + c])
            .collect()
    }
}
