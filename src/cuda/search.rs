//! A search's stages on the device: set samples encoded by `set_pool` (two launches per set
//! encoder), the generator's latents by `linear_cols` and left on the device for the one-launch
//! decoder, and NB201 ranking by `rank_cells` against the head's graph half of every cell, kept
//! resident with the cells' operations and priors. The CPU path of `src/search` stays the
//! reference; `src/cuda/tests.rs` compares whole searches with it.

use std::collections::HashMap;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::ops::{allow_shared, de, GpuDecoder, MAX_SHARED_BYTES};
use super::Gpu;
use crate::dataset::Dataset;
use crate::model::{Generator, Predictor};
use crate::nn::SetPool;

/// A set pool's weights on the device, packed as `set_pool` reads them.
struct DevicePool {
    w: CudaSlice<f32>,
    n_in: usize,
    hidden: usize,
    n_out: usize,
    heads: usize,
}

impl DevicePool {
    fn new(gpu: &Gpu, p: &SetPool) -> Result<Self, String> {
        Ok(DevicePool {
            w: gpu.up(&p.packed())?,
            n_in: p.dim_in,
            hidden: p.dim_hidden,
            n_out: p.dim_out,
            heads: p.sab1.heads,
        })
    }

    /// Shared memory `set_pool` needs for sets of `n` elements.
    fn shared_bytes(&self, n: usize) -> usize {
        (6 * n * self.hidden + self.hidden + 2 * self.heads * n) * 4
    }

    /// Pools `nsets` sets of `n` rows of `x` (gathered through `rows` when given):
    /// `[nsets, n_out]` on the device.
    fn pool(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        rows: Option<&CudaSlice<i32>>,
        nsets: usize,
        n: usize,
    ) -> Result<CudaSlice<f32>, String> {
        let (dh, heads) = (self.hidden, self.heads);
        let shared = self.shared_bytes(n);
        if shared > MAX_SHARED_BYTES {
            return Err(format!(
                "sets of {n} elements of width {dh} need {shared} bytes of shared memory, more than {MAX_SHARED_BYTES}"
            ));
        }
        let f = gpu.func("set_pool");
        allow_shared(f, shared)?;
        let mut out = gpu
            .stream
            .alloc_zeros::<f32>(nsets * self.n_out)
            .map_err(de)?;
        // Without gathering the kernel never reads `rows`, but the argument must be a device
        // buffer: a one-element one, uploaded only then.
        let none;
        let (gather, rows) = match rows {
            Some(r) => (1, r),
            None => {
                none = gpu.up(&[0i32])?;
                (0, &none)
            }
        };
        let ints = [
            gather,
            n as i32,
            self.n_in as i32,
            dh as i32,
            self.n_out as i32,
            heads as i32,
        ];
        let mut b = gpu.stream.launch_builder(f);
        b.arg(x).arg(rows);
        for v in &ints {
            b.arg(v);
        }
        b.arg(&self.w).arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (nsets as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: argument order and types match `set_pool`; `x` holds every row `rows` names
        // (or nsets * n rows), `w` is packed by `SetPool::packed`, `out` has nsets * n_out.
        unsafe { b.launch(cfg) }.map_err(de)?;
        Ok(out)
    }
}

/// A set encoder on the device: the intra-class pool, then the inter-class pool.
struct DeviceSetEncoder {
    intra: DevicePool,
    inter: DevicePool,
}

impl DeviceSetEncoder {
    fn new(gpu: &Gpu, e: &crate::model::SetEncoder) -> Result<Self, String> {
        Ok(DeviceSetEncoder {
            intra: DevicePool::new(gpu, &e.intra)?,
            inter: DevicePool::new(gpu, &e.inter)?,
        })
    }

    /// Whether sets of `classes` classes of `per_class` rows fit the kernel's shared memory.
    fn fits(&self, classes: usize, per_class: usize) -> bool {
        self.intra.shared_bytes(per_class) <= MAX_SHARED_BYTES
            && self.inter.shared_bytes(classes) <= MAX_SHARED_BYTES
    }

