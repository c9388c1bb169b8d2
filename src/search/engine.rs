use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use rayon::prelude::*;

use super::graph_cache::{self, GraphCache};
use super::sets::{draw, every_sample_is_the_data, SetEmbedder, SetSample};
use super::{
    Candidate, Counts, DataFit, Progress, SearchConfig, SearchMode, SearchReport, Timings,
    GENERATION_BATCH,
};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{DecodeMode, DrawTree, Generator, Predictor};
use crate::rng::Rng;
use crate::space::nb201::{Nb201Arch, NUM_ARCHS};
use crate::space::nb201_table::Nb201Table;
use crate::space::{Arch, Space};
use crate::weights::{Manifest, WeightStore};

/// Generation batches one GPU launch decodes.
#[cfg(feature = "cuda")]
const GPU_LOOKAHEAD_BATCHES: usize = 8;

/// Cells per chunk when an exhaustive search computes the head's graph half on the fly.
const HEAD_CHUNK: usize = 512;

/// Random streams of a search, each indexed by sample or graph number.
const STREAM_GENERATION_SET: u64 = 1 << 40;
const STREAM_DECODE: u64 = 2 << 40;
const STREAM_RANKING_SET: u64 = 3 << 40;

/// A loaded engine: the two models of a weights directory and its graph-embedding cache.
/// Immutable after loading; share it between threads (`&Engine` or `Arc<Engine>`).
pub struct Engine {
    pub generator: Generator,
    pub predictor: Predictor,
    pub manifest: Option<Manifest>,
    pub space: Space,
    dir: Option<PathBuf>,
    graph_cache: Option<GraphCache>,
    /// `A = G W₁ᵀ + b₁` (graph half of the predictor head) for every NB201 cell, made by the
    /// second exhaustive search of the engine (NB201 only).
    all_heads: OnceLock<Vec<f32>>,
    /// Exhaustive searches begun (the first one does without `all_heads`).
    exhaustive_searches: AtomicUsize,
    /// The cell prior of every NB201 cell in code order, made on first use by an exhaustive
    /// search of weights that have one.
    all_priors: OnceLock<Vec<f32>>,
    /// The GPU the search runs on, after [`Engine::use_cuda`].
    #[cfg(feature = "cuda")]
    device: Option<crate::cuda::Device>,
    /// Generation batches decoded together (1 on the CPU).
    decode_lookahead: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("space", &self.space)
            .field("graph_cache", &self.graph_cache.is_some())
            .finish()
    }
}

fn check_file_size(dir: &Path, file: &str, bytes: u64) -> Result<()> {
    let path = dir.join(file);
    let len = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    if len != bytes {
        return Err(Error::Manifest {
            file: path.display().to_string(),
            reason: format!(
                "file has {len} bytes, the manifest says {bytes}: it was truncated or replaced"
            ),
        });
    }
    Ok(())
}

impl Engine {
    /// Checks the weights files again against the manifest (size and checksum), e.g. before a
    /// long run or after the files may have been touched. The engine keeps using what it
    /// loaded either way; an error says the files on disk no longer match it.
    pub fn verify(&self) -> Result<()> {
        let (Some(dir), Some(m)) = (&self.dir, &self.manifest) else {
            return Ok(());
        };
        for e in [&m.generator, &m.predictor] {
            check_file_size(dir, &e.file, e.bytes)?;
            e.check_digest(dir, &WeightStore::open(dir.join(&e.file))?)?;
        }
        if let Some(c) = &self.graph_cache {
            c.verified()?;
        }
        Ok(())
    }

