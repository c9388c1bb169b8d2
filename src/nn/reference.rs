//! Composed reference implementations on candle tensors.
//!
//! These follow the official PyTorch code operation by operation (heads split with `chunk` and
//! stacked on the batch axis, padded predecessor tensors for the gated sums, one task at a time
//! in the set encoder). They are slow and exist to check the fused kernels on fresh random
//! inputs; they load weights through candle's own safetensors reader, independently of
//! [`crate::weights::WeightStore`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::graph::Dag;

/// Named f32 tensors on the CPU.
pub struct RefWeights {
    tensors: HashMap<String, Tensor>,
}

impl RefWeights {
    /// Loads every tensor of a safetensors file with candle, converted to f32.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let raw = candle_core::safetensors::load(path.as_ref(), &Device::Cpu)?;
        let tensors = raw
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        Ok(RefWeights { tensors })
    }

    /// Wraps named tensors (e.g. the tensors of training variables, so gradients flow).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        RefWeights { tensors }
    }

    /// Loads every tensor of a safetensors image in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let raw = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let tensors = raw
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        Ok(RefWeights { tensors })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::invalid(format!("reference weights lack `{name}`")))
    }

    /// `x Wᵀ + b` for `{prefix}.weight` / `{prefix}.bias` (bias optional), any leading dims.
    pub fn linear(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let w = self.get(&format!("{prefix}.weight"))?;
        let y = x.broadcast_matmul(&w.t()?)?;
        Ok(match self.tensors.get(&format!("{prefix}.bias")) {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `MAB(Q, K)`: `q: [B, nq, dq]`, `k: [B, nk, dk]` → `[B, nq, dv]`.
    pub fn mab(&self, prefix: &str, q: &Tensor, k: &Tensor, heads: usize) -> Result<Tensor> {
        let qp = self.linear(&format!("{prefix}.fc_q"), q)?;
        let kp = self.linear(&format!("{prefix}.fc_k"), k)?;
        let vp = self.linear(&format!("{prefix}.fc_v"), k)?;
        let dv = qp.dim(D::Minus1)?;
        let b = qp.dim(0)?;
        let split = |t: &Tensor| -> Result<Tensor> { Ok(Tensor::cat(&t.chunk(heads, 2)?, 0)?) };
        let (q_, k_, v_) = (split(&qp)?, split(&kp)?, split(&vp)?);
        let scores = (q_.matmul(&k_.t()?.contiguous()?)? / (dv as f64).sqrt())?;
        let a = candle_nn::ops::softmax(&scores, 2)?;
        let o = (q_ + a.matmul(&v_)?)?;
        let o = Tensor::cat(&o.chunk(o.dim(0)? / b, 0)?, 2)?;
        let ff = self.linear(&format!("{prefix}.fc_o"), &o)?.relu()?;
        Ok((o + ff)?)
    }

    /// `SetPool` (sabPF): `x: [B, n, d_in]` → `[B, 1, d_out]`.
    pub fn set_pool(&self, prefix: &str, x: &Tensor, heads: usize) -> Result<Tensor> {
        let h = self.mab(&format!("{prefix}.enc.0.mab"), x, x, heads)?;
        let h = self.mab(&format!("{prefix}.enc.1.mab"), &h, &h, heads)?;
        let s = self.get(&format!("{prefix}.dec.0.S"))?;
        let s = s.repeat((h.dim(0)?, 1, 1))?;
        let p = self.mab(&format!("{prefix}.dec.0.mab"), &s, &h, heads)?;
        self.linear(&format!("{prefix}.dec.1"), &p)
    }

    /// The two-level set encoder, one task at a time as in the official code:
    /// `x: [T, C*ns, D]` (class-contiguous rows) → `[T, d_out]`.
    pub fn set_encode(&self, x: &Tensor, ns: usize, heads: usize) -> Result<Tensor> {
        let (t, rows, d) = x.dims3()?;
        let mut out = Vec::with_capacity(t);
        for i in 0..t {
            let task = x.get(i)?.reshape((rows / ns, ns, d))?;
            let protos = self.set_pool("intra_setpool", &task, heads)?.squeeze(1)?;
            let v = self.set_pool("inter_setpool", &protos.unsqueeze(0)?, heads)?;
            out.push(v.reshape(v.elem_count())?);
        }
        Ok(Tensor::stack(&out, 0)?)
    }

    /// The two-level set encoder over many tasks at once (the same computation as
    /// [`set_encode`](Self::set_encode), with all tasks' classes in one intra-class batch):
    /// `x: [T, C*ns, D]` → `[T, d_out]`.
    pub fn set_encode_batched(&self, x: &Tensor, ns: usize, heads: usize) -> Result<Tensor> {
        let (t, rows, d) = x.dims3()?;
        let c = rows / ns;
        let protos = self.set_pool("intra_setpool", &x.reshape((t * c, ns, d))?, heads)?;
        let protos = protos.reshape((t, c, protos.dim(D::Minus1)?))?;
        let v = self.set_pool("inter_setpool", &protos, heads)?;
        Ok(v.squeeze(1)?)
    }

    /// `GRUCell(x, h)`: `x: [B, in]`, `h: [B, H]` → `[B, H]`.
    pub fn gru_cell(&self, prefix: &str, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let gi = x
            .matmul(&self.get(&format!("{prefix}.weight_ih"))?.t()?)?
            .broadcast_add(self.get(&format!("{prefix}.bias_ih"))?)?;
        let gh = h
            .matmul(&self.get(&format!("{prefix}.weight_hh"))?.t()?)?
            .broadcast_add(self.get(&format!("{prefix}.bias_hh"))?)?;
        let gi = gi.chunk(3, 1)?;
        let gh = gh.chunk(3, 1)?;
        let r = candle_nn::ops::sigmoid(&(&gi[0] + &gh[0])?)?;
        let z = candle_nn::ops::sigmoid(&(&gi[1] + &gh[1])?)?;
        let n = (&gi[2] + (r * &gh[2])?)?.tanh()?;
        let one = Tensor::ones_like(&z)?;
        Ok((((one - &z)? * n)? + (z * h)?)?)
    }

    /// Gated sum over padded neighbour states: `hp: [B, P, vs]` → `[B, hs]`.
    pub fn gated_sum(&self, gate: &str, mapper: &str, hp: &Tensor) -> Result<Tensor> {
        let g = candle_nn::ops::sigmoid(&self.linear(gate, hp)?)?;
        let m = self.linear(mapper, hp)?;
        Ok((g * m)?.sum(1)?)
    }

    /// The graph encoder for a batch of graphs that share one edge set (e.g. NB201 cells),
    /// vectorised over the batch; the same computation as [`graph_state`](Self::graph_state),
    /// to which it falls back when the graphs differ in structure.
    pub fn graph_state_batched(&self, graphs: &[Dag], nvt: usize, max_n: usize) -> Result<Tensor> {
        let Some(first) = graphs.first() else {
            return self.graph_state(graphs, nvt, max_n);
        };
        if graphs.iter().any(|g| g.preds != first.preds) {
            return self.graph_state(graphs, nvt, max_n);
        }
        let (b, n) = (graphs.len(), first.len());
        let hs = self.get("grue_forward.weight_hh")?.dim(1)?;
        let dev = Device::Cpu;
        let one_hot = |col: &dyn Fn(usize) -> usize, width: usize| -> Result<Tensor> {
            let mut v = vec![0f32; b * width];
            for i in 0..b {
                v[i * width + col(i)] = 1.0;
            }
            Ok(Tensor::from_vec(v, (b, width), &dev)?)
        };
        let mut finals = Vec::new();
        for dir in 0..2 {
            let (gru, gate, mapper) = if dir == 0 {
                ("grue_forward", "gate_forward.0", "mapper_forward.0")
            } else {
                ("grue_backward", "gate_backward.0", "mapper_backward.0")
            };
            let order: Vec<usize> = if dir == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            let mut msgs: Vec<Option<Tensor>> = vec![None; n];
            let mut last = None;
            for v in order {
                let neigh = if dir == 0 {
                    first.predecessors(v)
                } else {
                    first.successors(v)
                };
                let mut h = Tensor::zeros((b, hs), DType::F32, &dev)?;
                for u in neigh {
                    h = (h + msgs[u].as_ref().expect("neighbour done"))?;
                }
                let x = one_hot(&|i| graphs[i].types[v] as usize, nvt)?;
                let hv = self.gru_cell(gru, &x, &h)?;
                let hm = Tensor::cat(&[&hv, &one_hot(&|_| v, max_n)?], 1)?;
                let g = candle_nn::ops::sigmoid(&self.linear(gate, &hm)?)?;
                msgs[v] = Some((g * self.linear(mapper, &hm)?)?);
                last = Some(hv);
            }
            finals.push(last.expect("at least one vertex"));
        }
        self.linear("hg_unify.0", &Tensor::cat(&[&finals[0], &finals[1]], 1)?)
    }

    /// The bidirectional D-VAE graph encoder with the official per-vertex propagation:
    /// returns `hg_unify([h_forward(last) ; h_backward(0)])`, `[B, hs]`.
    pub fn graph_state(&self, graphs: &[Dag], nvt: usize, max_n: usize) -> Result<Tensor> {
        let hs = self.get("grue_forward.weight_hh")?.dim(1)?;
        let dev = Device::Cpu;
        let one_hot = |i: usize, n: usize| -> Result<Tensor> {
            let mut v = vec![0f32; n];
            v[i] = 1.0;
            Ok(Tensor::from_vec(v, (1, n), &dev)?)
        };
        let mut fwd: Vec<Vec<Option<Tensor>>> = vec![vec![None; max_n]; graphs.len()];
        let mut bwd = fwd.clone();
        for (dir, states) in [(0, &mut fwd), (1, &mut bwd)] {
            let (gru, gate, mapper) = if dir == 0 {
                ("grue_forward", "gate_forward.0", "mapper_forward.0")
            } else {
                ("grue_backward", "gate_backward.0", "mapper_backward.0")
            };
            let order: Vec<usize> = if dir == 0 {
                (0..max_n).collect()
            } else {
                (0..max_n).rev().collect()
            };
            for v in order {
                let live: Vec<usize> = (0..graphs.len()).filter(|&g| graphs[g].len() > v).collect();
                if live.is_empty() {
                    continue;
                }
                let neigh: Vec<Vec<usize>> = live
                    .iter()
                    .map(|&g| {
                        if dir == 0 {
                            graphs[g].predecessors(v)
                        } else {
                            graphs[g].successors(v)
                        }
                    })
                    .collect();
                let maxp = neigh.iter().map(Vec::len).max().unwrap_or(0);
                let h = if maxp == 0 {
                    Tensor::zeros((live.len(), hs), DType::F32, &dev)?
                } else {
                    let mut rows = Vec::new();
                    for (li, &g) in live.iter().enumerate() {
                        let mut parts = Vec::new();
                        for &u in &neigh[li] {
                            let hu = states[g][u].as_ref().expect("neighbour state");
                            parts.push(Tensor::cat(&[hu, &one_hot(u, max_n)?], 1)?);
                        }
                        for _ in neigh[li].len()..maxp {
                            parts.push(Tensor::zeros((1, hs + max_n), DType::F32, &dev)?);
                        }
                        rows.push(Tensor::cat(&parts, 0)?.unsqueeze(0)?);
                    }
                    self.gated_sum(gate, mapper, &Tensor::cat(&rows, 0)?)?
                };
                let x = Tensor::cat(
                    &live
                        .iter()
                        .map(|&g| one_hot(graphs[g].types[v] as usize, nvt))
                        .collect::<Result<Vec<_>>>()?,
                    0,
                )?;
                let hv = self.gru_cell(gru, &x, &h)?;
                for (li, &g) in live.iter().enumerate() {
                    states[g][v] = Some(hv.narrow(0, li, 1)?);
                }
            }
        }
        let rows = graphs
            .iter()
            .enumerate()
            .map(|(g, dag)| {
                let f = fwd[g][dag.len() - 1].as_ref().expect("forward state");
                let b = bwd[g][0].as_ref().expect("backward state");
                Ok(Tensor::cat(&[f, b], 1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        self.linear("hg_unify.0", &Tensor::cat(&rows, 0)?)
    }
}

/// A `[rows, cols]` f32 tensor from a slice.
pub fn tensor2(data: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_slice(data, (rows, cols), &Device::Cpu)?)
}

/// Flattens a tensor to a `Vec<f32>`.
pub fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}
