//! # metad2a
//!
//! An inference engine for MetaD2A (Lee, Hyung & Hwang, "Rapid Neural Architecture Search by
//! Learning to Generate Graphs from Datasets", ICLR 2021): from a sample of a new dataset's
//! features it generates candidate architectures and ranks them, with no training on that
//! dataset.
//!
//! The modules follow the flow of the computation:
//! [`weights`] (memory-mapped safetensors, manifest, checkpoint importer) →
//! [`nn`] (set attention, GRU step, gated sums: fused kernels and composed references) →
//! [`model`] (set encoder, generator, graph encoder, predictor) →
//! [`space`] (NAS-Bench-201 cells) → front ends (the `metad2a` command).

pub mod error;
pub mod model;
pub mod nn;
pub mod rng;
pub mod space;
pub mod util;
pub mod weights;

pub use error::{Error, Result};