    /// Loads a weights directory: `manifest.json`, the two model files (memory-mapped; their
    /// sizes checked against the manifest, every tensor checked by name and shape, and their
    /// content by the manifest's per-tensor BLAKE3s, each tensor when first read (older
    /// manifests: the whole file's BLAKE3 or sha256, now)) and, when present, the
    /// graph-embedding cache (bound to the predictor's checksum now; its content checked
    /// against its checksums before use: the blocks of rows a search reads when it reads them
    /// (all of them for an exhaustive search; the whole content's BLAKE3 for a cache without
    /// block checksums), so a damaged cache fails the first search that reads a damaged row,
    /// and [`Engine::verify`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest = Manifest::read(dir)?;
        let open = |e: &crate::weights::manifest::ModelEntry| -> Result<WeightStore> {
            check_file_size(dir, &e.file, e.bytes)?;
            let mut store = WeightStore::open(dir.join(&e.file))?;
            if e.tensors_blake3.is_empty() {
                e.check_digest(dir, &store)?;
            } else {
                store.expect_tensor_hashes(&e.tensors_blake3)?;
            }
            Ok(store)
        };
        // The checksums dominate loading: the generator is checked on a second thread while
        // this one checks the predictor; the graph cache's content is checked before its first
        // use (a search does it beside its first generation batch).
        let (generator, predictor) = std::thread::scope(|s| -> Result<_> {
            let side = s.spawn(|| Generator::load(&open(&manifest.generator)?));
            let predictor = Predictor::load(&open(&manifest.predictor)?);
            let generator = side
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            Ok((generator, predictor?))
        })?;
        let cache_path = dir.join(graph_cache::FILE_NAME);
        let graph_cache = cache_path
            .is_file()
            .then(|| {
                GraphCache::open_deferred(
                    &cache_path,
                    predictor.dims.nz,
                    &manifest.predictor.sha256,
                )
            })
            .transpose()?;
        let mut e = Self::from_models(generator, predictor, graph_cache)?;
        if e.space != manifest.space {
            return Err(Error::Manifest {
                file: dir
                    .join(crate::weights::manifest::FILE_NAME)
                    .display()
                    .to_string(),
                reason: format!(
                    "says space {}, the weights are {}",
                    manifest.space.name(),
                    e.space.name()
                ),
            });
        }
        e.manifest = Some(manifest);
        e.dir = Some(dir.to_path_buf());
        Ok(e)
    }

    /// An engine from models loaded by the caller (e.g. from memory), with an optional cache.
    pub fn from_models(
        generator: Generator,
        predictor: Predictor,
        graph_cache: Option<GraphCache>,
    ) -> Result<Self> {
        let (g, p) = (&generator.dims, &predictor.dims);
        if g.set.feat_dim != p.set.feat_dim || g.nvt != p.nvt || g.max_n != p.max_n {
            return Err(Error::InconsistentModel {
                file: "generator + predictor".into(),
                reason: format!(
                    "the generator reads {}-d features and makes {}-vertex graphs of {} types, the predictor {}-d, {}, {}",
                    g.set.feat_dim, g.max_n, g.nvt, p.set.feat_dim, p.max_n, p.nvt
                ),
            });
        }
        let space =
            Space::from_graph_sizes(g.nvt, g.max_n).ok_or_else(|| Error::InconsistentModel {
                file: "generator".into(),
                reason: format!(
                    "{} vertex types and {} vertices match no known search space",
                    g.nvt, g.max_n
                ),
            })?;
        if graph_cache.is_some() && space != Space::Nb201 {
            return Err(Error::invalid(format!(
                "a graph-embedding cache exists only for NB201 weights, these are {}",
                space.name()
            )));
        }
        Ok(Engine {
            generator,
            predictor,
            manifest: None,
            space,
            dir: None,
            graph_cache,
            all_heads: OnceLock::new(),
            exhaustive_searches: AtomicUsize::new(0),
            all_priors: OnceLock::new(),
            #[cfg(feature = "cuda")]
            device: None,
            decode_lookahead: 1,
        })
    }

    /// An engine from safetensors images in memory (generator, predictor and optionally the
    /// graph cache), e.g. weights linked into a firmware image. Nothing is copied except the
    /// f16/bf16 tensors that are widened to f32, and f32 tensors that are not 4-byte aligned
    /// in memory (`include_bytes!` alone promises no alignment: wrap it in a
    /// `#[repr(align(64))]` struct, as the `metad2a` program does).
    pub fn from_static(
        generator: &'static [u8],
        predictor: &'static [u8],
        graph_cache: Option<&'static [u8]>,
    ) -> Result<Self> {
        let generator =
            Generator::load(&WeightStore::from_static("generator (memory)", generator)?)?;
        let predictor =
            Predictor::load(&WeightStore::from_static("predictor (memory)", predictor)?)?;
        let cache = match graph_cache {
            Some(b) => Some(GraphCache::from_store(
                &WeightStore::from_static("graph cache (memory)", b)?,
                predictor.dims.nz,
            )?),
            None => None,
        };
        Self::from_models(generator, predictor, cache)
    }

    /// Searches on the first CUDA device from now on: set samples are encoded and graphs
    /// decoded there (a launch decodes several generation batches, the same graphs as the CPU
    /// decoder from the same random streams), and NB201 candidates are ranked there against
    /// the head's graph half of every cell, computed once from the graph cache and kept in
    /// device memory (weights without a graph cache, and MobileNetV3, rank on the CPU).
    /// Returns the device's name, or why it cannot be used; the engine then keeps using the
    /// CPU. Call before sharing the engine between threads. A build without feature `cuda`
    /// has the same method, which always says so.
    #[cfg(feature = "cuda")]
    pub fn use_cuda(&mut self) -> std::result::Result<String, String> {
        let gpu = crate::cuda::Gpu::open_default()?;
        let cache = self
            .graph_cache
            .as_ref()
            .map(|c| c.verified())
            .transpose()
            .map_err(|e| e.to_string())?;
        let cells = cache.map(|cache| (cache.all(), self.all_priors()));
        let model =
            crate::cuda::search::DeviceModel::new(&gpu, &self.generator, &self.predictor, cells)?;
        let name = gpu.name.clone();
        self.device = Some(crate::cuda::Device { gpu, model });
        self.decode_lookahead = GPU_LOOKAHEAD_BATCHES;
        Ok(name)
    }

    /// See the `cuda` build: without feature `cuda` there is no device code, so this says so
    /// and the engine keeps using the CPU.
    #[cfg(not(feature = "cuda"))]
    pub fn use_cuda(&mut self) -> std::result::Result<String, String> {
        Err("this build has no CUDA support (rebuild with --features cuda)".into())
    }

    /// Decodes this many generation batches together (what a GPU engine does); results do not
    /// change, only how work is grouped. For tests of that claim.
    #[doc(hidden)]
    pub fn set_decode_lookahead(&mut self, batches: usize) {
        self.decode_lookahead = batches.max(1);
    }

    /// Whether searches run on a device (feature `cuda`, after [`Engine::use_cuda`]).
    fn on_device(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.device.is_some();
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// The GPU the engine decodes on, if any.
    pub fn device_name(&self) -> Option<&str> {
        #[cfg(feature = "cuda")]
        if let Some(d) = &self.device {
            return Some(&d.gpu.name);
        }
        None
    }

    pub fn feature_dim(&self) -> usize {
        self.generator.dims.set.feat_dim
    }

    pub fn has_graph_cache(&self) -> bool {
        self.graph_cache.is_some()
    }

    /// Computes the graph-embedding cache and writes it into the weights directory.
    pub fn build_graph_cache(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let manifest = Manifest::read(dir)?;
        Self::build_graph_cache_with(dir, &manifest.predictor, progress)
    }

    /// As [`build_graph_cache`](Self::build_graph_cache), for the predictor file an entry names.
    pub fn build_graph_cache_with(
        dir: &Path,
        entry: &crate::weights::manifest::ModelEntry,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let predictor = Predictor::load(&WeightStore::open(dir.join(&entry.file))?)?;
        if Space::from_graph_sizes(predictor.dims.nvt, predictor.dims.max_n) != Some(Space::Nb201) {
            return Err(Error::invalid(
                "the graph-embedding cache holds NB201's 15,625 cells; other spaces embed candidates as they are generated",
            ));
        }
        let emb = GraphCache::compute(&predictor, progress)?;
        GraphCache::write(
            &dir.join(graph_cache::FILE_NAME),
            &emb,
            predictor.dims.nz,
            &entry.sha256,
        )?;
        Ok(())
    }

    /// Graph embeddings of `archs`, from the cache when there is one.
    pub fn graph_embeddings(&self, archs: &[Arch]) -> Result<Vec<f32>> {
        self.check_space(archs)?;
        if let Some(c) = &self.graph_cache {
            let cells: Option<Vec<&Nb201Arch>> = archs.iter().map(Arch::as_nb201).collect();
            if let Some(cells) = cells {
                let c = c.rows_verified(cells.iter().map(|a| a.code()))?;
                return Ok(cells
                    .iter()
                    .flat_map(|a| c.get(a).iter().copied())
                    .collect());
            }
        }
        let graphs: Vec<_> = archs.iter().map(Arch::to_graph).collect();
        self.predictor.graph_embedding(&graphs)
    }

    fn check_space(&self, archs: &[Arch]) -> Result<()> {
        match archs.iter().find(|a| a.space() != self.space) {
            Some(a) => Err(Error::invalid(format!(
                "architecture {a} is from the {} space; these weights are for {}",
                a.space().name(),
                self.space.name()
            ))),
            None => Ok(()),
        }
    }

    fn check_data(&self, data: &Dataset, cfg: &SearchConfig) -> Result<()> {
        if data.dim != self.feature_dim() {
            return Err(Error::invalid(format!(
                "the features are {}-dimensional; these weights read {}-dimensional features ({})",
                data.dim,
                self.feature_dim(),
                self.manifest
                    .as_ref()
                    .map_or("see the weights' manifest", |m| m
                        .feature_extractor
                        .as_str())
            )));
        }
        if cfg.exhaustive && self.space != Space::Nb201 {
            return Err(Error::argument(format!(
                "exhaustive search enumerates NB201's 15,625 cells; the {} space (about 10^19 subnets) can only be searched by generation",
                self.space.name()
            )));
        }
        if cfg.per_class == 0 || cfg.resamples == 0 || (!cfg.exhaustive && cfg.num_archs == 0) {
            return Err(Error::argument(
                "per-class rows, resamples and the number of candidates must be at least 1",
            ));
        }
        if !cfg.with_replacement {
            data.check_per_class(cfg.per_class)?;
        }
        Ok(())
    }

    /// Runs a search (see [`SearchConfig`]).
    pub fn search(&self, data: &Dataset, cfg: &SearchConfig) -> Result<SearchReport> {
        self.search_with_progress(data, cfg, &mut |_| {})
    }

    /// Runs a search, reporting progress after each batch.
    pub fn search_with_progress(
        &self,
        data: &Dataset,
        cfg: &SearchConfig,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<SearchReport> {
        self.search_controlled(data, cfg, &mut |p| {
            progress(p);
            ControlFlow::Continue(())
        })
    }

    /// Runs a search, reporting progress after each generation batch and before ranking;
    /// `control` returning `Break` stops the search with [`Error::Cancelled`].
    pub fn search_controlled(
        &self,
        data: &Dataset,
        cfg: &SearchConfig,
        control: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<SearchReport> {
        self.check_data(data, cfg)?;
        let start = Instant::now();
        let mut t = Timings::default();
        let mut counts = Counts::default();
        let budget = &cfg.budget;
        let within = |a: &Arch| budget.admits(a);

        let mut ranking_sets = None;
        let archs: Vec<Arch> = if cfg.exhaustive {
            let all: Vec<Arch> = Nb201Arch::all()
                .map(Arch::Nb201)
                .filter(|a| within(a))
                .collect();
            counts.over_budget = NUM_ARCHS - all.len();
            all
        } else if !self.on_device() {
            // The predictor's set samples do not depend on the candidates: they are encoded
            // beside the generator's first set samples, where the cores are not both busy.
            let mut sets = None;
            let side: SideWork = Box::new(|| {
                sets = Some(self.ranking_sets(data, cfg.per_class, &ranking_samples(data, cfg)))
            });
            let archs =
                self.generate_inner(data, cfg, &within, &mut counts, &mut t, control, Some(side));
            ranking_sets = sets;
            archs?
        } else {
            self.generate_inner(data, cfg, &within, &mut counts, &mut t, control, None)?
        };
        counts.ranked = archs.len();
        if control(Progress::Ranking {
            candidates: archs.len(),
        })
        .is_break()
        {
            return Err(Error::Cancelled);
        }

        let (scores, data_fit) = self.rank(data, cfg, &archs, ranking_sets, &mut t)?;
        // Best first, ties in candidate order: a total order, so sorting only the kept ones
        // after selecting them gives the same list as sorting all.
        let better = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        let mut order: Vec<usize> = (0..archs.len()).collect();
        let keep = if cfg.top_k == 0 {
            order.len()
        } else {
            cfg.top_k.min(order.len())
        };
        if keep > 0 && keep < order.len() {
            order.select_nth_unstable_by(keep - 1, better);
        }
        order[..keep].sort_unstable_by(better);
        let candidates = order[..keep]
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let cost = budget.cost(&archs[k]);
                Candidate {
                    rank: i + 1,
                    arch: archs[k],
                    arch_json: matches!(archs[k], Arch::Mbv3(_)).then(|| archs[k].to_json()),
                    score: scores[k],
                    flops: cost.flops,
                    params: cost.params,
                    nb201: None,
                }
            })
            .collect();
        t.total_ms = ms(start);
        Ok(SearchReport {
            space: self.space,
            mode: if cfg.exhaustive {
                SearchMode::Exhaustive
            } else {
                SearchMode::Generate
            },
            seed: cfg.seed,
            counts,
            timings: t,
            candidates,
            data_fit,
        })
    }

    /// The generation stage alone: unique valid candidates within budget, in generation order,
    /// with the counts and timings of the stage.
    pub fn generate(
        &self,
        data: &Dataset,
        cfg: &SearchConfig,
    ) -> Result<(Vec<Arch>, Counts, Timings)> {
        self.check_data(data, cfg)?;
        let (mut counts, mut t) = (Counts::default(), Timings::default());
        let budget = &cfg.budget;
        let within = |a: &Arch| budget.admits(a);
        let archs = self.generate_inner(
            data,
            cfg,
            &within,
            &mut counts,
            &mut t,
            &mut |_| ControlFlow::Continue(()),
            None,
        )?;
        Ok((archs, counts, t))
    }

    /// Collects unique valid candidates within budget, in generation order. `side` runs beside
    /// the first batch's set encoding (on the CPU).
    #[allow(clippy::too_many_arguments)]
    fn generate_inner(
        &self,
        data: &Dataset,
        cfg: &SearchConfig,
        within: &dyn Fn(&Arch) -> bool,
        counts: &mut Counts,
        t: &mut Timings,
        control: &mut dyn FnMut(Progress) -> ControlFlow<()>,
        mut side: Option<SideWork>,
    ) -> Result<Vec<Arch>> {
        let mut sets = SetEmbedder::new(&self.generator.set_encoder, data, cfg.per_class);
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(cfg.num_archs);
        let cap = cfg.decode_cap();
        let mut batch_start = 0usize;
        // On a GPU one launch decodes several batches (each graph keeps its own set sample and
        // random stream, so the graphs are the ones sequential batches would give; graphs past
        // the point where enough candidates were found are discarded and not counted).
        let lookahead = self.decode_lookahead.max(1);
        // When every set sample is the whole dataset, every graph has the same latent and the
        // decoder computes what graphs have drawn alike once (see `GraphDecoder::decode`):
        // graphs are then decoded ahead of the batches, up to `DECODE_AHEAD` at a time, so
        // that more of them share their work. The batches, and what is counted, stay as they
        // are; graphs decoded past the end are discarded.
        let ahead =
            lookahead == 1 && every_sample_is_the_data(data, cfg.per_class, cfg.with_replacement);
        let mut pending = std::collections::VecDeque::new();
        // With one latent for every graph, what the search's graphs drew so far: later graphs
        // that draw the same are replayed, not decoded (see `decode_parallel`).
        let mut tree = ahead.then(DrawTree::new);
        'batches: while out.len() < cfg.num_archs {
            if counts.decoded >= cap {
                counts.capped = true;
                break;
            }
            let mut sizes = Vec::with_capacity(lookahead);
            let mut planned = counts.decoded;
            // On the CPU a batch decodes about what is still needed at the yield so far; a GPU
            // launch decodes whole batches.
            let size = if lookahead == 1 {
                batch_size(
                    cfg.num_archs - out.len(),
                    counts.decoded,
                    out.len(),
                    GENERATION_BATCH,
                )
            } else {
                GENERATION_BATCH
            };
            while sizes.len() < lookahead && planned < cap {
                let n = size.min(cap - planned);
                sizes.push(n);
                planned += n;
            }
            let total: usize = sizes.iter().sum();
            if pending.len() < total {
                // Decode from the first graph not decoded yet: this batch's graphs, or more
                // when the latents repeat (see `ahead`).
                let from = batch_start + pending.len();
                let upto = if ahead {
                    let chunk = batch_size(
                        cfg.num_archs - out.len(),
                        counts.decoded,
                        out.len(),
                        DECODE_AHEAD,
                    );
                    (batch_start + chunk.max(total)).min(cap)
                } else {
                    batch_start + total
                };
                pending.extend(self.decode_range(
                    &mut sets,
                    data,
                    cfg,
                    from..upto,
                    t,
                    side.take(),
                    tree.as_mut(),
                )?);
            }
            let dags: Vec<_> = pending.drain(..total).collect();
            let mut at = 0;
            for n in sizes {
                counts.set_samples += n;
                batch_start += n;
                for dag in &dags[at..at + n] {
                    counts.decoded += 1;
                    let Some(a) = Arch::from_graph(self.space, dag) else {
                        continue;
                    };
                    counts.valid += 1;
                    if !seen.insert(a) {
                        continue;
                    }
                    counts.unique += 1;
                    if !within(&a) {
                        counts.over_budget += 1;
                        continue;
                    }
                    out.push(a);
                    if out.len() == cfg.num_archs {
                        break;
                    }
                }
                at += n;
                if control(Progress::Generating {
                    unique: out.len(),
                    target: cfg.num_archs,
                    decoded: counts.decoded,
                })
                .is_break()
                {
                    return Err(Error::Cancelled);
                }
                if out.len() == cfg.num_archs {
                    break 'batches;
                }
            }
        }
        Ok(out)
    }

    /// Graphs `range` of a search: their set samples and random streams (indexed by graph),
    /// then [`latents_and_decode`](Self::latents_and_decode).
    #[allow(clippy::too_many_arguments)]
    fn decode_range(
        &self,
        sets: &mut SetEmbedder,
        data: &Dataset,
        cfg: &SearchConfig,
        range: std::ops::Range<usize>,
        t: &mut Timings,
        side: Option<SideWork>,
        tree: Option<&mut DrawTree>,
    ) -> Result<Vec<crate::model::Dag>> {
        let t0 = Instant::now();
        let sample = |i: usize| {
            let mut rng = Rng::new(cfg.seed, STREAM_GENERATION_SET + i as u64);
            draw(data, cfg.per_class, cfg.with_replacement, &mut rng)
        };
        // When every sample is the whole dataset, `draw` takes no randomness and returns the
        // same rows for every graph: drawn once, not once per graph.
        let (samples, of): (Vec<SetSample>, Vec<usize>) =
            if every_sample_is_the_data(data, cfg.per_class, cfg.with_replacement) {
                (vec![sample(range.start)], vec![0; range.len()])
            } else {
                (
                    range.clone().map(sample).collect(),
                    (0..range.len()).collect(),
                )
            };
        t.sets_ms += ms(t0);
        let mut rngs: Vec<Rng> = range
            .map(|i| Rng::new(cfg.seed, STREAM_DECODE + i as u64))
            .collect();
        self.latents_and_decode(
            sets,
            data,
            cfg.per_class,
            &samples,
            &of,
            &mut rngs,
            t,
            side,
            tree,
        )
    }

    /// The graphs of a generation batch: the generator's latents of the set samples (graph
    /// `i`'s sample is `samples[of[i]]`), then one graph decoded from each with its random
    /// stream (on the GPU after [`Engine::use_cuda`], where the latents stay in device
    /// memory). On the CPU each distinct sample is encoded once.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    #[allow(clippy::too_many_arguments)]
    fn latents_and_decode(
        &self,
        sets: &mut SetEmbedder,
        data: &Dataset,
        per_class: usize,
        samples: &[SetSample],
        of: &[usize],
        rngs: &mut [Rng],
        t: &mut Timings,
        side: Option<SideWork>,
        tree: Option<&mut DrawTree>,
    ) -> Result<Vec<crate::model::Dag>> {
        let t0 = Instant::now();
        #[cfg(feature = "cuda")]
        if let Some(d) = self
            .device
            .as_ref()
            .filter(|d| d.model.encodes_sets(data.num_classes(), per_class))
        {
            let on = |what: &'static str| {
                let name = &d.gpu.name;
                move |e: String| Error::Device(format!("{what} on {name}: {e}"))
            };
            let refs: Vec<&[u32]> = of.iter().map(|&s| samples[s].as_slice()).collect();
            let mu = d
                .model
                .latents(&d.gpu, data, &refs, per_class)
                .map_err(on("encoding set samples"))?;
            t.sets_ms += ms(t0);
            let t0 = Instant::now();
            let dags = d
                .model
                .decoder
                .decode_device(&d.gpu, &mu, DecodeMode::Sample, rngs)
                .map_err(on("decoding"))?;
            t.decode_ms += ms(t0);
            return Ok(dags);
        }
        let (v, ids) = match side {
            Some(side) => rayon::join(|| sets.embed_distinct(samples), side).0,
            None => sets.embed_distinct(samples),
        };
        // The heads of each distinct embedding, then a row per graph (rows of a product are
        // computed independently: the bits are those of the heads of every graph's row).
        let (mu, _) = self
            .generator
            .heads(&v, v.len() / self.generator.dims.set.out_dim);
        let nz = self.generator.dims.nz;
        let mu: Vec<f32> = of
            .iter()
            .flat_map(|&s| &mu[ids[s] * nz..(ids[s] + 1) * nz])
            .copied()
            .collect();
        t.sets_ms += ms(t0);
        let t0 = Instant::now();
        let dags = self.decode_parallel(&mu, rngs, tree)?;
        t.decode_ms += ms(t0);
        Ok(dags)
    }

    /// Decodes a batch in two halves on two threads, or in one launch on the GPU. Results do
    /// not depend on the split: each graph has its own random stream and its own rows.
    ///
    /// With `tree` (a search whose graphs all have one latent), graphs whose draws stay on
    /// what earlier graphs of the search drew are replayed from the tree instead of decoded,
    /// and the decoded ones are added to it: the same graphs and random streams.
    fn decode_parallel(
        &self,
        z: &[f32],
        rngs: &mut [Rng],
        tree: Option<&mut DrawTree>,
    ) -> Result<Vec<crate::model::Dag>> {
        #[cfg(feature = "cuda")]
        if let Some(d) = &self.device {
            return d
                .model
                .decoder
                .decode(&d.gpu, z, DecodeMode::Sample, rngs)
                .map_err(|e| Error::Device(format!("decoding on {}: {e}", d.gpu.name)));
        }
        let nz = self.generator.dims.nz;
        let dec = &self.generator.decoder;
        let one_latent = !rngs.is_empty()
            && z.len() == rngs.len() * nz
            && z.chunks_exact(nz).all(|row| {
                row.iter()
                    .zip(&z[..nz])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            });
        let Some(tree) = tree.filter(|_| one_latent) else {
            return Ok(self.decode_split(z, rngs, false)?.0);
        };
        tree.bind(&z[..nz]);
        let known: &DrawTree = tree;
        let replay = |rs: &mut [Rng]| -> Vec<Option<crate::model::Dag>> {
            rs.iter_mut().map(|r| known.replay(dec, r)).collect()
        };
        let mut out = if known.is_empty() {
            vec![None; rngs.len()]
        } else if rngs.len() >= REPLAY_SPLIT {
            let (a, b) = rngs.split_at_mut(rngs.len() / 2);
            let (mut out, rest) = rayon::join(|| replay(a), || replay(b));
            out.extend(rest);
            out
        } else {
            replay(rngs)
        };
        let novel: Vec<usize> = (0..out.len()).filter(|&g| out[g].is_none()).collect();
        if !novel.is_empty() {
            let mut streams: Vec<Rng> = novel.iter().map(|&g| rngs[g].clone()).collect();
            let (dags, traces) = self.decode_split(&z[..novel.len() * nz], &mut streams, true)?;
            for (((&g, dag), trace), rng) in novel.iter().zip(dags).zip(&traces).zip(streams) {
                tree.insert(dec, &dag, trace);
                out[g] = Some(dag);
                rngs[g] = rng;
            }
        }
        Ok(out
            .into_iter()
            .map(|d| d.expect("every graph replayed or decoded"))
            .collect())
    }

    /// [`decode_parallel`](Self::decode_parallel) on the CPU, with the graphs' traces when
    /// `traced` (see [`GraphDecoder::decode_traced`]). Graphs with equal latents share their
    /// work while they draw alike, so such a batch is split by what its graphs draw first
    /// (graphs in order of their first vertex type, then index, cut in the middle): the halves
    /// then share little; otherwise by index.
    fn decode_split(
        &self,
        z: &[f32],
        rngs: &mut [Rng],
        traced: bool,
    ) -> Result<(Vec<crate::model::Dag>, Vec<Vec<f32>>)> {
        let nz = self.generator.dims.nz;
        let dec = &self.generator.decoder;
        let decode = |z: &[f32], rngs: &mut [Rng]| {
            if traced {
                dec.decode_traced(z, rngs)
            } else {
                Ok((dec.decode(z, DecodeMode::Sample, rngs)?, Vec::new()))
            }
        };
        let n = rngs.len();
        if n < 16 {
            return decode(z, rngs);
        }
        let Some(first) = dec.first_types(z, rngs) else {
            let half = n / 2;
            let (ra, rb) = rngs.split_at_mut(half);
            let (za, zb) = z.split_at(half * nz);
            let (a, b) = rayon::join(|| decode(za, ra), || decode(zb, rb));
            let ((mut dags, mut traces), (dags_b, traces_b)) = (a?, b?);
            dags.extend(dags_b);
            traces.extend(traces_b);
            return Ok((dags, traces));
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&g| first[g]);
        let (oa, ob) = order.split_at(n / 2);
        let gather = |part: &[usize]| -> (Vec<f32>, Vec<Rng>) {
            let z = part
                .iter()
                .flat_map(|&g| &z[g * nz..(g + 1) * nz])
                .copied()
                .collect();
            (z, part.iter().map(|&g| rngs[g].clone()).collect())
        };
        let ((za, mut ra), (zb, mut rb)) = (gather(oa), gather(ob));
        let (a, b) = rayon::join(|| decode(&za, &mut ra), || decode(&zb, &mut rb));
        // Back in graph order, the random streams as decoding in place would leave them.
        let mut out: Vec<Option<crate::model::Dag>> = vec![None; n];
        let mut traces = vec![Vec::new(); if traced { n } else { 0 }];
        for (part, (dags, part_traces), used) in [(oa, a?, ra), (ob, b?, rb)] {
            for ((&g, dag), rng) in part.iter().zip(dags).zip(used) {
                out[g] = Some(dag);
                rngs[g] = rng;
            }
            for (&g, trace) in part.iter().zip(part_traces) {
                traces[g] = trace;
            }
        }
        let dags = out
            .into_iter()
            .map(|d| d.expect("every graph decoded"))
            .collect();
        Ok((dags, traces))
    }

    /// Mean predictor score of each architecture over `cfg.resamples` shared set samples, and
    /// the data's fit to a gated cell mix's training tasks.
    /// `sets`, when given, are [`Engine::ranking_sets`] computed before.
    fn rank(
        &self,
        data: &Dataset,
        cfg: &SearchConfig,
        archs: &[Arch],
        sets: Option<(Vec<f32>, Vec<usize>)>,
        t: &mut Timings,
    ) -> Result<(Vec<f32>, Option<DataFit>)> {
        let t0 = Instant::now();
        if let Some((d, ids)) = sets {
            return self.rank_with(cfg, archs, &d, &ids, t);
        }
        let samples = ranking_samples(data, cfg);
        #[cfg(feature = "cuda")]
        if let Some(d) = self.device.as_ref().filter(|d| {
            d.model.ranks_cells() && d.model.encodes_sets(data.num_classes(), cfg.per_class)
        }) {
            let codes: Option<Vec<i32>> = archs
                .iter()
                .map(|a| a.as_nb201().map(|a| a.code() as i32))
                .collect();
            if let Some(codes) = codes {
                return self.rank_on_device(d, data, cfg.per_class, &samples, &codes, t0, t);
            }
        }
        let (d, ids) = self.ranking_sets(data, cfg.per_class, &samples);
        t.sets_ms += ms(t0);
        self.rank_with(cfg, archs, &d, &ids, t)
    }

    /// The predictor's embeddings of the ranking's set samples: the distinct ones (`[K,
    /// out_dim]`) and each sample's index among them. Equal samples (e.g. every sample, when
    /// classes have exactly `per_class` rows) give equal dataset terms: each distinct one is
    /// evaluated once, weighted by its count. Also checks the whole content of a graph cache
    /// that has no block checksums, if that is still to be done (the ranking reports the
    /// outcome); one with them has the blocks it reads checked when it reads them.
    fn ranking_sets(
        &self,
        data: &Dataset,
        per_class: usize,
        samples: &[SetSample],
    ) -> (Vec<f32>, Vec<usize>) {
        if let Some(c) = self.graph_cache.as_ref().filter(|c| !c.checks_blocks()) {
            let _ = c.verified();
        }
        SetEmbedder::new(&self.predictor.set_encoder, data, per_class).embed_distinct(samples)
    }

    /// Scores of `archs` against the distinct ranking embeddings `d` (sample `i` is `d[ids[i]]`)
    /// and the data fit.
    fn rank_with(
        &self,
        cfg: &SearchConfig,
        archs: &[Arch],
        d: &[f32],
        ids: &[usize],
        t: &mut Timings,
    ) -> Result<(Vec<f32>, Option<DataFit>)> {
        let t0 = Instant::now();
        let weights = sample_weights(ids, d.len() / self.predictor.dims.set.out_dim);
        let c = self.predictor.head_dataset_part(d);
        let mix = self.predictor.mix_values(d, &weights);
        let fit = self.data_fit(mix.as_ref());
        let scores = if let (true, Some(graph_cache)) = (cfg.exhaustive, &self.graph_cache) {
            let graph_cache = graph_cache.rows_verified(0..NUM_ARCHS)?;
            // The first exhaustive search of an engine computes the graph half of the head
            // chunk by chunk (no 32 MB table to allocate and fill for a one-off search); later
            // ones keep and reuse the table. Each element is the same product either way.
            let reuse = self.all_heads.get().is_some()
                || self.exhaustive_searches.fetch_add(1, Ordering::Relaxed) > 0;
            let p = self.predictor.dims.head_hidden;
            let codes: Vec<usize> = archs
                .iter()
                .filter_map(Arch::as_nb201)
                .map(|a| a.code())
                .collect();
            let mut scores = if !reuse {
                let cache = graph_cache.all();
                let nz = self.predictor.dims.nz;
                codes
                    .par_chunks(HEAD_CHUNK)
                    .flat_map_iter(|chunk| {
                        let g: Vec<f32> = chunk
                            .iter()
                            .flat_map(|&k| cache[k * nz..(k + 1) * nz].iter().copied())
                            .collect();
                        let a = self.predictor.head_graph_part(&g);
                        self.predictor.mean_scores(&a, &c, &weights)
                    })
                    .collect()
            } else if codes.len() == NUM_ARCHS {
                self.predictor.mean_scores(self.all_heads(), &c, &weights)
            } else {
                let heads = self.all_heads();
                let rows: Vec<f32> = codes
                    .iter()
                    .flat_map(|&k| heads[k * p..(k + 1) * p].iter().copied())
                    .collect();
                self.predictor.mean_scores(&rows, &c, &weights)
            };
            if let Some(priors) = self.all_priors() {
                for (s, &code) in scores.iter_mut().zip(&codes) {
                    *s += priors[code];
                }
            }
            if let (Some(cell_mix), Some(m)) = (&self.predictor.cell_mix, &mix) {
                for (s, &code) in scores.iter_mut().zip(&codes) {
                    let a = crate::space::Nb201Arch::from_code(code).expect("a cell code");
                    *s += cell_mix.score_nb201(&m.values, &a);
                }
            }
            scores
        } else {
            let g = self.graph_embeddings(archs)?;
            let mut scores =
                self.predictor
                    .mean_scores(&self.predictor.head_graph_part(&g), &c, &weights);
            if self.predictor.cell_prior.is_some() || mix.is_some() {
                let graphs: Vec<_> = archs.iter().map(Arch::to_graph).collect();
                self.predictor.add_prior(&graphs, &mut scores);
                if let Some(m) = &mix {
                    self.predictor.add_mix(&m.values, &graphs, &mut scores);
                }
            }
            scores
        };
        t.rank_ms += ms(t0);
        Ok((scores, fit))
    }

    /// [`Engine::rank`] on the GPU for NB201 cells `codes`: the distinct set samples encoded
    /// there, the head, prior and cell mix evaluated against the resident cell table in one
    /// launch. The mix's values come from the few dataset embeddings, copied back.
    #[cfg(feature = "cuda")]
    #[allow(clippy::too_many_arguments)]
    fn rank_on_device(
        &self,
        d: &crate::cuda::Device,
        data: &Dataset,
        per_class: usize,
        samples: &[SetSample],
        codes: &[i32],
        t0: Instant,
        t: &mut Timings,
    ) -> Result<(Vec<f32>, Option<DataFit>)> {
        let on = |e: String| Error::Device(format!("ranking on {}: {e}", d.gpu.name));
        let (distinct, ids) = crate::search::sets::distinct(samples);
        let emb = d
            .model
            .dataset_embeddings(&d.gpu, data, &distinct, per_class)
            .map_err(on)?;
        t.sets_ms += ms(t0);
        let t0 = Instant::now();
        let weights = sample_weights(&ids, distinct.len());
        let mix = match &self.predictor.cell_mix {
            Some(_) => {
                let host = d.gpu.download(&emb).map_err(on)?;
                self.predictor.mix_values(&host, &weights)
            }
            None => None,
        };
        let values = mix.as_ref().map(|m| m.values.as_slice());
        let scores = d
            .model
            .rank_cells(&d.gpu, &emb, &weights, values, codes)
            .map_err(on)?;
        t.rank_ms += ms(t0);
        Ok((scores, self.data_fit(mix.as_ref())))
    }

    /// The data fit a gated cell mix reports.
    fn data_fit(&self, mix: Option<&crate::model::predictor::MixValues>) -> Option<DataFit> {
        let radius = self.predictor.cell_mix.as_ref()?.radius()?;
        let (novelty, gate) = mix?.fit?;
        Some(DataFit {
            novelty,
            radius,
            gate,
        })
    }

    /// The graph half of the predictor head for every cell (needs the graph cache).
    fn all_heads(&self) -> &[f32] {
        self.all_heads.get_or_init(|| {
            let cache = self.graph_cache.as_ref().expect("checked by the caller");
            debug_assert!(cache.verified().is_ok());
            self.predictor.head_graph_part(cache.all())
        })
    }

    /// The cell prior of every NB201 cell (weights with a prior and a graph cache only).
    fn all_priors(&self) -> Option<&[f32]> {
        let prior = self.predictor.cell_prior.as_ref()?;
        Some(self.all_priors.get_or_init(|| {
            crate::space::Nb201Arch::all()
                .map(|a| prior.score(&a.to_graph()))
                .collect()
        }))
    }

    /// Predicted scores of given architectures, averaged over `resamples` set samples drawn
    /// with `seed` (the same samples a search with that seed ranks with).
    pub fn score(&self, data: &Dataset, archs: &[Arch], cfg: &SearchConfig) -> Result<Vec<f32>> {
        self.check_data(data, cfg)?;
        self.check_space(archs)?;
        if archs.is_empty() {
            return Ok(Vec::new());
        }
        let mut t = Timings::default();
        Ok(self.rank(data, cfg, archs, None, &mut t)?.0)
    }
}

