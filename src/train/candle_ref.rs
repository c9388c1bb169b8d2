//! The NB201 cell network composed from candle's stock operations (NCHW `conv2d`, batch norm
//! from means and variances, `avg_pool2d`) with candle's autograd: the reference the fast
//! trainer is checked against, and the baseline of the training-throughput bench.

use candle_core::{DType, Device, Tensor, Var, D};

use super::cell_net::{NetConfig, BN_EPS};
use crate::error::Result;
use crate::space::nb201::{Nb201Arch, CELL_EDGES};

/// The network as candle variables.
pub struct CandleNet {
    arch: Nb201Arch,
    pub config: NetConfig,
    /// Parameters in creation order (convolutions `[co, ci, k, k]`, BN γ and β, linear W, b).
    pub vars: Vec<Var>,
}

struct Ctx<'a> {
    vars: &'a [Var],
    next: usize,
}

impl Ctx<'_> {
    fn take(&mut self) -> Tensor {
        self.next += 1;
        self.vars[self.next - 1].as_tensor().clone()
    }
    fn conv(&mut self, x: &Tensor, stride: usize) -> Result<Tensor> {
        let w = self.take();
        let k = w.dim(2)?;
        Ok(x.conv2d(&w, k / 2, stride, 1, 1)?)
    }
    fn bn(&mut self, x: &Tensor) -> Result<Tensor> {
        let (g, b) = (self.take(), self.take());
        let c = g.dim(0)?;
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc
            .sqr()?
            .mean_keepdim(0)?
            .mean_keepdim(2)?
            .mean_keepdim(3)?;
        let xhat = xc.broadcast_div(&(var + BN_EPS as f64)?.sqrt()?)?;
        Ok(xhat
            .broadcast_mul(&g.reshape((1, c, 1, 1))?)?
            .broadcast_add(&b.reshape((1, c, 1, 1))?)?)
    }
    fn relu_conv_bn(&mut self, x: &Tensor, stride: usize) -> Result<Tensor> {
        let c = self.conv(&x.relu()?, stride)?;
        self.bn(&c)
    }
}

/// 3×3 average pooling, stride 1, padding 1, padding not counted.
fn avg_pool3(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let ones = Tensor::ones((1, 1, h, w), DType::F32, x.device())?
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?;
    let kernel = Tensor::ones((1, 1, 3, 3), DType::F32, x.device())?;
    let counts = ones.conv2d(&kernel, 0, 1, 1, 1)?;
    let c = x.dim(1)?;
    let kc = Tensor::ones((c, 1, 3, 3), DType::F32, x.device())?;
    let sums = padded.conv2d(&kc, 0, 1, 1, c)?;
    Ok(sums.broadcast_div(&counts)?)
}

impl CandleNet {
    /// The network with the values of a fast network's parameters.
    pub fn from_params(
        arch: &Nb201Arch,
        config: NetConfig,
        layout: &[(Vec<usize>, Vec<f32>)],
    ) -> Result<Self> {
        let vars = layout
            .iter()
            .map(|(shape, v)| {
                Ok(Var::from_tensor(&Tensor::from_vec(
                    v.clone(),
                    shape.as_slice(),
                    &Device::Cpu,
                )?)?)
            })
            .collect::<Result<_>>()?;
        Ok(CandleNet {
            arch: *arch,
            config,
            vars,
        })
    }

    /// A network with the initial parameters `CellNet::new(arch, config, seed)` has.
    pub fn random(arch: &Nb201Arch, config: NetConfig, seed: u64) -> Result<Self> {
        let net = super::cell_net::CellNet::new(arch, config, seed);
        Self::from_params(arch, config, &net.candle_layout())
    }

    /// Logits of images `x: [n, 3, h, w]`, in training mode (batch statistics).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut cx = Ctx {
            vars: &self.vars,
            next: 0,
        };
        let stem = cx.conv(x, 1)?;
        let mut s = cx.bn(&stem)?;
        for stage in 0..3 {
            if stage > 0 {
                let a = cx.relu_conv_bn(&s, 2)?;
                let a = cx.relu_conv_bn(&a, 1)?;
                let r = cx.conv(&s.avg_pool2d(2)?, 1)?;
                s = (a + r)?;
            }
            for _ in 0..self.config.cells {
                let mut nodes = vec![s.clone()];
                for j in 1..4 {
                    let mut acc: Option<Tensor> = None;
                    for (e, &(from, to)) in CELL_EDGES.iter().enumerate() {
                        if to != j {
                            continue;
                        }
                        let t = match self.arch.ops[e] {
                            0 => continue,
                            1 => nodes[from].clone(),
                            2 | 3 => cx.relu_conv_bn(&nodes[from], 1)?,
                            _ => avg_pool3(&nodes[from])?,
                        };
                        acc = Some(match acc {
                            Some(a) => (a + t)?,
                            None => t,
                        });
                    }
                    nodes.push(match acc {
                        Some(a) => a,
                        None => nodes[0].zeros_like()?,
                    });
                }
                s = nodes[3].clone();
            }
        }
        let s = cx.bn(&s)?.relu()?;
        let g = s.mean(D::Minus1)?.mean(D::Minus1)?;
        let (w, b) = (cx.take(), cx.take());
        Ok(g.matmul(&w.t()?)?.broadcast_add(&b)?)
    }

    /// Gradients of the mean cross-entropy, in parameter order.
    pub fn gradients(&self, x: &Tensor, labels: &[u32]) -> Result<(f32, Vec<Tensor>)> {
        let logits = self.forward(x)?;
        let y = Tensor::from_slice(labels, labels.len(), &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let grads = loss.backward()?;
        let g = self
            .vars
            .iter()
            .map(|v| {
                grads
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().zeros_like().expect("zeros"))
            })
            .collect();
        Ok((loss.to_scalar::<f32>()?, g))
    }
}
