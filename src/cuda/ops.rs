//! Launchers of the fused kernels on host slices: each uploads its inputs and the block's
//! weights, launches, synchronises and downloads the result. They mirror the CPU blocks of
//! `src/nn` one for one, which is what the fused-vs-CPU tests and the device bench compare.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::Gpu;
use crate::nn::{GatedMessage, GruCell, Linear, Mab};

/// A driver error as a message.
pub(crate) fn de(e: cudarc::driver::DriverError) -> String {
    format!("CUDA: {e}")
}

/// The largest dynamic shared memory one block may ask for (H100/H200: 227 KiB).
pub(crate) const MAX_SHARED_BYTES: usize = 227 * 1024;

/// Lets `f` use `bytes` of dynamic shared memory (beyond 48 KiB it must opt in).
pub(crate) fn allow_shared(f: &cudarc::driver::CudaFunction, bytes: usize) -> Result<(), String> {
    if bytes > MAX_SHARED_BYTES {
        return Err(format!(
            "{bytes} bytes of shared memory per block are more than {MAX_SHARED_BYTES}"
        ));
    }
    if bytes > 48 * 1024 {
        f.set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(de)?;
    }
    Ok(())
}

impl Gpu {
    pub(crate) fn up<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>, String> {
        self.stream.clone_htod(v).map_err(de)
    }

    pub(crate) fn bias_or_zero(&self, l: &Linear) -> Result<CudaSlice<f32>, String> {
        match &l.bias {
            Some(b) => self.up(b),
            None => self.up(&vec![0.0f32; l.out_dim]),
        }
    }

