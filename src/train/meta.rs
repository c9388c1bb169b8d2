//! Meta-training of the two MetaD2A models with candle autograd, in the official objectives:
//!
//! - generator: teacher-forced reconstruction of the task's target graph (vertex-type
//!   log-likelihood + edge binary cross-entropy, summed over batch, vertices and edges) plus
//!   `0.005 ×` KL; `z = μ + 0.01·ε·exp(logvar/2)` in training, `z = μ` in evaluation;
//! - predictor: summed squared error on the normalised accuracy `((acc − mean)/std)/100`.
//!
//! Both use Adam (lr 1e-4), batches of 32, 20 rows per class drawn afresh for every item, and a
//! reduce-on-plateau schedule stepped on the training loss (factor 0.1, patience 10). The model
//! blocks are the composed references of [`crate::nn::reference`] over the training variables.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};

use crate::error::{Error, Result};
use crate::model::{Dag, START_TYPE};
use crate::nn::reference::RefWeights;
use crate::rng::Rng;

/// Training variables by state_dict name.
pub struct Params {
    pub vars: BTreeMap<String, Var>,
}

impl Params {
    /// Variables initialised from `(name, shape, values)` triples.
    pub fn from_values(values: &[crate::weights::NamedTensor]) -> Result<Self> {
        let vars = values
            .iter()
            .map(|(n, s, v)| {
                Ok((
                    n.clone(),
                    Var::from_tensor(&Tensor::from_vec(v.clone(), s.as_slice(), &Device::Cpu)?)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Params { vars })
    }

    /// Variables loaded from a safetensors file (converted to f32).
    pub fn load(path: &Path) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu)?;
        let vars = t
            .into_iter()
            .map(|(n, t)| Ok((n, Var::from_tensor(&t.to_dtype(DType::F32)?)?)))
            .collect::<Result<_>>()?;
        Ok(Params { vars })
    }

    /// The variables' tensors as reference weights (gradients flow through them).
    pub fn weights(&self) -> RefWeights {
        RefWeights::from_tensors(
            self.vars
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect::<HashMap<_, _>>(),
        )
    }

    /// `(name, shape, values)` of every variable.
    pub fn values(&self) -> Result<Vec<crate::weights::NamedTensor>> {
        self.vars
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    v.dims().to_vec(),
                    v.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }
}

fn one_hot(idx: &[u8], n: usize) -> Result<Tensor> {
    let mut v = vec![0f32; idx.len() * n];
    for (i, &t) in idx.iter().enumerate() {
        v[i * n + t as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (idx.len(), n), &Device::Cpu)?)
}

fn column(mask: &[bool]) -> Result<Tensor> {
    let v: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(v, (mask.len(), 1), &Device::Cpu)?)
}

/// The decoder's gated message of vertex `u` for states `h: [b, hs]`.
fn message(w: &RefWeights, h: &Tensor, u: usize, max_n: usize) -> Result<Tensor> {
    let vid = one_hot(&vec![u as u8; h.dim(0)?], max_n)?;
    let hm = Tensor::cat(&[h, &vid], 1)?;
    let g = candle_nn::ops::sigmoid(&w.linear("decoding_gate.0", &hm)?)?;
    Ok((g * w.linear("decoding_mapper.0", &hm)?)?)
}

/// `log σ(x) = −softplus(−x)`, computed stably from the logit and clamped at −100 as PyTorch's
/// binary cross-entropy clamps its logarithms. (Taking the logarithm of the probability instead
/// gives `0 · ∞` gradients once the sigmoid saturates.)
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let softplus_neg = ((x.neg()?.relu()?) + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok(softplus_neg.neg()?.maximum(-100f32)?)
}

