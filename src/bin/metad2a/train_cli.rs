//! Commands of the `train` feature: calibrate, naswot, build-db, train, meta-test.

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
    #[command(flatten)]
    protocol: ProtocolArgs,
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
    let p = &a.protocol;
    let train = load_cifar(&a.cifar, "train", a.per_class, p.resolution)?;
    let valid = load_cifar(&a.cifar, "test", a.valid_per_class, p.resolution)?;
    let cfg = TrainConfig {
        net: p.net(train.classes),
        epochs: p.epochs,
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
        p.resolution,
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
            s.cells,
            p.resolution,
            p.channels,
            p.cells_per_stage,
            a.per_class,
            p.epochs,
            s.spearman,
            s.kendall
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
    /// Write manifest.json: sources and licences, protocol, progress, CPU spent, sha256 of the
    /// committed files, and the commands that build the database.
    Manifest(BuildManifestArgs),
}

#[derive(Args)]
pub struct BuildManifestArgs {
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// A command that builds the database (repeat for several), recorded in the manifest.
    #[arg(long, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct BuildInitArgs {
    /// SOURCES/<dataset>/<class>/*.png|jpg (scripts/fetch-meta-sources.sh prepares one).
    #[arg(long, value_name = "DIR")]
    sources: PathBuf,
    /// The database directory to create.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, default_value_t = 110)]
    tasks: usize,
    #[arg(long, default_value_t = 10)]
    archs_per_task: usize,
    #[arg(long, default_value_t = 5)]
    min_classes: usize,
    #[arg(long, default_value_t = 10)]
    max_classes: usize,
    /// Feature rows kept per class (the set encoder samples from these).
    #[arg(long, default_value_t = 40)]
    feature_rows: usize,
    #[arg(long, default_value_t = 500)]
    train_per_class: usize,
    #[arg(long, default_value_t = 100)]
    valid_per_class: usize,
    #[arg(long, default_value_t = 10)]
    valid_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Cells per task spread evenly over the number of 3x3 convolutions (0 to 6).
    #[arg(long, default_value_t = 0)]
    stratified: usize,
    /// Cells per task drawn from the top --proposal-pool cells the ranker (--weights) scores
    /// highest on the task's own feature rows.
    #[arg(long, default_value_t = 0)]
    proposed: usize,
    #[arg(long, default_value_t = 200)]
    proposal_pool: usize,
    /// The labelling protocol's name, written into every record (e.g. p1000-e10-r16-c8-n1).
    #[arg(long, default_value = "")]
    protocol_name: String,
    /// Images each cell's NASWOT score is computed on (0: none).
    #[arg(long, default_value_t = 0)]
    naswot_batch: usize,
    /// The ranker that proposes cells.
    #[command(flatten)]
    ranker: super::WeightsArg,
}

/// The proxy-training protocol shared by `calibrate` and `build-db init`.
#[derive(Args)]
pub struct ProtocolArgs {
    /// Training epochs of each cell.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Input resolution (images are resized to R x R).
    #[arg(long, default_value_t = 16)]
    resolution: usize,
    /// Channels of the first stage (C).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Cells per stage (N).
    #[arg(long, default_value_t = 1)]
    cells_per_stage: usize,
}