    /// `MAB(Q, K)` of `nsets` sets on the device, as [`Mab::forward`] (or, with `q_shared`,
    /// with one `[nq, dim_q]` query block for every set, as PMA uses it).
    #[allow(clippy::too_many_arguments)]
    pub fn mab(
        &self,
        m: &Mab,
        q: &[f32],
        q_shared: bool,
        k: &[f32],
        nsets: usize,
        nq: usize,
        nk: usize,
    ) -> Result<Vec<f32>, String> {
        let (dq, dk, dv, heads) = (m.fc_q.in_dim, m.fc_k.in_dim, m.dim_v, m.heads);
        let want_q = if q_shared { nq * dq } else { nsets * nq * dq };
        if q.len() != want_q || k.len() != nsets * nk * dk || nsets == 0 {
            return Err(format!(
                "mab: {} query and {} key values for {nsets} sets of {nq}x{dq} and {nk}x{dk}",
                q.len(),
                k.len()
            ));
        }
        let shared = ((2 * nq + 2 * nk) * dv + 2 * heads * nq) * 4;
        if shared > MAX_SHARED_BYTES {
            return Err(format!(
                "mab: sets of {nq}+{nk} rows of width {dv} need {shared} bytes of shared memory, more than {MAX_SHARED_BYTES}"
            ));
        }
        let f = self.func("mab_fused");
        allow_shared(f, shared)?;
        let (dq_q, dk_k) = (self.up(q)?, self.up(k)?);
        let (wq, bq) = (self.up(&m.fc_q.weight)?, self.bias_or_zero(&m.fc_q)?);
        let (wk, bk) = (self.up(&m.fc_k.weight)?, self.bias_or_zero(&m.fc_k)?);
        let (wv, bv) = (self.up(&m.fc_v.weight)?, self.bias_or_zero(&m.fc_v)?);
        let (wo, bo) = (self.up(&m.fc_o.weight)?, self.bias_or_zero(&m.fc_o)?);
        let mut out = self
            .stream
            .alloc_zeros::<f32>(nsets * nq * dv)
            .map_err(de)?;
        let (qs, nq_, nk_, dq_, dk_, dv_, h_) = (
            q_shared as i32,
            nq as i32,
            nk as i32,
            dq as i32,
            dk as i32,
            dv as i32,
            heads as i32,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(&dq_q)
            .arg(&qs)
            .arg(&dk_k)
            .arg(&nq_)
            .arg(&nk_)
            .arg(&dq_)
            .arg(&dk_)
            .arg(&dv_)
            .arg(&h_)
            .arg(&wq)
            .arg(&bq)
            .arg(&wk)
            .arg(&bk)
            .arg(&wv)
            .arg(&bv)
            .arg(&wo)
            .arg(&bo)
            .arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (nsets as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: argument order and types match `mab_fused`; every buffer has the size the
        // kernel indexes (checked above).
        unsafe { b.launch(cfg) }.map_err(de)?;
        self.stream.clone_dtoh(&out).map_err(de)
    }

    /// Gated messages of `vid.len()` vertices with states `h` (`[rows, hs]`), as
    /// [`GatedMessage::messages`] (which takes one vertex index for all rows).
    pub fn gated_messages(
        &self,
        g: &GatedMessage,
        h: &[f32],
        vid: &[i32],
    ) -> Result<Vec<f32>, String> {
        let (rows, hs) = (vid.len(), g.hs);
        if h.len() != rows * hs || vid.iter().any(|&v| v < 0 || v as usize >= g.max_n) {
            return Err("gated_messages: sizes or vertex indices out of range".into());
        }
        let (dh, dv) = (self.up(h)?, self.up(vid)?);
        let (wg, bg, wm) = (
            self.up(&g.gate.weight)?,
            self.bias_or_zero(&g.gate)?,
            self.up(&g.mapper.weight)?,
        );
        let mut out = self.stream.alloc_zeros::<f32>(rows * hs).map_err(de)?;
        let (r_, hs_, mn_) = (rows as i32, hs as i32, g.max_n as i32);
        let mut b = self.stream.launch_builder(self.func("gated_messages"));
        b.arg(&dh)
            .arg(&dv)
            .arg(&r_)
            .arg(&hs_)
            .arg(&mn_)
            .arg(&wg)
            .arg(&bg)
            .arg(&wm)
            .arg(&mut out);
        let n = (rows * hs) as u32;
        // SAFETY: as above.
        unsafe { b.launch(LaunchConfig::for_num_elems(n.max(1))) }.map_err(de)?;
        self.stream.clone_dtoh(&out).map_err(de)
    }

    /// One GRU step per row on the sum of the row's predecessors' messages:
    /// `h'[r] = GRU(onehot(types[r]), Σ_{u ∈ preds[r]} msgs[r, u])`, `msgs: [rows, max_n, hs]`.
    pub fn gru_gated_step(
        &self,
        cell: &GruCell,
        types: &[u8],
        preds: &[u64],
        msgs: &[f32],
        max_n: usize,
    ) -> Result<Vec<f32>, String> {
        let (rows, hs) = (types.len(), cell.hidden);
        if rows == 0
            || preds.len() != rows
            || msgs.len() != rows * max_n * hs
            || max_n > 64
            || types.iter().any(|&t| t as usize >= cell.input)
        {
            return Err("gru_gated_step: sizes or types out of range".into());
        }
        let (dt, dp, dm) = (self.up(types)?, self.up(preds)?, self.up(msgs)?);
        let (gi, whh, bhh) = (
            self.up(cell.input_rows())?,
            self.up(&cell.weight_hh)?,
            self.up(&cell.bias_hh)?,
        );
        let mut out = self.stream.alloc_zeros::<f32>(rows * hs).map_err(de)?;
        let (hs_, mn_) = (hs as i32, max_n as i32);
        let mut b = self.stream.launch_builder(self.func("gru_gated_step"));
        b.arg(&dt)
            .arg(&dp)
            .arg(&dm)
            .arg(&hs_)
            .arg(&mn_)
            .arg(&gi)
            .arg(&whh)
            .arg(&bhh)
            .arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (hs.next_multiple_of(32).min(1024) as u32, 1, 1),
            shared_mem_bytes: (hs * 4) as u32,
        };
        // SAFETY: as above.
        unsafe { b.launch(cfg) }.map_err(de)?;
        self.stream.clone_dtoh(&out).map_err(de)
    }

    /// Draws a vertex type per row of `logits` (`[rows, nvt]`) from its softmax, advancing
    /// each row's xoshiro256** state (`[rows, 4]`, updated in place) as `Rng` does.
    pub fn sample_types(
        &self,
        logits: &[f32],
        nvt: usize,
        state: &mut [u64],
    ) -> Result<Vec<u8>, String> {
        let rows = state.len() / 4;
        if nvt == 0 || logits.len() != rows * nvt || state.len() != rows * 4 || rows == 0 {
            return Err("sample_types: sizes do not match".into());
        }
        let dl = self.up(logits)?;
        let mut ds = self.up(state)?;
        let mut out = self.stream.alloc_zeros::<u8>(rows).map_err(de)?;
        let (r_, n_) = (rows as i32, nvt as i32);
        let mut b = self.stream.launch_builder(self.func("sample_types"));
        b.arg(&dl).arg(&r_).arg(&n_).arg(&mut ds).arg(&mut out);
        // SAFETY: as above.
        unsafe { b.launch(LaunchConfig::for_num_elems(rows as u32)) }.map_err(de)?;
        state.copy_from_slice(&self.stream.clone_dtoh(&ds).map_err(de)?);
        self.stream.clone_dtoh(&out).map_err(de)
    }

    /// Bernoulli edge draws `next_f32() < σ(logit)` per row, advancing the states in place.
    pub fn sample_edges(&self, logits: &[f32], state: &mut [u64]) -> Result<Vec<bool>, String> {
        let rows = logits.len();
        if rows == 0 || state.len() != rows * 4 {
            return Err("sample_edges: sizes do not match".into());
        }
        let dl = self.up(logits)?;
        let mut ds = self.up(state)?;
        let mut out = self.stream.alloc_zeros::<u8>(rows).map_err(de)?;
        let r_ = rows as i32;
        let mut b = self.stream.launch_builder(self.func("sample_edges"));
        b.arg(&dl).arg(&r_).arg(&mut ds).arg(&mut out);
        // SAFETY: as above.
        unsafe { b.launch(LaunchConfig::for_num_elems(rows as u32)) }.map_err(de)?;
        state.copy_from_slice(&self.stream.clone_dtoh(&ds).map_err(de)?);
        Ok(self
            .stream
            .clone_dtoh(&out)
            .map_err(de)?
            .into_iter()
            .map(|a| a != 0)
            .collect())
    }
}

/// The graph decoder's weights resident on the device, for [`GpuDecoder::decode`].
pub struct GpuDecoder {
    nz: usize,
    hs: usize,
    eh: usize,
    nvt: usize,
    max_n: usize,
    /// fc3 w/b, gru input rows/whh/bhh, av0 w/b, av2 w/b, ae0 w/b, ae2 w/b, gate w/b, mapper w.
    w: Vec<CudaSlice<f32>>,
}

impl GpuDecoder {
    /// Uploads the weights of `dec`.
    pub fn new(gpu: &Gpu, dec: &crate::model::GraphDecoder) -> Result<Self, String> {
        if dec.max_n > 64 {
            return Err("graphs of more than 64 vertices".into());
        }
        let mut w = vec![gpu.up(&dec.fc3.weight)?, gpu.bias_or_zero(&dec.fc3)?];
        w.push(gpu.up(dec.grud.input_rows())?);
        w.push(gpu.up(&dec.grud.weight_hh)?);
        w.push(gpu.up(&dec.grud.bias_hh)?);
        for l in [
            &dec.add_vertex[0],
            &dec.add_vertex[1],
            &dec.add_edge[0],
            &dec.add_edge[1],
            &dec.message.gate,
        ] {
            w.push(gpu.up(&l.weight)?);
            w.push(gpu.bias_or_zero(l)?);
        }
        w.push(gpu.up(&dec.message.mapper.weight)?);
        Ok(GpuDecoder {
            nz: dec.nz,
            hs: dec.hs,
            eh: dec.add_edge[0].out_dim,
            nvt: dec.nvt,
            max_n: dec.max_n,
            w,
        })
    }