/// Generator losses `(total, reconstruction, KL)` for latents `(μ, logvar)` `[b, nz]` and
/// target graphs, with teacher forcing. `eps` (`[b, nz]` standard normal) is given in training;
/// `None` means evaluation (`z = μ`).
pub fn generator_loss(
    w: &RefWeights,
    mu: &Tensor,
    logvar: &Tensor,
    graphs: &[Dag],
    nvt: usize,
    max_n: usize,
    eps: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let b = graphs.len();
    let z = match eps {
        Some(e) => (mu + ((e * 0.01)? * (logvar * 0.5)?.exp()?)?)?,
        None => mu.clone(),
    };
    let h0 = w.linear("fc3", &z)?.tanh()?;
    let hs = h0.dim(1)?;
    let zeros = Tensor::zeros((b, hs), DType::F32, &Device::Cpu)?;
    let lens: Vec<usize> = graphs.iter().map(Dag::len).collect();
    let mut h = vec![w.gru_cell("grud", &one_hot(&vec![START_TYPE; b], nvt)?, &h0)?];
    let mut msgs = vec![message(w, &h[0], 0, max_n)?];
    let mut res = Tensor::zeros((), DType::F32, &Device::Cpu)?;
    for v in 1..max_n {
        // graph state: each graph's most recently added vertex
        let mut hg = zeros.clone();
        for (k, hk) in h.iter().enumerate() {
            let last: Vec<bool> = lens.iter().map(|&l| l.min(v) - 1 == k).collect();
            if last.iter().any(|&x| x) {
                hg = (hg + hk.broadcast_mul(&column(&last)?)?)?;
            }
        }
        let scores = w.linear("add_vertex.2", &w.linear("add_vertex.0", &hg)?.relu()?)?;
        let types: Vec<u8> = graphs
            .iter()
            .map(|g| if v < g.len() { g.types[v] } else { START_TYPE })
            .collect();
        let idx = Tensor::from_vec(
            types.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            (b, 1),
            &Device::Cpu,
        )?;
        let vll = candle_nn::ops::log_softmax(&scores, D::Minus1)?
            .gather(&idx, 1)?
            .sum_all()?;
        res = (res + vll)?;
        let has: Vec<bool> = lens.iter().map(|&l| v < l).collect();
        let has_m = column(&has)?;
        let x = one_hot(&types, nvt)?;
        let mut hv = w.gru_cell("grud", &x, &zeros)?.broadcast_mul(&has_m)?;
        let mut hsum = zeros.clone();
        let mut edge_scores = Vec::with_capacity(v);
        let mut truth = vec![0f32; b * v];
        for vi in (0..v).rev() {
            let e = w.linear(
                "add_edge.2",
                &w.linear("add_edge.0", &Tensor::cat(&[&h[vi], &hv], 1)?)?
                    .relu()?,
            )?;
            edge_scores.push(e);
            let edge: Vec<bool> = graphs
                .iter()
                .zip(&has)
                .map(|(g, &hv)| hv && g.has_edge(vi, v))
                .collect();
            for (gi, &on) in edge.iter().enumerate() {
                if on {
                    truth[gi * v + vi] = 1.0;
                }
            }
            if edge.iter().any(|&x| x) {
                hsum = (hsum + msgs[vi].broadcast_mul(&column(&edge)?)?)?;
                hv = w.gru_cell("grud", &x, &hsum)?.broadcast_mul(&has_m)?;
            }
        }
        edge_scores.reverse();
        // edge log-likelihood from the logits: t·log σ(e) + (1 − t)·log σ(−e)
        let e = Tensor::cat(&edge_scores, 1)?;
        let t = Tensor::from_vec(truth, (b, v), &Device::Cpu)?;
        let one_minus_t = (1.0 - &t)?;
        let bce =
            ((&t * log_sigmoid(&e)?)? + (one_minus_t * log_sigmoid(&e.neg()?)?)?)?.sum_all()?;
        res = (res + bce)?;
        msgs.push(message(w, &hv, v, max_n)?);
        h.push(hv);
    }
    let recon = res.neg()?;
    let kld = ((((1.0 + logvar)? - mu.sqr()?)? - logvar.exp()?)?.sum_all()? * -0.5)?;
    let total = (&recon + (&kld * 0.005)?)?;
    Ok((total, recon, kld))
}

/// Set embeddings `[b, d]` of tasks, each `x_t: [C_t · per_class, D]` (tasks may differ in
/// class count).
pub fn set_embeddings(
    w: &RefWeights,
    xs: &[Tensor],
    per_class: usize,
    heads: usize,
) -> Result<Tensor> {
    let rows = xs
        .iter()
        .map(|x| w.set_encode(&x.unsqueeze(0)?, per_class, heads))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Predictor outputs `[b]` for task samples and graphs.
pub fn predictor_forward(
    w: &RefWeights,
    xs: &[Tensor],
    graphs: &[Dag],
    per_class: usize,
    heads: usize,
    nvt: usize,
    max_n: usize,
) -> Result<Tensor> {
    let d = set_embeddings(w, xs, per_class, heads)?;
    let g = w.linear("fc1", &w.graph_state_batched(graphs, nvt, max_n)?)?;
    let h = w.linear("pred_fc.0", &Tensor::cat(&[&d, &g], 1)?)?.tanh()?;
    Ok(w.linear("pred_fc.2", &h)?.squeeze(1)?)
}

/// Summed squared error.
pub fn mse_sum(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred - target)?.sqr()?.sum_all()?)
}

