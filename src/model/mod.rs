//! The MetaD2A models, built from the blocks of [`crate::nn`]: the set encoder, the generator
//! (latent heads and graph decoder), the graph encoder and the meta-performance predictor.

pub mod cell_mix;
pub mod cell_prior;
pub mod decoder;
pub mod dims;
pub mod generator;
pub mod graph_encoder;
pub mod inventory;
pub mod predictor;
pub mod set_encoder;

pub use crate::graph::{Dag, END_TYPE, START_TYPE};
pub use cell_mix::CellMix;
pub use cell_prior::CellPrior;
pub use decoder::{DecodeMode, DrawTree, GraphDecoder};
pub use dims::{GeneratorDims, PredictorDims, SetEncoderDims, HEADS};
pub use generator::Generator;
pub use graph_encoder::GraphEncoder;
pub use predictor::Predictor;
pub use set_encoder::SetEncoder;