/// Work run beside the first generation batch's set encoding.
type SideWork<'a> = Box<dyn FnOnce() + Send + 'a>;

/// The ranking's `cfg.resamples` set samples, each from its own random stream.
fn ranking_samples(data: &Dataset, cfg: &SearchConfig) -> Vec<SetSample> {
    (0..cfg.resamples)
        .map(|r| {
            let mut rng = Rng::new(cfg.seed, STREAM_RANKING_SET + r as u64);
            draw(data, cfg.per_class, cfg.with_replacement, &mut rng)
        })
        .collect()
}

/// The weight of each of `distinct` dataset embeddings when sample `i` of a ranking has
/// embedding `ids[i]`: its share of the samples.
fn sample_weights(ids: &[usize], distinct: usize) -> Vec<f32> {
    let mut weights = vec![0.0f32; distinct];
    for &i in ids {
        weights[i] += 1.0 / ids.len() as f32;
    }
    weights
}

/// The fewest graphs a CPU generation batch decodes (two halves of at least 16 rows).
const MIN_GENERATION_BATCH: usize = 32;

/// Graphs replayed from a draw tree on both threads when at least this many (about a
/// microsecond each).
const REPLAY_SPLIT: usize = 128;

/// The most graphs decoded at a time when every graph has the same latent (the more at a
/// time, the more share their work; about 11 kB of per-vertex caches per group of graphs that
/// drew alike).
const DECODE_AHEAD: usize = 800;