/// Adam (Kingma & Ba) as PyTorch implements it, with its moments kept for checkpoints.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: u64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every variable that has a gradient.
    pub fn update(
        &mut self,
        params: &Params,
        grads: &candle_core::backprop::GradStore,
    ) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for (name, var) in &params.vars {
            let Some(g) = grads.get(var) else { continue };
            let m = match self.m.get(name) {
                Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                None => (g * (1.0 - b1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let upd = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (upd * self.lr)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// PyTorch's `ReduceLROnPlateau(mode='min', factor, patience)` with its default relative
/// threshold 1e-4.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plateau {
    pub factor: f64,
    pub patience: usize,
    pub best: f64,
    pub bad_epochs: usize,
}

impl Plateau {
    pub fn new(factor: f64, patience: usize) -> Self {
        Plateau {
            factor,
            patience,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// Records an epoch's metric and returns the new learning rate.
    pub fn step(&mut self, metric: f64, lr: f64) -> f64 {
        if metric < self.best * (1.0 - 1e-4) {
            self.best = metric;
            self.bad_epochs = 0;
            lr
        } else {
            self.bad_epochs += 1;
            if self.bad_epochs > self.patience {
                self.bad_epochs = 0;
                lr * self.factor
            } else {
                lr
            }
        }
    }
}

/// A tensor of standard normal values from `rng`.
pub fn normal(shape: (usize, usize), rng: &mut Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.normal() as f32)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Relative error measure used by the parity tests: max |a − b| over max |b| (infinite when a
/// value is not finite or the lengths differ).
pub fn rel_max(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.iter().chain(b).any(|x| !x.is_finite()) {
        return f32::INFINITY;
    }
    let m = b
        .iter()
        .fold(0f32, |x, y| x.max(y.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / m
}

/// A checkpoint: variables, Adam moments and the loop state.
pub fn save_checkpoint(
    path: &Path,
    params: &Params,
    adam: &Adam,
    state: &serde_json::Value,
) -> Result<()> {
    let mut tensors: Vec<crate::weights::NamedTensor> = params
        .values()?
        .into_iter()
        .map(|(n, s, v)| (format!("param.{n}"), s, v))
        .collect();
    for (prefix, map) in [("adam_m.", &adam.m), ("adam_v.", &adam.v)] {
        for (n, t) in map {
            tensors.push((
                format!("{prefix}{n}"),
                t.dims().to_vec(),
                t.flatten_all()?.to_vec1::<f32>()?,
            ));
        }
    }
    let meta = HashMap::from([
        ("state".to_string(), state.to_string()),
        (
            "adam".to_string(),
            serde_json::json!({"lr": adam.lr, "step": adam.step}).to_string(),
        ),
    ]);
    let bytes = crate::weights::serialize(
        &tensors,
        crate::weights::import::ExportDtype::F32,
        Some(meta),
    )?;
    crate::util::write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<(Params, Adam, serde_json::Value)> {
    let store = crate::weights::WeightStore::open(path)?;
    let bad = |why: &str| Error::invalid(format!("{}: {why}", path.display()));
    let state: serde_json::Value = serde_json::from_str(
        store
            .metadata()
            .get("state")
            .ok_or_else(|| bad("no state"))?,
    )
    .map_err(|_| bad("bad state"))?;
    let a: serde_json::Value = serde_json::from_str(
        store
            .metadata()
            .get("adam")
            .ok_or_else(|| bad("no optimiser state"))?,
    )
    .map_err(|_| bad("bad optimiser state"))?;
    let mut adam = Adam::new(a["lr"].as_f64().ok_or_else(|| bad("no lr"))?);
    adam.step = a["step"].as_u64().ok_or_else(|| bad("no step"))?;
    let mut vars = BTreeMap::new();
    for name in store.names().map(str::to_string).collect::<Vec<_>>() {
        let p = store.param_any(&name)?;
        let t = Tensor::from_vec(p.to_vec(), p.shape(), &Device::Cpu)?;
        if let Some(n) = name.strip_prefix("param.") {
            vars.insert(n.to_string(), Var::from_tensor(&t)?);
        } else if let Some(n) = name.strip_prefix("adam_m.") {
            adam.m.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("adam_v.") {
            adam.v.insert(n.to_string(), t);
        }
    }
    Ok((Params { vars }, adam, state))
}