impl ProtocolArgs {
    fn net(&self, classes: usize) -> NetConfig {
        NetConfig {
            channels: self.channels,
            cells: self.cells_per_stage,
            classes,
        }
    }
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
                    net: a.protocol.net(0),
                    epochs: a.protocol.epochs,
                    ..TrainConfig::default()
                },
                resolution: a.protocol.resolution,
                cell_mix: build_db::CellMix {
                    stratified: a.stratified,
                    proposed: a.proposed,
                    // no pool without proposals (plans compare equal to older ones)
                    proposal_pool: if a.proposed > 0 { a.proposal_pool } else { 0 },
                },
                protocol_name: a.protocol_name.clone(),
                naswot_batch: a.naswot_batch,
            };
            // proposals: the exhaustive ranking of the ranker (--weights) on a task's rows
            let pool = a.proposal_pool;
            let ranker = (a.proposed > 0).then(|| a.ranker.engine()).transpose()?;
            let mut propose = ranker.map(|(engine, name)| {
                eprintln!("proposals: {name}, exhaustive, top {pool}");
                move |d: &metad2a::Dataset| -> metad2a::Result<Vec<String>> {
                    let cfg = metad2a::SearchConfig {
                        exhaustive: true,
                        top_k: pool,
                        ..Default::default()
                    };
                    Ok(engine
                        .search(d, &cfg)?
                        .candidates
                        .into_iter()
                        .map(|c| c.arch.to_string())
                        .collect())
                }
            });
            let propose = propose.as_mut().map(|p| p as &mut build_db::Proposer<'_>);
            let plan =
                build_db::init(&a.sources, &a.out, &cfg, propose, &mut |l| eprintln!("{l}"))?;
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
                        r.record.task,
                        r.record.acc,
                        r.seconds,
                        r.record.arch,
                        p.eta_seconds / 60.0
                    );
                }
            })?;
            println!("shard {i}/{n}: {} records", done.len());
        }
        BuildDbCommand::Manifest(a) => {
            let m = build_db::manifest(&a.db, &a.command)?;
            println!(
                "wrote {}: {}/{} records, {}/{} tasks complete, {:.2} hours of cell training",
                a.db.join("manifest.json").display(),
                m.records,
                m.planned_records,
                m.complete_tasks,
                m.tasks,
                m.cell_seconds / 3600.0
            );
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

/// Meta-test a weights directory on a held-out image set with NAS-Bench-201 ground truth.
///
/// For each seed: draws --per-class test images of each class, computes their features,
/// searches, and reports the NAS-Bench-201 CIFAR-10 test accuracy of our top-1 and of the
/// best of our top-30 (the official protocol), of the best of 30 random cells, and of the
/// NASWOT pick among 10 and 100 random cells scored on the same images; plus the
/// predictor's Spearman correlation over all 15,625 cells and the search time. Writes
/// OUT.jsonl (per seed), OUT.summary.json and OUT.svg (plot).
///
/// Example: metad2a meta-test --images cifar10/test --nb201 nats_bench.csv --out docs/meta-test/cifar10
#[derive(Args)]
pub struct MetaTestArgs {
    /// Weights directory to test.
    #[arg(long, value_name = "DIR", default_value = "weights/nb201-lite0-ranker")]
    weights: PathBuf,
    /// Held-out images, DIR/<class>/*.png|jpg (e.g. the CIFAR-10 test split).
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// NAS-Bench-201 table (NATS-Bench CSV export) with the ground truth.
    #[arg(long, value_name = "CSV")]
    nb201: PathBuf,
    /// Seeds: N for 0..N, or A..B (e.g. to spread the seeds over processes that share the
    /// NASWOT cache).
    #[arg(long, default_value = "10", value_name = "N|A..B")]
    seeds: String,
    #[arg(long, default_value_t = 20)]
    per_class: usize,
    /// Candidates each search generates and ranks.
    #[arg(long, default_value_t = metad2a::search::DEFAULT_NUM_ARCHS)]
    num_archs: usize,
    /// Backbone input resolution.
    #[arg(long, default_value_t = metad2a::features::DEFAULT_RESOLUTION)]
    resolution: usize,
    /// Output path prefix.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// NASWOT sample sizes (each a prefix of one random draw of the largest); "" skips NASWOT.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    naswot: Vec<String>,
    /// Cache of NASWOT scores (they do not depend on the weights, so a rerun with new weights
    /// reuses them) [default: PREFIX.naswot.jsonl].
    #[arg(long, value_name = "FILE")]
    naswot_cache: Option<PathBuf>,
}

pub fn meta_test(a: MetaTestArgs) -> metad2a::Result<()> {
    const NUM_NB201: usize = metad2a::space::nb201::NUM_ARCHS;
    use metad2a::train::meta_test::{self, MetaTestConfig};
    let engine = metad2a::Engine::load(&a.weights)?;
    let fx = metad2a::features::FeatureExtractor::builtin(a.resolution)?;
    let table = Nb201Table::load(&a.nb201)?;
    eprintln!("reading {}", a.images.display());
    let test = read_folder(&a.images, None, &mut |_, _| {})?;
    let cfg = MetaTestConfig {
        seeds: {
            let bad = || {
                metad2a::Error::invalid(format!(
                    "--seeds {:?}: expected N or A..B with A < B",
                    a.seeds
                ))
            };
            let (lo, hi) = match a.seeds.split_once("..") {
                Some((x, y)) => (
                    x.trim().parse::<u64>().map_err(|_| bad())?,
                    y.trim().parse::<u64>().map_err(|_| bad())?,
                ),
                None => (0, a.seeds.trim().parse::<u64>().map_err(|_| bad())?),
            };
            if lo >= hi {
                return Err(bad());
            }
            (lo..hi).collect()
        },
        per_class: a.per_class,
        num_archs: a.num_archs,
        naswot: a
            .naswot
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&k| (1..=NUM_NB201).contains(&k))
                    .ok_or_else(|| {
                        metad2a::Error::invalid(format!(
                            "--naswot: {s:?} is not a sample size in 1..={NUM_NB201}"
                        ))
                    })
            })
            .collect::<metad2a::Result<_>>()?,
        naswot_cache: Some(
            a.naswot_cache
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.naswot.jsonl", a.out.display()))),
        ),
        ..MetaTestConfig::default()
    };
    let results = meta_test::run(&engine, &fx, &test, &table, &cfg, &mut |l| eprintln!("{l}"))?;
    let summary = meta_test::summarize(&results, &table)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| metad2a::Error::io(dir, e))?;
    }
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", a.out.display()));
    let lines: String = results
        .iter()
        .map(|r| serde_json::to_string(r).expect("result serialises") + "\n")
        .collect();
    metad2a::util::write_atomic(&with("jsonl"), lines.as_bytes())?;
    let text = serde_json::to_string_pretty(
        &serde_json::json!({"config": cfg, "weights": a.weights, "summary": summary}),
    )
    .expect("summary serialises");
    metad2a::util::write_atomic(&with("summary.json"), format!("{text}\n").as_bytes())?;
    let table = meta_test::markdown(&summary);
    metad2a::util::write_atomic(&with("md"), table.as_bytes())?;
    // the last two parts of the image path (e.g. cifar10/test), not where it happens to live
    let parts: Vec<String> = a
        .images
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let title = format!(
        "{}: {} seeds, {} images/class; predictor Spearman {:.3}",
        parts.into_iter().rev().collect::<Vec<_>>().join("/"),
        summary.seeds,
        a.per_class,
        summary.predictor_spearman_mean
    );
    metad2a::util::write_atomic(
        &with("svg"),
        meta_test::strip_svg(&results, &summary, &title).as_bytes(),
    )?;
    println!("{table}");
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
    /// Train the dataset-aware ranker over a trained weights directory: a cell prior fitted to
    /// the NAS-Bench-201 ImageNet16-120 column, and the predictor head retrained with a pairwise
    /// loss within each task (src/train/ranker.rs). Keeps the epoch with the best within-task
    /// Spearman on the validation tasks; `--holdout-source` validates leave-one-source-out.
    /// The CIFAR-10 and CIFAR-100 columns of the table are never read.
    ///
    /// Example: metad2a train ranker --base weights/nb201-lite0 --db data/metadb-nb201 --nb201 nats_bench.csv --out weights/mine
    Ranker(RankerArgs),
    /// Leave-one-source-out validation of the ranker: for each image source of the database,
    /// train the head on the other sources' tasks and measure the within-task Spearman on this
    /// source's tasks at the last epoch (the held-out source chooses nothing), beside the
    /// ImageNet16-120 accuracy and the parameter count as rankers. The yardstick for choosing
    /// ranker variants without CIFAR.
    ///
    /// Example: metad2a train loso --base weights/nb201-lite0 --db data/metadb-nb201 --nb201 nats_bench.csv --epochs 100 --lr 1e-3 --out docs/ranker/loso
    Loso(LosoArgs),
    /// Write a copy of a meta-database whose records are, for every task, the cells a trained
    /// predictor scores highest (best first): the targets of a generator that matches that
    /// predictor (`train generator --db OUT`).
    ///
    /// Example: metad2a train relabel --weights weights/mine --db data/metadb-nb201 --out target/db-top
    Relabel(RelabelArgs),
}

