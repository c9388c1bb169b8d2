//! The CUDA backend (feature `cuda`): the fused kernels of `kernels/metad2a.cu`, loaded from the
//! committed PTX, and their launchers.
//!
//! Why cudarc with dynamic loading, and not candle's `cuda` feature: candle's needs nvcc when
//! building and links libcuda, cuBLAS, cuRAND, NVRTC and cudart, so a `--features cuda` binary
//! neither builds nor starts on a machine without a CUDA toolkit. cudarc with `dynamic-loading`
//! builds anywhere and opens `libcuda.so` only when [`Gpu::open`] is called; the kernels need
//! nothing but the driver. The PTX is generated ahead of time (`scripts/build-ptx.sh`) and
//! embedded, so no compiler is needed at run time either.
//!
//! [`Gpu::open`] never panics: without a driver, a device or a driver new enough for the PTX it
//! returns the reason, and callers use the CPU path (always built).
//!
//! Kernels: the set-attention block and a whole set pool per thread block, gated messages, the
//! GRU step fused with the message sum, on-device sampling with the engine's random streams,
//! the whole stochastic graph decode in one launch (one thread block per graph), a column-block
//! Linear, and the scoring of cells against a resident table of the head's graph half.
//! [`search::DeviceModel`] runs a search's stages with them: a generation batch is two set-pool
//! launches, one Linear and one decode launch with one copy of the graphs back; ranking NB201
//! cells is two set-pool launches, one Linear and one scoring launch with one copy of the
//! scores back (plus the few dataset embeddings when the weights have a cell mix).

pub mod ops;
pub mod search;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

/// The PTX of `kernels/metad2a.cu` (compute_90, PTX ISA 8.4).
pub const PTX: &str = include_str!("../../kernels/metad2a.ptx");

/// Kernel names in [`PTX`].
pub const KERNELS: [&str; 9] = [
    "mab_fused",
    "gated_messages",
    "gru_gated_step",
    "sample_types",
    "sample_edges",
    "decode_graphs",
    "set_pool",
    "linear_cols",
    "rank_cells",
];

/// A CUDA device with the engine's kernels loaded.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: Vec<CudaFunction>,
    pub name: String,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("name", &self.name).finish()
    }
}

impl Gpu {
    /// Opens device `ordinal` and loads the kernels, or says why not (no driver library, no
    /// device, a driver too old for the PTX, ...).
    pub fn open(ordinal: usize) -> std::result::Result<Gpu, String> {
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver: libcuda.so was not found".into());
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| format!("CUDA device {ordinal} cannot be opened: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown device".into());
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(PTX))
            .map_err(|e| {
                format!("the kernels' PTX does not load on {name} (a driver older than R550?): {e}")
            })?;
        let funcs = KERNELS
            .iter()
            .map(|k| {
                module
                    .load_function(k)
                    .map_err(|e| format!("kernel {k} missing from the PTX: {e}"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            _module: module,
            funcs,
            name,
        })
    }

    /// The first device if there is a usable one; otherwise the reason, for a message such as
    /// "CUDA unavailable (...): using the CPU".
    pub fn open_default() -> std::result::Result<Gpu, String> {
        Self::open(0)
    }

    pub(crate) fn func(&self, name: &str) -> &CudaFunction {
        let i = KERNELS
            .iter()
            .position(|k| *k == name)
            .expect("a kernel of KERNELS");
        &self.funcs[i]
    }
}

/// A GPU with an engine's models resident on it: what an [`crate::Engine`] searches with once
/// [`crate::Engine::use_cuda`] succeeded.
pub struct Device {
    pub gpu: Gpu,
    pub model: search::DeviceModel,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.gpu.name)
    }
}

#[cfg(test)]
mod tests;