/// Graphs to decode for `need` more candidates after `decoded` graphs gave `accepted`: the
/// need at the yield so far with a quarter more and 8 to spare, between
/// [`MIN_GENERATION_BATCH`] and `most` ([`GENERATION_BATCH`] for a batch, [`DECODE_AHEAD`] for
/// graphs decoded ahead; `most` while nothing was accepted from decoded graphs). Graph `i` of
/// a search is the same whatever the batches: its set sample and random stream are indexed by
/// `i`.
fn batch_size(need: usize, decoded: usize, accepted: usize, most: usize) -> usize {
    let per = match (decoded, accepted) {
        (0, _) => 1.0,
        (_, 0) => return most,
        (d, a) => d as f64 / a as f64,
    };
    let want = (need as f64 * per * 1.25).ceil() as usize + 8;
    want.clamp(MIN_GENERATION_BATCH, most)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl SearchReport {
    /// Adds NAS-Bench-201 benchmark facts to each candidate.
    pub fn annotate(&mut self, table: &Nb201Table) {
        for c in &mut self.candidates {
            if let Some(a) = c.arch.as_nb201() {
                c.nb201 = table.get(a).copied();
            }
        }
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_follow_the_need_at_the_yield_so_far() {
        // nothing decoded yet: the need and a quarter more and 8, at least 32, at most 100
        assert_eq!(batch_size(7, 0, 0, GENERATION_BATCH), 32);
        assert_eq!(batch_size(40, 0, 0, GENERATION_BATCH), 58);
        assert_eq!(batch_size(500, 0, 0, GENERATION_BATCH), 100);
        // 144 graphs gave 100 candidates: 1.44 graphs each
        assert_eq!(batch_size(20, 144, 100, GENERATION_BATCH), 44);
        assert_eq!(batch_size(1, 144, 100, GENERATION_BATCH), 32);
        // decoded graphs and nothing accepted (all over budget so far): a full batch
        assert_eq!(batch_size(5, 100, 0, GENERATION_BATCH), 100);
        // decoding ahead: the same rule, up to the larger bound
        assert_eq!(batch_size(500, 0, 0, DECODE_AHEAD), 633);
        assert_eq!(batch_size(100, 0, 0, DECODE_AHEAD), 133);
        assert_eq!(batch_size(2000, 0, 0, DECODE_AHEAD), 800);
        assert_eq!(batch_size(5, 100, 0, DECODE_AHEAD), 800);
    }
}
