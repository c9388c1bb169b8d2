//! # metad2a
//!
//! An inference engine for MetaD2A (Lee, Hyung & Hwang, "Rapid Neural Architecture Search by
//! Learning to Generate Graphs from Datasets", ICLR 2021): from a sample of a new dataset's
//! features it generates candidate architectures and ranks them, with no training on that
//! dataset.
//!
//! The modules follow the flow of the computation, on a base of [`graph`] (the DAG every
//! search space and model speaks), [`dataset`], [`error`] and [`rng`]:
//! [`weights`] (memory-mapped safetensors, manifest, checkpoint importer) →
//! [`nn`] (set attention, GRU step, gated sums: fused kernels and composed references) →
//! [`model`] (set encoder, generator, graph encoder, predictor) →
//! [`space`] (NAS-Bench-201 cells) → [`search`] (generation, ranking, budgets) → front ends
//! (the `metad2a` command, the C API in [`ffi`]).
//!
//! ```no_run
//! let engine = metad2a::Engine::load("weights/official-nb201")?;
//! let data = metad2a::Dataset::load("features.safetensors")?;
//! let report = engine.search(&data, &metad2a::SearchConfig::default())?;
//! println!("best: {}", report.candidates[0].arch);
//! # Ok::<(), metad2a::Error>(())
//! ```

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dataset;
pub mod error;
pub mod features;
pub mod ffi;
pub mod graph;
pub mod model;
pub mod nn;
pub mod rng;
pub mod search;
pub mod space;
pub mod stats;
#[cfg(feature = "train")]
pub mod train;
pub mod util;
pub mod weights;

pub use dataset::Dataset;
pub use error::{Error, ErrorKind, Result};
pub use search::{Engine, SearchConfig, SearchReport};
