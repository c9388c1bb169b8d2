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
//! Status: the kernels (set-attention block, gated messages, GRU step fused with the message
//! sum, on-device sampling with the engine's random streams, and the whole stochastic graph
//! decode in one launch, one thread block per graph) and their launchers; the search itself
//! still runs on the CPU.

pub mod ops;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

/// The PTX of `kernels/metad2a.cu` (compute_90, PTX ISA 8.4).
pub const PTX: &str = include_str!("../../kernels/metad2a.ptx");

/// Kernel names in [`PTX`].
pub const KERNELS: [&str; 6] = [
    "mab_fused",
    "gated_messages",
    "gru_gated_step",
    "sample_types",
    "sample_edges",
    "decode_graphs",
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

/// A GPU with a generator's decoder resident on it: what an [`crate::Engine`] decodes with
/// once [`crate::Engine::use_cuda`] succeeded.
pub struct DeviceDecoder {
    pub gpu: Gpu,
    pub decoder: ops::GpuDecoder,
}

impl std::fmt::Debug for DeviceDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceDecoder({})", self.gpu.name)
    }
}

#[cfg(test)]
mod tests;