/// Options of `metad2a train relabel`.
#[derive(Args)]
pub struct RelabelArgs {
    /// Weights whose predictor ranks the cells.
    #[arg(long, value_name = "DIR")]
    weights: PathBuf,
    /// Meta-database directory.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// Output meta-database directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Cells kept per task.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn relabel(a: RelabelArgs) -> metad2a::Result<()> {
    let mut db = metad2a::train::metadb::MetaDb::load(&a.db)?;
    let engine = metad2a::Engine::load(&a.weights)?;
    if a.top == 0 {
        return Err(metad2a::Error::invalid("--top must be at least 1"));
    }
    let mut line = super::ProgressLine::new();
    db.records = metad2a::train::ranker::relabel(&engine, &db, a.top, a.seed, &mut |d, n| {
        line.update(&format!("task {d}/{n}"))
    })?;
    line.finish();
    db.save(&a.out)?;
    println!(
        "wrote {} ({} tasks, the top {} cells of each by {})",
        a.out.display(),
        db.tasks.len(),
        a.top,
        a.weights.display()
    );
    Ok(())
}

/// Options of `metad2a train ranker`.
#[derive(Args)]
pub struct RankerArgs {
    #[command(flatten)]
    data: RankerData,
    /// Output weights directory (also gets ranker.json, the training report).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Take the generator from this weights directory instead of --base (e.g. one trained to
    /// match this ranker on `train relabel`'s targets).
    #[arg(long, value_name = "DIR")]
    generator: Option<PathBuf>,
    /// Validate on every task of this source and train on the others (leave-one-source-out).
    #[arg(long, value_name = "SOURCE")]
    holdout_source: Option<String>,
    #[command(flatten)]
    fit: RankerFit,
}