    /// Embeddings `[samples, out_dim]` of set samples (each `classes * per_class` row indices
    /// of `data`, class after class). Only the rows the samples use are copied to the device.
    fn encode(
        &self,
        gpu: &Gpu,
        data: &Dataset,
        samples: &[&[u32]],
        per_class: usize,
    ) -> Result<CudaSlice<f32>, String> {
        let classes = data.num_classes();
        let (x, rows) = gather_rows(data, samples);
        let (dx, drows) = (gpu.up(&x)?, gpu.up(&rows)?);
        let protos = self
            .intra
            .pool(gpu, &dx, Some(&drows), samples.len() * classes, per_class)?;
        self.inter.pool(gpu, &protos, None, samples.len(), classes)
    }
}

/// The rows the samples use, each once (`[U, dim]`), and for every row index of the samples, in
/// order, its position among them: what `set_pool` gathers from.
pub(crate) fn gather_rows(data: &Dataset, samples: &[&[u32]]) -> (Vec<f32>, Vec<i32>) {
    let mut slot: HashMap<u32, i32> = HashMap::new();
    let mut x = Vec::new();
    let rows = samples
        .iter()
        .flat_map(|s| s.iter())
        .map(|&r| {
            *slot.entry(r).or_insert_with(|| {
                x.extend_from_slice(data.row(r));
                (x.len() / data.dim - 1) as i32
            })
        })
        .collect();
    (x, rows)
}

/// `y = x W[:, col..col + cols]ᵀ (+ b)` on the device, `[rows, out_dim]`.
#[allow(clippy::too_many_arguments)]
fn linear_cols(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    rows: usize,
    w: &CudaSlice<f32>,
    ldw: usize,
    col: usize,
    cols: usize,
    bias: Option<&CudaSlice<f32>>,
    out_dim: usize,
) -> Result<CudaSlice<f32>, String> {
    let mut y = gpu.stream.alloc_zeros::<f32>(rows * out_dim).map_err(de)?;
    // `x` is dense: its row stride is `cols`.
    let (rows_, ldx, ldw_, col_, cols_) = (
        rows as i32,
        cols as i32,
        ldw as i32,
        col as i32,
        cols as i32,
    );
    let (has_bias, od) = (bias.is_some() as i32, out_dim as i32);
    let mut b = gpu.stream.launch_builder(gpu.func("linear_cols"));
    b.arg(x).arg(&rows_).arg(&ldx).arg(w);
    b.arg(&ldw_).arg(&col_).arg(&cols_);
    // Without a bias the kernel never reads `b`; pass the weight.
    b.arg(bias.unwrap_or(w)).arg(&has_bias).arg(&od).arg(&mut y);
    let total = (rows * out_dim) as u32;
    let cfg = LaunchConfig {
        grid_dim: (total.div_ceil(256).clamp(1, 65_535), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument order and types match `linear_cols`; `x` has rows * cols values with
    // row stride cols, `w` out_dim rows of ldw >= col + cols, `y` rows * out_dim.
    unsafe { b.launch(cfg) }.map_err(de)?;
    Ok(y)
}

/// What the ranking of NB201 cells keeps on the device.
struct DeviceCells {
    /// `A = G W₁[:, d_D..]ᵀ + b₁` of every cell, `[15625, P]`, in code order.
    heads: CudaSlice<f32>,
    /// The six operations of every cell, `[15625, 6]`.
    ops: CudaSlice<u8>,
    /// The cell prior of every cell, when the weights have one.
    prior: Option<CudaSlice<f32>>,
}

/// The models of an engine on the device: both set encoders, the generator's latent head and
/// decoder, the predictor head, and for NB201 weights with a graph cache the cell table.
pub struct DeviceModel {
    gen_sets: DeviceSetEncoder,
    gen_mu: (CudaSlice<f32>, CudaSlice<f32>),
    gen_dims: (usize, usize),
    pub decoder: GpuDecoder,
    pred_sets: DeviceSetEncoder,
    head1: CudaSlice<f32>,
    w2: CudaSlice<f32>,
    b2: f32,
    /// `(d_D, nz, P)` of the predictor.
    pred_dims: (usize, usize, usize),
    cells: Option<DeviceCells>,
}

impl DeviceModel {
    /// Uploads the models; `cells` is the graph cache's embeddings (`[15625, nz]`, code
    /// order) and the prior of every cell, when there are such.
    pub fn new(
        gpu: &Gpu,
        generator: &Generator,
        predictor: &Predictor,
        cells: Option<(&[f32], Option<&[f32]>)>,
    ) -> Result<Self, String> {
        use crate::space::nb201::{Nb201Arch, NUM_ARCHS};
        let (dd, nz, p) = (
            predictor.dims.set.out_dim,
            predictor.dims.nz,
            predictor.dims.head_hidden,
        );
        let bias = |l: &crate::nn::Linear| gpu.bias_or_zero(l);
        let head1 = gpu.up(&predictor.head[0].weight)?;
        let b1 = bias(&predictor.head[0])?;
        let cells = match cells {
            Some((embeddings, prior)) => {
                if embeddings.len() != NUM_ARCHS * nz {
                    return Err(format!(
                        "graph cache of {} values, not {NUM_ARCHS} x {nz}",
                        embeddings.len()
                    ));
                }
                let g = gpu.up(embeddings)?;
                let heads = linear_cols(gpu, &g, NUM_ARCHS, &head1, dd + nz, dd, nz, Some(&b1), p)?;
                let ops: Vec<u8> = Nb201Arch::all().flat_map(|a| a.ops).collect();
                Some(DeviceCells {
                    heads,
                    ops: gpu.up(&ops)?,
                    prior: prior.map(|v| gpu.up(v)).transpose()?,
                })
            }
            None => None,
        };
        let fc1 = &generator.fc1;
        Ok(DeviceModel {
            gen_sets: DeviceSetEncoder::new(gpu, &generator.set_encoder)?,
            gen_mu: (gpu.up(&fc1.weight)?, bias(fc1)?),
            gen_dims: (generator.dims.set.out_dim, generator.dims.nz),
            decoder: GpuDecoder::new(gpu, &generator.decoder)?,
            pred_sets: DeviceSetEncoder::new(gpu, &predictor.set_encoder)?,
            head1,
            w2: gpu.up(&predictor.head[1].weight[..p])?,
            b2: predictor.head[1].bias.as_ref().map_or(0.0, |b| b[0]),
            pred_dims: (dd, nz, p),
            cells,
        })
    }

    /// Whether set samples of `classes` classes of `per_class` rows can be encoded on the
    /// device (each class, and the set of class prototypes, is pooled in one thread block's
    /// shared memory: up to about 170 elements with the official widths). Larger ones are
    /// encoded on the CPU.
    pub fn encodes_sets(&self, classes: usize, per_class: usize) -> bool {
        self.gen_sets.fits(classes, per_class) && self.pred_sets.fits(classes, per_class)
    }

    /// Whether NB201 cells can be ranked on the device.
    pub fn ranks_cells(&self) -> bool {
        self.cells.is_some()
    }

    /// The generator's latent means `μ = fc1(SetEncoder(sample))` of set samples, `[S, nz]`,
    /// left on the device for [`GpuDecoder::decode_device`].
    pub fn latents(
        &self,
        gpu: &Gpu,
        data: &Dataset,
        samples: &[&[u32]],
        per_class: usize,
    ) -> Result<CudaSlice<f32>, String> {
        let (dd, nz) = self.gen_dims;
        let v = self.gen_sets.encode(gpu, data, samples, per_class)?;
        linear_cols(
            gpu,
            &v,
            samples.len(),
            &self.gen_mu.0,
            dd,
            0,
            dd,
            Some(&self.gen_mu.1),
            nz,
        )
    }

    /// The predictor's dataset embeddings of set samples, `[S, d_D]`, on the device.
    pub fn dataset_embeddings(
        &self,
        gpu: &Gpu,
        data: &Dataset,
        samples: &[&[u32]],
        per_class: usize,
    ) -> Result<CudaSlice<f32>, String> {
        self.pred_sets.encode(gpu, data, samples, per_class)
    }

    /// Scores of the cells `codes` against dataset embeddings `d` (`[R, d_D]`, on the device)
    /// with weights `weights` (`[R]`): the head averaged over the embeddings, plus the prior
    /// and, given `mix_values`, the cell mix, as [`crate::Engine::score`] computes them on
    /// the CPU. Needs the cell table ([`DeviceModel::ranks_cells`]).
    pub fn rank_cells(
        &self,
        gpu: &Gpu,
        d: &CudaSlice<f32>,
        weights: &[f32],
        mix_values: Option<&[f32]>,
        codes: &[i32],
    ) -> Result<Vec<f32>, String> {
        let cells = self
            .cells
            .as_ref()
            .ok_or("no cell table on the device (NB201 weights with a graph cache only)")?;
        let (dd, nz, p) = self.pred_dims;
        let (r, n) = (weights.len(), codes.len());
        if n == 0 || r == 0 {
            return Ok(Vec::new());
        }
        let (slots, types) = (6usize, 5usize);
        if mix_values.is_some_and(|v| v.len() < slots * types) {
            return Err("cell mix values do not cover six edges of five operations".into());
        }
        let cd = linear_cols(gpu, d, r, &self.head1, dd + nz, 0, dd, None, p)?;
        let (dw, dcodes) = (gpu.up(weights)?, gpu.up(codes)?);
        let mixv = gpu.up(mix_values.unwrap_or(&[0.0]))?;
        let mut out = gpu.stream.alloc_zeros::<f32>(n).map_err(de)?;
        let threads = 128u32;
        let ints_a = [p as i32];
        let r_ = r as i32;
        let has_prior = cells.prior.is_some() as i32;
        let ints_b = [slots as i32, types as i32, mix_values.is_some() as i32];
        let mut b = gpu.stream.launch_builder(gpu.func("rank_cells"));
        b.arg(&cells.heads).arg(&dcodes).arg(&ints_a[0]).arg(&cd);
        b.arg(&dw).arg(&r_).arg(&self.w2).arg(&self.b2);
        // Without a prior the kernel never reads it; pass the weights.
        b.arg(cells.prior.as_ref().unwrap_or(&dw)).arg(&has_prior);
        b.arg(&mixv).arg(&cells.ops);
        for v in &ints_b {
            b.arg(v);
        }
        b.arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: threads * 4,
        };
        // SAFETY: argument order and types match `rank_cells`; every code indexes the
        // 15,625-row tables (checked by the caller), `cd` has r * p values.
        unsafe { b.launch(cfg) }.map_err(de)?;
        gpu.stream.clone_dtoh(&out).map_err(de)
    }
}

impl Gpu {
    /// Copies a device buffer to the host.
    pub fn download(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>, String> {
        self.stream.clone_dtoh(x).map_err(de)
    }
}
