//! The dataset-to-architecture search: an [`Engine`] loaded once from a weights directory
//! (immutable, shareable across threads) and a per-call [`Engine::search`] that generates
//! candidates with the generator and ranks them with the meta-predictor.
//!
//! Generation follows the official meta-test: batches of 100 independent set samples (20 rows
//! per class), `z = μ` of each, one stochastic decode per sample, keeping unique valid
//! architectures in generation order until `num_archs` are collected or a cap on decoded graphs
//! is reached. Ranking averages the predictor's score over `resamples` set samples. One
//! difference from the official code: the `R` ranking samples are shared by all candidates
//! (the official code draws 10 fresh samples per candidate), so the ranking compares candidates
//! on the same data and costs `R` set encodings instead of `R` per candidate.

mod engine;
pub mod graph_cache;
pub mod sets;

pub use engine::Engine;

use serde::Serialize;

use crate::space::nb201_table::Nb201Entry;
use crate::space::{Arch, Cost, Mbv3Net, Nb201Net, Space};

/// Default number of candidates in NB201 (the official CIFAR setting).
pub const DEFAULT_NUM_ARCHS: usize = 500;
/// Default number of candidates in the MobileNetV3 space (the official setting).
pub const DEFAULT_NUM_ARCHS_MBV3: usize = 200;

/// The official number of candidates of a space.
pub fn default_num_archs(space: Space) -> usize {
    match space {
        Space::Nb201 => DEFAULT_NUM_ARCHS,
        Space::Mbv3 => DEFAULT_NUM_ARCHS_MBV3,
    }
}
/// Default number of set samples each candidate's score is averaged over.
pub const DEFAULT_RESAMPLES: usize = 10;
/// Set samples per generation batch (official).
pub const GENERATION_BATCH: usize = 100;
/// Rows per class in a set sample (official).
pub const DEFAULT_PER_CLASS: usize = 20;

/// Optional caps on the cost of the architectures considered.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Budget {
    /// Most multiply-adds of the network (NAS-Bench-201 counting).
    pub max_flops: Option<u64>,
    pub max_params: Option<u64>,
    /// The NB201 network the costs of cells refer to.
    #[serde(skip)]
    pub net: Nb201Net,
    /// The MobileNetV3 network the costs of subnets refer to.
    #[serde(skip)]
    pub mbv3_net: Mbv3Net,
}

impl Budget {
    /// FLOPs and parameters of the network of `a`.
    pub fn cost(&self, a: &Arch) -> Cost {
        match a {
            Arch::Nb201(a) => a.cost(&self.net),
            Arch::Mbv3(a) => a.cost(&self.mbv3_net),
        }
    }

    /// True when the architecture's network is within every cap.
    pub fn admits(&self, a: &Arch) -> bool {
        if self.max_flops.is_none() && self.max_params.is_none() {
            return true;
        }
        let c = self.cost(a);
        self.max_flops.is_none_or(|f| c.flops <= f) && self.max_params.is_none_or(|p| c.params <= p)
    }
}

/// What one search does.
#[derive(Clone, Debug, Serialize)]
pub struct SearchConfig {
    pub seed: u64,
    /// Candidates to generate and rank.
    pub num_archs: usize,
    /// Set samples each score is averaged over.
    pub resamples: usize,
    /// Candidates reported (0: all).
    pub top_k: usize,
    pub per_class: usize,
    /// Draw set rows with replacement (for classes with fewer than `per_class` rows).
    pub with_replacement: bool,
    /// Stop generating after this many decoded graphs (default: 100 × `num_archs`, at least
    /// 20,000).
    pub max_decoded: Option<usize>,
    /// Score every architecture of the space instead of generating candidates.
    pub exhaustive: bool,
    pub budget: Budget,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            seed: 0,
            num_archs: DEFAULT_NUM_ARCHS,
            resamples: DEFAULT_RESAMPLES,
            top_k: 10,
            per_class: DEFAULT_PER_CLASS,
            with_replacement: false,
            max_decoded: None,
            exhaustive: false,
            budget: Budget::default(),
        }
    }
}