/// What the ranker is trained from (shared by `train ranker` and `train loso`).
#[derive(Args)]
pub struct RankerData {
    /// A trained weights directory whose generator, set encoder and graph encoder are kept.
    #[arg(long, value_name = "DIR")]
    base: PathBuf,
    /// Meta-database directory.
    #[arg(long, value_name = "DIR")]
    db: PathBuf,
    /// The NAS-Bench-201 table (NATS-Bench CSV layout); only its ImageNet16-120 column is read.
    #[arg(long, value_name = "CSV")]
    nb201: PathBuf,
}

/// How the ranker is fitted (shared by `train ranker` and `train loso`).
#[derive(Args)]
pub struct RankerFit {
    /// Train without the source benchmark: no cell prior, the head alone.
    #[arg(long)]
    no_prior: bool,
    /// Epochs of the within-task head (0: the prior alone).
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Temperature of the pairwise loss.
    #[arg(long, default_value_t = 1.0)]
    tau: f64,
    /// Epochs of the prior's fit.
    #[arg(long, default_value_t = 150)]
    prior_epochs: usize,
    /// Hidden width of the prior.
    #[arg(long, default_value_t = 128)]
    prior_hidden: usize,
    /// Set samples drawn per task.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// Which label of each record to learn: `valid` (held-out accuracy), `train` (final
    /// training accuracy) or `speed` (minus the last epoch's training loss; v2 records).
    #[arg(long, default_value = "train", value_name = "valid|train|speed")]
    label: String,
    /// Add the cell mix: a value of each operation on each edge that depends on the dataset
    /// embedding (`cell_mix.*` tensors; see src/model/cell_mix.rs).
    #[arg(long)]
    mix: bool,
    /// L2 penalty on the cell mix's matrix.
    #[arg(long, default_value_t = 1e-3)]
    mix_l2: f64,
    /// Train the cell mix alone: the official head keeps a zero output (implies --mix).
    #[arg(long)]
    mix_only: bool,
    /// Validation only: scale the mix's data part by exp(-(novelty / R)^2), novelty being the
    /// distance of the task's embedding to the nearest training task's.
    #[arg(long, value_name = "R")]
    mix_gate: Option<f64>,
    /// Weight of a second pairwise loss that orders random cells of the prior's fit by their
    /// ImageNet16-120 accuracy, with each task's embedding (keeps what the 10-epoch labels
    /// teach faithful to long training; 0: off).
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    source_pairs: f64,
    #[arg(long, default_value_t = 333)]
    seed: u64,
}

impl RankerFit {
    fn config(&self, holdout_source: Option<String>) -> metad2a::train::ranker::RankerConfig {
        metad2a::train::ranker::RankerConfig {
            prior: !self.no_prior,
            prior_hidden: self.prior_hidden,
            prior_epochs: self.prior_epochs,
            epochs: self.epochs,
            lr: self.lr,
            tau: self.tau,
            samples: self.samples,
            holdout_source,
            mix: self.mix || self.mix_only,
            mix_l2: self.mix_l2,
            mix_only: self.mix_only,
            mix_gate: self.mix_gate,
            source_pairs: self.source_pairs,
            seed: self.seed,
            ..Default::default()
        }
    }

