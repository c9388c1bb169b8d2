//! A GRU cell step with one-hot inputs (PyTorch `GRUCell` semantics), fused: the input product
//! is a column gather, the hidden product one matrix product for the whole batch, and the gate
//! arithmetic one pass.
//!
//! `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
//! `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`,
//! with the weights packed in row order r | z | n: `weight_ih: [3H, nvt]`, `weight_hh: [3H, H]`.

use super::linalg::{fast_tanh, matmul_panels, sigmoid, Init, Panels};
use crate::error::Result;
use crate::simd_fn;
use crate::weights::{Param, WeightStore};

/// The cell; its products use a packed copy of `weight_hh` and a table of zero-state steps,
/// both made on first use and kept (replace a cell, not its weights, to change it).
#[derive(Debug)]
pub struct GruCell {
    /// `weight_ih` transposed and with `bias_ih` folded in: row t is `W_ih e_t + b_ih`, `[nvt, 3H]`.
    input_rows: Vec<f32>,
    pub weight_hh: Param,
    /// `weight_hh` packed for the hidden product, on first use.
    hh_panels: std::sync::OnceLock<Panels>,
    /// `GRU(e_t, 0)` for every input type `t`, `[input, H]`: with a zero hidden state the step
    /// depends on the type alone (made on first use).
    zero_state: std::sync::OnceLock<Vec<f32>>,
    pub bias_hh: Param,
    pub hidden: usize,
    pub input: usize,
}

impl GruCell {
    /// Loads `{prefix}.weight_ih [3H, nvt]`, `.weight_hh [3H, H]`, `.bias_ih`, `.bias_hh [3H]`.
    pub fn load(store: &WeightStore, prefix: &str, input: usize, hidden: usize) -> Result<Self> {
        let h3 = 3 * hidden;
        let w_ih = store.param(&format!("{prefix}.weight_ih"), &[h3, input])?;
        let b_ih = store.param(&format!("{prefix}.bias_ih"), &[h3])?;
        let weight_hh = store.param(&format!("{prefix}.weight_hh"), &[h3, hidden])?;
        let bias_hh = store.param(&format!("{prefix}.bias_hh"), &[h3])?;
        let mut input_rows = vec![0.0; input * h3];
        for t in 0..input {
            for o in 0..h3 {
                input_rows[t * h3 + o] = w_ih[o * input + t] + b_ih[o];
            }
        }
        Ok(GruCell {
            input_rows,
            hh_panels: std::sync::OnceLock::new(),
            zero_state: std::sync::OnceLock::new(),
            weight_hh,
            bias_hh,
            hidden,
            input,
        })
    }

    /// `W_ih` transposed with `b_ih` folded in: row `t` is `W_ih e_t + b_ih`, `[input, 3H]`.
    pub fn input_rows(&self) -> &[f32] {
        &self.input_rows
    }

    /// `GRU(e_t, 0)` for every input type `t`, `[input, H]` (made on first use).
    pub fn zero_state(&self) -> &[f32] {
        let (hs, h3) = (self.hidden, 3 * self.hidden);
        self.zero_state.get_or_init(|| {
            let mut t = vec![0.0; self.input * hs];
            for (ty, out) in t.chunks_exact_mut(hs).enumerate() {
                gates_zero_state(&self.input_rows[ty * h3..(ty + 1) * h3], &self.bias_hh, out);
            }
            t
        })
    }

    /// One step for `rows` rows: `h_out[r] = GRU(onehot(types[r]), h_in[r])`, where `h_in` is
    /// `None` for an all-zero hidden input. `scratch` is resized as needed.
    pub fn step_onehot(
        &self,
        types: &[u8],
        h_in: Option<&[f32]>,
        h_out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let rows = types.len();
        let (hs, h3) = (self.hidden, 3 * self.hidden);
        let Some(h) = h_in else {
            let table = self.zero_state();
            for (&ty, out) in types.iter().zip(h_out.chunks_exact_mut(hs)) {
                out.copy_from_slice(&table[ty as usize * hs..(ty as usize + 1) * hs]);
            }
            return;
        };
        scratch.resize(rows * h3, 0.0);
        let gh = &mut scratch[..rows * h3];
        let w = self
            .hh_panels
            .get_or_init(|| Panels::pack(&self.weight_hh, hs, h3, hs));
        matmul_panels(gh, h, hs, w, rows, Init::Bias(&self.bias_hh));
        for (r, &t) in types.iter().enumerate() {
            let gi = &self.input_rows[t as usize * h3..(t as usize + 1) * h3];
            gates(
                gi,
                &gh[r * h3..(r + 1) * h3],
                &h[r * hs..(r + 1) * hs],
                &mut h_out[r * hs..(r + 1) * hs],
            );
        }
    }
}

simd_fn! {
    /// The gate arithmetic of one row: `gi = W_ih x + b_ih`, `gh = W_hh h + b_hh` (`[3H]` each).
    fn gates(gi: &[f32], gh: &[f32], h: &[f32], out: &mut [f32]) {
        let hs = out.len();
        let (gir, giz, gin) = (&gi[..hs], &gi[hs..2 * hs], &gi[2 * hs..3 * hs]);
        let (ghr, ghz, ghn) = (&gh[..hs], &gh[hs..2 * hs], &gh[2 * hs..3 * hs]);
        let h = &h[..hs];
        for j in 0..hs {
            let r = sigmoid(gir[j] + ghr[j]);
            let z = sigmoid(giz[j] + ghz[j]);
            let n = fast_tanh(gin[j] + r * ghn[j]);
            out[j] = (1.0 - z) * n + z * h[j];
        }
    }
}

simd_fn! {
    /// As [`gates`] with a zero hidden state.
    fn gates_zero_state(gi: &[f32], gh: &[f32], out: &mut [f32]) {
        let hs = out.len();
        let (gir, giz, gin) = (&gi[..hs], &gi[hs..2 * hs], &gi[2 * hs..3 * hs]);
        let (ghr, ghz, ghn) = (&gh[..hs], &gh[hs..2 * hs], &gh[2 * hs..3 * hs]);
        for j in 0..hs {
            let r = sigmoid(gir[j] + ghr[j]);
            let z = sigmoid(giz[j] + ghz[j]);
            let n = fast_tanh(gin[j] + r * ghn[j]);
            out[j] = (1.0 - z) * n;
        }
    }
}