    /// Decodes one graph per latent row of `z` (`[n, nz]`) in one launch, as
    /// [`crate::model::GraphDecoder::decode`]: graph `i` draws from `rngs[i]`, which is advanced
    /// as the CPU would advance it.
    pub fn decode(
        &self,
        gpu: &Gpu,
        z: &[f32],
        mode: crate::model::DecodeMode,
        rngs: &mut [crate::rng::Rng],
    ) -> Result<Vec<crate::graph::Dag>, String> {
        let n = rngs.len();
        if n == 0 || z.len() != n * self.nz {
            return Err(format!(
                "decode: {} latent values for {n} random streams of nz = {}",
                z.len(),
                self.nz
            ));
        }
        self.decode_device(gpu, &gpu.up(z)?, mode, rngs)
    }

    /// As [`decode`](Self::decode), from latents already on the device (`[n, nz]`, e.g. from
    /// [`super::search::DeviceModel::latents`]).
    pub fn decode_device(
        &self,
        gpu: &Gpu,
        dz: &CudaSlice<f32>,
        mode: crate::model::DecodeMode,
        rngs: &mut [crate::rng::Rng],
    ) -> Result<Vec<crate::graph::Dag>, String> {
        let n = rngs.len();
        if n == 0 || dz.len() != n * self.nz {
            return Err(format!(
                "decode: {} latent values on the device for {n} random streams of nz = {}",
                dz.len(),
                self.nz
            ));
        }
        let state: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
        let mut ds = gpu.up(&state)?;
        let mut types = gpu.stream.alloc_zeros::<u8>(n * self.max_n).map_err(de)?;
        let mut preds = gpu.stream.alloc_zeros::<u64>(n * self.max_n).map_err(de)?;
        let threads = 128usize;
        let shared = (2 * self.max_n * self.hs
            + self.max_n * self.eh
            + 5 * self.hs
            + self.eh
            + self.nvt
            + threads)
            * 4;
        let ints = [
            self.nz as i32,
            self.hs as i32,
            self.eh as i32,
            self.nvt as i32,
            self.max_n as i32,
            crate::model::START_TYPE as i32,
            crate::model::END_TYPE as i32,
            (mode == crate::model::DecodeMode::Argmax) as i32,
        ];
        let f = gpu.func("decode_graphs");
        allow_shared(f, shared)?;
        let mut b = gpu.stream.launch_builder(f);
        b.arg(dz);
        for v in &ints {
            b.arg(v);
        }
        for w in &self.w {
            b.arg(w);
        }
        b.arg(&mut ds).arg(&mut types).arg(&mut preds);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: argument order and types match `decode_graphs` (8 ints after z, then the 16
        // weight buffers in the kernel's order); buffers are sized for n graphs.
        unsafe { b.launch(cfg) }.map_err(de)?;
        let types = gpu.stream.clone_dtoh(&types).map_err(de)?;
        let preds = gpu.stream.clone_dtoh(&preds).map_err(de)?;
        let state = gpu.stream.clone_dtoh(&ds).map_err(de)?;
        for (r, s) in rngs.iter_mut().zip(state.chunks_exact(4)) {
            *r = crate::rng::Rng::from_state([s[0], s[1], s[2], s[3]]);
        }
        let mn = self.max_n;
        Ok((0..n)
            .map(|g| {
                let t: Vec<u8> = types[g * mn..(g + 1) * mn]
                    .iter()
                    .copied()
                    .take_while(|&t| t != 0xff)
                    .collect();
                let p = preds[g * mn..g * mn + t.len()].to_vec();
                crate::graph::Dag { types: t, preds: p }
            })
            .collect())
    }
}