    /// The database with this fit's label, the table, the base engine, the prior (when
    /// fitted) and the graph embeddings of every cell.
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        data: &RankerData,
        cfg: &metad2a::train::ranker::RankerConfig,
    ) -> metad2a::Result<(
        metad2a::train::metadb::MetaDb,
        Nb201Table,
        metad2a::Engine,
        Option<(
            Vec<metad2a::weights::NamedTensor>,
            Vec<f32>,
            metad2a::train::ranker::PriorReport,
        )>,
        Vec<f32>,
    )> {
        let mut db = metad2a::train::metadb::MetaDb::load(&data.db)?;
        db.use_label(self.label.parse()?)?;
        let table = Nb201Table::load(&data.nb201)?;
        let engine = metad2a::Engine::load(&data.base)?;
        let prior = if cfg.prior {
            let (t, all, r) =
                metad2a::train::ranker::train_prior(&table, cfg, &mut |m| eprintln!("{m}"))?;
            eprintln!(
                "prior: spearman with ImageNet16-120 {:.4} on {} held-out cells, {:.4} on all ({:.1} s)",
                r.heldout_spearman, r.heldout_cells, r.all_spearman, r.seconds
            );
            Some((t, all, r))
        } else {
            None
        };
        let all: Vec<metad2a::space::Arch> = metad2a::space::Nb201Arch::all()
            .map(metad2a::space::Arch::Nb201)
            .collect();
        let g_all = engine.graph_embeddings(&all)?;
        Ok((db, table, engine, prior, g_all))
    }
}

/// Options of `metad2a train loso`.
#[derive(Args)]
pub struct LosoArgs {
    #[command(flatten)]
    data: RankerData,
    /// Writes OUT.md (the table) and OUT.json (every source's measures, every epoch's).
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Instead of leaving sources out, split the tasks into K folds (task t in fold t mod K) and
    /// measure each fold with the head trained on the others: held-out tasks of seen sources.
    #[arg(long, value_name = "K")]
    folds: Option<usize>,
    #[command(flatten)]
    fit: RankerFit,
}

pub fn loso(a: LosoArgs) -> metad2a::Result<()> {
    let cfg = a.fit.config(None);
    let (db, table, engine, prior, g_all) = a.fit.inputs(&a.data, &cfg)?;
    let inputs = metad2a::train::ranker::HeadInputs {
        db: &db,
        base: &engine.predictor,
        g_all: &g_all,
        prior_all: prior.as_ref().map(|p| p.1.as_slice()),
        table: &table,
    };
    let mut log = |m: &str| eprintln!("{m}");
    let (rows, what, first) = match a.folds {
        Some(k) => (
            metad2a::train::ranker::task_folds(inputs, &cfg, k, &mut log)?,
            format!("{k}-fold held-out tasks"),
            "source (tasks held out by fold)",
        ),
        None => (
            metad2a::train::ranker::leave_one_source_out(inputs, &cfg, &mut log)?,
            "Leave-one-source-out".to_string(),
            "held-out source",
        ),
    };
    let md = metad2a::train::ranker::loso_markdown(&rows, first);
    let with_ext = |ext: &str| {
        let mut p = a.out.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| metad2a::Error::io(dir, e))?;
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    metad2a::util::write_atomic(
        &with_ext(".md"),
        format!(
            "{what} within-task Spearman of `{}` (`{command}`)\n\n{md}",
            a.data.db.display()
        )
        .as_bytes(),
    )?;
    let json =
        serde_json::json!({ "command": command, "config": cfg, "folds": a.folds, "rows": rows });
    metad2a::util::write_atomic(&with_ext(".json"), format!("{json:#}\n").as_bytes())?;
    print!("{md}");
    Ok(())
}