impl SearchConfig {
    /// The cap on decoded graphs in effect.
    pub fn decode_cap(&self) -> usize {
        self.max_decoded
            .unwrap_or_else(|| (100 * self.num_archs).max(20_000))
    }
}

/// One ranked architecture.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// 1 = best predicted.
    pub rank: usize,
    /// The architecture (serialised as text: the NAS-Bench-201 string, or the readable
    /// MobileNetV3 form).
    pub arch: Arch,
    /// The MobileNetV3 architecture as the official `{ks, e, d}` object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch_json: Option<serde_json::Value>,
    /// Predicted score (normalised accuracy of the meta-training data; higher is better).
    pub score: f32,
    /// Multiply-adds of the network of `SearchConfig::budget` (`net` for NB201 cells,
    /// `mbv3_net` for MobileNetV3 subnets).
    pub flops: u64,
    pub params: u64,
    /// Benchmark facts, when a NAS-Bench-201 table was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nb201: Option<Nb201Entry>,
}

/// Counts of the generation stage.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    /// Graphs decoded.
    pub decoded: usize,
    /// Decoded graphs that are valid architectures.
    pub valid: usize,
    /// Distinct valid architectures seen.
    pub unique: usize,
    /// Distinct architectures left out by the budget.
    pub over_budget: usize,
    /// Candidates ranked.
    pub ranked: usize,
    /// True when generation stopped at the cap before collecting `num_archs`.
    pub capped: bool,
    /// Set samples drawn for generation: one per graph decoded, including the graphs of the
    /// last batch past the one that completed the candidates (CPU batches are sized to the
    /// need at the yield so far; a GPU launch decodes whole batches of 100). Graphs the CPU
    /// decodes ahead of the batches (when every set sample is the whole dataset) count only
    /// once their batch is reached.
    pub set_samples: usize,
}

/// Wall-clock time of each stage, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// Drawing and encoding set samples (generation and ranking).
    pub sets_ms: f64,
    /// Decoding graphs.
    pub decode_ms: f64,
    /// Graph embeddings and predictor scores.
    pub rank_ms: f64,
    pub total_ms: f64,
}

/// The result of a search.
#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    pub space: Space,
    pub mode: SearchMode,
    pub seed: u64,
    pub counts: Counts,
    pub timings: Timings,
    /// Best first, at most `top_k`.
    pub candidates: Vec<Candidate>,
    /// How far the data is from the meta-training tasks (weights with a gated cell mix only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_fit: Option<DataFit>,
}

/// Where a dataset stands against the tasks a gated cell mix was trained on
/// ([`crate::model::CellMix`]), from the mean of the set embeddings the ranking used.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DataFit {
    /// Distance of the dataset's mean embedding to the nearest training task's: root mean
    /// square over dimensions, in units of the training spread. (For the default weights,
    /// held-out meta-database tasks of sources seen in training measure well below the radius,
    /// tasks of unseen sources above it: `docs/ranker.md`.)
    pub novelty: f32,
    /// The gate's radius, a property of the weights: at this novelty the data part keeps 37%.
    pub radius: f32,
    /// The share of the mix's data-dependent part kept at that novelty, `exp(−(ν/r)²)`: 1 as
    /// on a training task; near 0 the ranking is the one every dataset gets.
    pub gate: f32,
}

/// How the candidates of a search were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Generated by the graph decoder from the dataset's embedding.
    Generate,
    /// Every cell of the space scored (NB201 only).
    Exhaustive,
}

/// Progress of a running search, for progress indicators.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Generating: unique candidates so far, of the target; graphs decoded.
    Generating {
        unique: usize,
        target: usize,
        decoded: usize,
    },
    /// Ranking candidates.
    Ranking { candidates: usize },
}

/// Imports official checkpoints ([`crate::weights::import::import_official`]) and, for NB201
/// weights, writes the graph-embedding cache of all 15,625 cells beside them (a few seconds).
pub fn import_with_graph_cache(
    opts: &crate::weights::import::ImportOptions,
) -> crate::Result<crate::weights::manifest::Manifest> {
    let m = crate::weights::import::import_official(opts)?;
    if m.space == crate::space::Space::Nb201 {
        Engine::build_graph_cache_with(&opts.out, &m.predictor, &mut |_, _| {})?;
    }
    Ok(m)
}