pub fn ranker(a: RankerArgs) -> metad2a::Result<()> {
    use metad2a::train::ranker;
    let cfg = a.fit.config(a.holdout_source.clone());
    let (db, table, engine, prior, g_all) = a.fit.inputs(&a.data, &cfg)?;
    let (prior_tensors, prior_all, prior_report) = match prior {
        Some((t, all, r)) => (t, Some(all), Some(r)),
        None => (Vec::new(), None, None),
    };
    let mut log = |m: &str| eprintln!("{m}");
    let inputs = ranker::HeadInputs {
        db: &db,
        base: &engine.predictor,
        g_all: &g_all,
        prior_all: prior_all.as_deref(),
        table: &table,
    };
    let trained = ranker::train_head(inputs, &cfg, prior_report, &mut log)?;
    let r = &trained.report;
    eprintln!(
        "kept epoch {}: within-task spearman {:.4} on {} validation tasks (fixed embedding {:.4}; ImageNet16-120 accuracy alone {:.4}, parameter count {:.4})",
        r.best.epoch,
        r.best.spearman,
        r.valid_tasks,
        r.best.spearman_fixed_embedding,
        r.baselines.source_benchmark,
        r.baselines.params
    );
    // the base predictor with the new head (and prior)
    let base_manifest = metad2a::weights::Manifest::read(&a.data.base)?;
    let store =
        metad2a::weights::WeightStore::open(a.data.base.join(&base_manifest.predictor.file))?;
    let mut tensors: Vec<metad2a::weights::NamedTensor> = Vec::new();
    let replaced: std::collections::HashSet<&str> = trained
        .tensors
        .iter()
        .chain(&prior_tensors)
        .map(|(n, _, _)| n.as_str())
        .collect();
    for name in store.names() {
        if replaced.contains(name) {
            continue;
        }
        let p = store.param_any(name)?;
        tensors.push((name.to_string(), p.shape().to_vec(), p.to_vec()));
    }
    tensors.extend(trained.tensors.iter().cloned());
    tensors.extend(prior_tensors);
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    std::fs::create_dir_all(&a.out).map_err(|e| metad2a::Error::io(&a.out, e))?;
    let bytes =
        metad2a::weights::serialize(&tensors, metad2a::weights::import::ExportDtype::F32, None)?;
    metad2a::util::write_atomic(&a.out.join("predictor.safetensors"), &bytes)?;
    let gen_dir = a.generator.as_ref().unwrap_or(&a.data.base);
    // a directory that `train generator` wrote alone has no manifest yet
    let gen_file = metad2a::weights::Manifest::read(gen_dir)
        .map(|m| m.generator.file)
        .unwrap_or_else(|_| "generator.safetensors".to_string());
    if !gen_dir.join(&gen_file).is_file() {
        return Err(metad2a::Error::invalid(format!(
            "{} has no {gen_file}",
            gen_dir.display()
        )));
    }
    for f in [&gen_file, &"generator.json".to_string()] {
        let from = gen_dir.join(f);
        if from.is_file() {
            std::fs::copy(&from, a.out.join(f)).map_err(|e| metad2a::Error::io(&from, e))?;
        }
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let info = serde_json::json!({
        "model": "predictor",
        "kind": match (cfg.mix, cfg.mix_only) {
            (false, _) => "ranker: cell prior (NAS-Bench-201 ImageNet16-120) + within-task pairwise head",
            (true, false) => "ranker: cell prior (NAS-Bench-201 ImageNet16-120) + within-task pairwise head and cell mix",
            (true, true) => "ranker: cell prior (NAS-Bench-201 ImageNet16-120) + within-task pairwise cell mix (official head at zero)",
        },
        "command": command,
        "feature_extractor": db.feature_extractor,
        "label": a.fit.label,
        "base": a.data.base.display().to_string(),
        "base_predictor_sha256": base_manifest.predictor.sha256,
        "epoch": r.best.epoch,
        "report": r,
    });
    metad2a::util::write_atomic(
        &a.out.join("predictor.json"),
        format!("{info:#}\n").as_bytes(),
    )?;
    metad2a::util::write_atomic(
        &a.out.join("ranker.json"),
        format!("{:#}\n", serde_json::to_value(r).expect("report")).as_bytes(),
    )?;
    // the table is an input of the weights only through the prior
    let (inputs, mut extra) = if cfg.prior {
        let csv = std::fs::read(&a.data.nb201).map_err(|e| metad2a::Error::io(&a.data.nb201, e))?;
        (
            vec![metad2a::weights::manifest::InputFile::of(a.data.nb201.display().to_string(), &csv)],
            "; cell prior: NAS-Bench-201 ImageNet16-120 test accuracies (200 epochs; NATS-Bench, MIT)".to_string(),
        )
    } else {
        (Vec::new(), String::new())
    };
    extra += &format!(
        "; set and graph encoders from {}; generator from {} (its command: extra.generator_training)",
        a.data.base.display(),
        gen_dir.display()
    );
    complete_weights(
        &a.out,
        &a.data.db,
        &db,
        &a.fit.label,
        inputs,
        &extra,
        &command,
    )
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
    /// Which label of each record to learn: `valid` (held-out accuracy), `train` (final
    /// training accuracy, which ranked CIFAR-10 cells better in docs/calibration.md) or `speed`
    /// (minus the last epoch's training loss; v2 records).
    #[arg(long, default_value = "valid", value_name = "valid|train|speed")]
    label: String,
    /// Predictor targets standardised over all records (`global`, the official objective) or
    /// within each task (`task`: only how a task's cells rank against each other counts).
    #[arg(long, default_value = "global", value_name = "global|task")]
    target: String,
    /// Generator: learn the best K records of each task instead of its best one (e.g. the top
    /// cells of `train relabel`).
    #[arg(long, default_value_t = 1, value_name = "K")]
    targets_per_task: usize,
}

pub fn train(c: TrainCommand) -> metad2a::Result<()> {
    use metad2a::train::meta_train::{self, Kind, MetaTrainConfig, TrainProgress};
    let (kind, a) = match c {
        TrainCommand::Generator(a) => (Kind::Generator, a),
        TrainCommand::Predictor(a) => (Kind::Predictor, a),
        TrainCommand::Ranker(a) => return ranker(a),
        TrainCommand::Loso(a) => return loso(a),
        TrainCommand::Relabel(a) => return relabel(a),
    };
    let mut db = metad2a::train::metadb::MetaDb::load(&a.db)?;
    db.use_label(a.label.parse()?)?;
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
        target: a.target.parse()?,
        targets_per_task: a.targets_per_task,
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
    // the model's description records the command that trained it
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let info_path = a.out.join(format!("{}.json", kind.name()));
    if let Some(mut info) = std::fs::read_to_string(&info_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        info["command"] = command.clone().into();
        metad2a::util::write_atomic(&info_path, format!("{info:#}\n").as_bytes())?;
    }
    if a.out.join("generator.safetensors").is_file()
        && a.out.join("predictor.safetensors").is_file()
    {
        complete_weights(&a.out, &a.db, &db, &a.label, Vec::new(), "", &command)?;
    } else {
        println!(
            "wrote {} ({} only; train the other model into the same directory to complete it)",
            a.out.join(format!("{}.safetensors", kind.name())).display(),
            kind.name()
        );
    }
    Ok(())
}

/// Writes the graph cache and manifest of a weights directory trained on `db` (and on the
/// `extra_inputs`, described by `extra_data`), recording the database files' sha256 and the
/// licences of its image sources.
fn complete_weights(
    out: &Path,
    db_dir: &Path,
    db: &metad2a::train::metadb::MetaDb,
    label: &str,
    extra_inputs: Vec<metad2a::weights::manifest::InputFile>,
    extra_data: &str,
    command: &str,
) -> metad2a::Result<()> {
    use metad2a::train::meta_train;
    let data = format!(
        "meta-database {} ({} tasks, {} records, {} accuracy; {}){extra_data}",
        db_dir.display(),
        db.tasks.len(),
        db.records.len(),
        label,
        db.feature_extractor
    );
    let mut inputs = Vec::new();
    for f in ["tasks.jsonl", "records.jsonl", "features.safetensors"] {
        let p = db_dir.join(f);
        let bytes = std::fs::read(&p).map_err(|e| metad2a::Error::io(&p, e))?;
        inputs.push(metad2a::weights::manifest::InputFile::of(
            p.display().to_string(),
            &bytes,
        ));
    }
    inputs.extend(extra_inputs);
    let mut sources: Vec<&str> = db.tasks.iter().map(|t| t.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let licence = format!(
        "MIT (this project); meta-database images: {}",
        sources
            .iter()
            .map(|s| format!(
                "{s} ({})",
                metad2a::train::build_db::source_licence(s).unwrap_or("see its SOURCE file")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let m = meta_train::write_manifest(
        out,
        &meta_train::TrainedFrom {
            data: &data,
            inputs,
            licence: &licence,
            command,
        },
    )?;
    println!(
        "wrote {} (generator and predictor, graph cache, manifest; {})",
        out.display(),
        m.feature_extractor
    );
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
