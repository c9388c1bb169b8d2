//! Meta-training of the dataset-aware ranker: the predictor's [cell prior](crate::model::CellPrior)
//! learned from a source benchmark, and the official head retrained to rank within each task.
//!
//! The score of cell `c` on a dataset with set embedding `D` is
//! `s(D, c) = prior(x(c)) + pred_fc([D; G(c)])`:
//!
//! 1. **Prior** (`--prior`, on by default): an MLP on the cell's one-hot operations, fitted by
//!    squared error to the standardised ImageNet16-120 test accuracies (200 epochs) of the
//!    NAS-Bench-201 table. This is the only column of the table training ever reads; the
//!    CIFAR-10 and CIFAR-100 columns are held out for the meta-test. 10% of the cells are kept
//!    out of the fit to report how well it generalises.
//! 2. **Within-task head**: the set encoder, graph encoder and `fc1` of a base predictor are kept
//!    (so `D` and `G` are computed once), `pred_fc.0` starts from the base and `pred_fc.2` from
//!    zero (the score starts as the prior alone). The loss is pairwise within each task: for
//!    every pair of a task's records whose labels differ, `softplus(−(s_i − s_j) / τ)` with `i`
//!    the better record, averaged over pairs. Each step draws one set sample per task.
//! 3. **Selection**: the records' labels come from a 10-epoch proxy, which rewards cells that
//!    learn fast; left alone, the head learns to prefer shallow cells on every task. The epoch
//!    kept (epoch 0, the prior alone, included) is the one with the best mean of three held-out
//!    measures: the within-task Spearman on the validation tasks (what the data changes); the
//!    Spearman of the validation tasks' scores with the source benchmark on the cells held out
//!    of the prior's fit (faithfulness to long training); and the source benchmark's
//!    percentile of the 10 best-scored of those cells (faithfulness where a search looks).
//!
//! Validation tasks are the database's `valid` split, or with `holdout_source` every task of that
//! source (which training then never sees): leave-one-source-out; with `holdout_fold` every k-th
//! task. With a hold-out, the epoch is still chosen on the `valid` split, as without one: its
//! tasks outside the held-out set leave training and choose the epoch, and the report's `best`
//! is the held-out measure at that epoch (nested validation: the variant as `train ranker`
//! would ship it, measured on tasks that chose nothing). For each validation task the
//! report gives the within-task Spearman with the task's own embedding and with one fixed
//! embedding (the mean over the training tasks' samples), which measures what the dataset
//! embedding adds.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;

use super::meta::{normal, Adam, Params};
use super::metadb::{MetaDb, Split};
use crate::error::{Error, Result};
use crate::model::cell_prior::PREFIX;
use crate::model::Predictor;
use crate::rng::Rng;
use crate::space::nb201::{NUM_ARCHS, OPS};
use crate::space::nb201_table::Nb201Table;
use crate::space::Nb201Arch;
use crate::stats::spearman;
use crate::weights::NamedTensor;

/// Inputs of the prior: one-hot operation of each of the 6 cell edges.
pub const PRIOR_INPUTS: usize = 6 * OPS.len();

/// The prior's input for a cell (the layout [`crate::model::CellPrior`] reads from a graph).
pub fn one_hot(a: &Nb201Arch) -> [f32; PRIOR_INPUTS] {
    let mut x = [0.0; PRIOR_INPUTS];
    for (k, &op) in a.ops.iter().enumerate() {
        x[k * OPS.len() + op as usize] = 1.0;
    }
    x
}

#[derive(Clone, Debug, Serialize)]
pub struct RankerConfig {
    /// Learn the cell prior from the source benchmark (false: the head alone, own data only).
    pub prior: bool,
    pub prior_hidden: usize,
    pub prior_epochs: usize,
    pub prior_lr: f64,
    /// Epochs of the within-task head (0: the prior alone).
    pub epochs: usize,
    pub lr: f64,
    /// Temperature of the pairwise loss.
    pub tau: f64,
    /// Set samples drawn per task (each step uses one of them).
    pub samples: usize,
    pub per_class: usize,
    /// Tasks per step.
    pub batch_tasks: usize,
    /// Validate on every task of this source and train on the others.
    pub holdout_source: Option<String>,
    /// Validate on the tasks whose index is `f` modulo `k` (`Some((f, k))`) and train on the
    /// others: held-out tasks of sources training has seen.
    pub holdout_fold: Option<(usize, usize)>,
    /// Add the term `x(c) · (W^T D + b)` (standardised embedding `D`, one-hot operations `x` of
    /// the cell): a value of each operation on each edge, `b` for every dataset and `W^T D`
    /// depending on the data (zero for the mean embedding).
    pub mix: bool,
    /// L2 penalty on `W` of the bilinear term.
    pub mix_l2: f64,
    /// Train the cell mix alone (the official head stays at zero output).
    pub mix_only: bool,
    /// Weight of a second pairwise loss, on the source benchmark: each step, for each task's
    /// embedding sample, 32 random cells of the prior's fit ordered by their ImageNet16-120
    /// accuracy. It keeps what is learned from the 10-epoch labels faithful to long training.
    pub source_pairs: f64,
    /// Scale the data part of the mix (`W^T D`) at validation by `exp(−(ν / r)²)`, `ν` the
    /// task's novelty (see [`TaskMeasure::novelty`]): `Some(r)`.
    pub mix_gate: Option<f64>,
    pub seed: u64,
}

impl Default for RankerConfig {
    fn default() -> Self {
        RankerConfig {
            prior: true,
            prior_hidden: 128,
            prior_epochs: 150,
            prior_lr: 1e-3,
            epochs: 60,
            lr: 1e-4,
            tau: 1.0,
            samples: 8,
            per_class: 20,
            batch_tasks: 8,
            holdout_source: None,
            holdout_fold: None,
            mix: false,
            mix_l2: 1e-3,
            mix_only: false,
            mix_gate: None,
            source_pairs: 0.0,
            seed: 333,
        }
    }
}

/// How the prior fits the source benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct PriorReport {
    /// Spearman of the prior with the ImageNet16-120 accuracies, on the cells held out of the
    /// fit and on all cells.
    pub heldout_spearman: f64,
    pub all_spearman: f64,
    pub heldout_cells: usize,
    pub seconds: f64,
}

/// One validation pass.
#[derive(Clone, Debug, Serialize)]
pub struct Validation {
    pub epoch: usize,
    pub train_loss: f64,
    /// Mean within-task Spearman over the validation tasks, with each task's own embedding.
    pub spearman: f64,
    /// The same with one fixed embedding for every task.
    pub spearman_fixed_embedding: f64,
    /// Own-embedding Spearman per source.
    pub by_source: BTreeMap<String, f64>,
    /// Faithfulness to long training: Spearman of the scores (each validation task's mean
    /// embedding) with the source benchmark on the cells held out of the prior's fit, averaged
    /// over the validation tasks.
    pub source_spearman: f64,
    /// Faithfulness at the top: the mean percentile (0 worst, 1 best, over all cells) of the
    /// source-benchmark accuracy of the 10 best-scored held-out cells, averaged over the
    /// validation tasks. A search only uses the top of the ranking.
    pub source_top: f64,
    /// What the epoch is chosen by: the mean of `spearman`, `source_spearman` and `source_top`.
    pub selection: f64,
    /// The same measures task by task (what the means above are taken over).
    #[serde(skip)]
    pub per_task: Vec<TaskMeasure>,
}

/// One validation task's measures, and the cheap rankers' within-task Spearman on it.
#[derive(Clone, Debug)]
pub struct TaskMeasure {
    pub source: String,
    pub spearman: f64,
    pub spearman_fixed_embedding: f64,
    pub source_spearman: f64,
    pub source_top: f64,
    /// ImageNet16-120 accuracy, parameter count, FLOPs as rankers.
    pub baselines: [f64; 3],
    /// NASWOT as a ranker, where every record has its score.
    pub naswot: Option<f64>,
    /// How far the task's mean embedding is from the nearest training task's (standardised,
    /// root mean square over dimensions).
    pub novelty: f64,
}

impl Validation {
    /// The means over `per_task` (which it keeps).
    pub fn from_tasks(epoch: usize, train_loss: f64, per_task: Vec<TaskMeasure>) -> Self {
        let avg =
            |f: &dyn Fn(&TaskMeasure) -> f64| mean(&per_task.iter().map(f).collect::<Vec<_>>());
        let mut by_source: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in &per_task {
            by_source
                .entry(m.source.clone())
                .or_default()
                .push(m.spearman);
        }
        let (own, faithful, top) = (
            avg(&|m| m.spearman),
            avg(&|m| m.source_spearman),
            avg(&|m| m.source_top),
        );
        Validation {
            epoch,
            train_loss,
            spearman: own,
            spearman_fixed_embedding: avg(&|m| m.spearman_fixed_embedding),
            by_source: by_source.into_iter().map(|(k, v)| (k, mean(&v))).collect(),
            source_spearman: faithful,
            source_top: top,
            selection: (own + faithful + top) / 3.0,
            per_task,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RankerReport {
    pub config: RankerConfig,
    pub prior: Option<PriorReport>,
    pub train_tasks: usize,
    pub valid_tasks: usize,
    /// With a hold-out: the tasks of the `valid` split that chose the epoch (0: the last kept).
    pub choosing_tasks: usize,
    pub epochs: Vec<Validation>,
    /// The validation tasks' measures at the kept epoch.
    pub best: Validation,
    /// Baselines on the same validation tasks.
    #[serde(flatten)]
    pub baselines: Baselines,
}

/// Cheap rankers' mean within-task Spearman over some validation tasks (written into reports
/// as `baseline_*` fields).
#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    /// The source benchmark's own accuracy (ImageNet16-120).
    #[serde(rename = "baseline_source_benchmark")]
    pub source_benchmark: f64,
    #[serde(rename = "baseline_params")]
    pub params: f64,
    #[serde(rename = "baseline_flops")]
    pub flops: f64,
    /// NASWOT on the task's own images, when every validation record has it (v2 records).
    #[serde(rename = "baseline_naswot")]
    pub naswot: Option<f64>,
}

impl Baselines {
    pub fn of(tasks: &[TaskMeasure]) -> Self {
        let avg = |k: usize| mean(&tasks.iter().map(|m| m.baselines[k]).collect::<Vec<_>>());
        Baselines {
            source_benchmark: avg(0),
            params: avg(1),
            flops: avg(2),
            naswot: tasks
                .iter()
                .map(|m| m.naswot)
                .collect::<Option<Vec<f64>>>()
                .map(|v| mean(&v)),
        }
    }
}

/// What training produced: the tensors to add to or replace in the base predictor, and the report.
pub struct Trained {
    pub tensors: Vec<NamedTensor>,
    pub report: RankerReport,
}

fn var(v: Vec<f32>, shape: (usize, usize)) -> Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_vec(
        v,
        shape,
        &Device::Cpu,
    )?)?)
}

fn mlp(p: &Params, prefix: &str, x: &Tensor) -> Result<Tensor> {
    let l = |i: usize, x: &Tensor| -> Result<Tensor> {
        let w = p.vars[&format!("{prefix}.{i}.weight")].as_tensor();
        let b = p.vars[&format!("{prefix}.{i}.bias")].as_tensor();
        Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
    };
    Ok(l(2, &l(0, x)?.tanh()?)?.squeeze(1)?)
}

/// Training keeps biases as `[1, out]` rows; the runtime reads `[out]` vectors.
fn runtime_shapes(tensors: Vec<NamedTensor>) -> Vec<NamedTensor> {
    tensors
        .into_iter()
        .map(|(n, s, v)| {
            if n.ends_with(".bias") {
                let len = v.len();
                (n, vec![len], v)
            } else {
                (n, s, v)
            }
        })
        .collect()
}

/// All cells in a seeded random order; the first tenth is held out of the prior's fit and
/// serves to check that the head keeps the ranking faithful to long training.
pub fn cell_split(seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed, 0x0053_504c_4954);
    let mut order: Vec<usize> = (0..NUM_ARCHS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

/// The source benchmark's accuracy of every cell in code order (ImageNet16-120, the only
/// column training reads).
pub fn source_accuracies(table: &Nb201Table) -> Result<Vec<f64>> {
    table.column(|e| e.imagenet16_120)
}

/// Fits the cell prior to the table's ImageNet16-120 column. Returns its tensors, its value for
/// every cell in code order, and the report.
pub fn train_prior(
    table: &Nb201Table,
    cfg: &RankerConfig,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<NamedTensor>, Vec<f32>, PriorReport)> {
    let t0 = std::time::Instant::now();
    let cells: Vec<Nb201Arch> = Nb201Arch::all().collect();
    let acc = source_accuracies(table)?;
    let (mean, std) = crate::stats::mean_std(&acc);
    let y: Vec<f32> = acc.iter().map(|a| ((a - mean) / std) as f32).collect();
    let x: Vec<f32> = cells.iter().flat_map(one_hot).collect();
    let mut rng = Rng::new(cfg.seed, 0x0050_5249_4f52);
    let order = cell_split(cfg.seed);
    let heldout = NUM_ARCHS / 10;
    let (test_idx, train_idx) = order.split_at(heldout);
    let h = cfg.prior_hidden;
    let mut vars = BTreeMap::new();
    let scale0 = (1.0 / PRIOR_INPUTS as f64).sqrt();
    let w0 = (normal((h, PRIOR_INPUTS), &mut rng)? * scale0)?;
    vars.insert(format!("{PREFIX}.0.weight"), Var::from_tensor(&w0)?);
    vars.insert(format!("{PREFIX}.0.bias"), var(vec![0.0; h], (1, h))?);
    let w2 = (normal((1, h), &mut rng)? * (1.0 / h as f64).sqrt())?;
    vars.insert(format!("{PREFIX}.2.weight"), Var::from_tensor(&w2)?);
    vars.insert(format!("{PREFIX}.2.bias"), var(vec![0.0], (1, 1))?);
    let params = Params { vars };
    let mut adam = Adam::new(cfg.prior_lr);
    let xs = Tensor::from_vec(x, (NUM_ARCHS, PRIOR_INPUTS), &Device::Cpu)?;
    let ys = Tensor::from_vec(y.clone(), NUM_ARCHS, &Device::Cpu)?;
    let mut idx = train_idx.to_vec();
    const BATCH: usize = 256;
    for epoch in 0..cfg.prior_epochs {
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut total = 0.0;
        for b in idx.chunks(BATCH) {
            let bi = Tensor::from_vec(
                b.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                b.len(),
                &Device::Cpu,
            )?;
            let pred = mlp(&params, PREFIX, &xs.index_select(&bi, 0)?)?;
            let loss = (pred - ys.index_select(&bi, 0)?)?.sqr()?.mean_all()?;
            total += loss.to_scalar::<f32>()? as f64 * b.len() as f64;
            adam.update(&params, &loss.backward()?)?;
        }
        if epoch % 25 == 24 || epoch + 1 == cfg.prior_epochs {
            log(&format!(
                "prior epoch {}: train mse {:.4}",
                epoch + 1,
                total / idx.len() as f64
            ));
        }
    }
    let all: Vec<f32> = mlp(&params, PREFIX, &xs)?.to_vec1()?;
    let pick = |ix: &[usize], v: &[f64]| ix.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let all64: Vec<f64> = all.iter().map(|&v| v as f64).collect();
    let report = PriorReport {
        heldout_spearman: spearman(&pick(test_idx, &all64), &pick(test_idx, &acc)),
        all_spearman: spearman(&all64, &acc),
        heldout_cells: heldout,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((runtime_shapes(params.values()?), all, report))
}

/// One task's data for the head: its set-sample embeddings and its records.
struct TaskData {
    source: String,
    /// `[samples, d_D]`.
    d: Vec<f32>,
    /// `[n, nz]` graph embeddings, priors `[n]`, labels `[n]`, parameter-like cost `[n]`.
    g: Vec<f32>,
    /// `[n, PRIOR_INPUTS]` one-hot operations of the cells.
    x: Vec<f32>,
    prior: Vec<f32>,
    label: Vec<f64>,
    source_acc: Vec<f64>,
    params: Vec<f64>,
    flops: Vec<f64>,
    /// The records' NASWOT scores (minus infinity as -1e300; NaN where not recorded).
    naswot: Vec<f64>,
    /// `[n, n]`: 1 where record `i` beats record `j`, and how many such pairs.
    better: Vec<f32>,
    pairs: f64,
    /// The mean of the (standardised) sample embeddings, `[d_D]`.
    d_avg: Vec<f32>,
}

impl TaskData {
    /// Fills `better`, `pairs` (from the labels) and `d_avg` (from `d`).
    fn finish(&mut self, dd: usize) {
        (self.better, self.pairs) = better_pairs(&self.label);
        let samples = self.d.len() / dd;
        self.d_avg = vec![0.0; dd];
        for d in self.d.chunks_exact(dd) {
            for (m, v) in self.d_avg.iter_mut().zip(d) {
                *m += v / samples as f32;
            }
        }
    }
}

/// What the head trains on: the database, the base predictor, the base predictor's graph
/// embedding of every cell (`g_all`), the prior's value of every cell (or none) and the
/// benchmark table (for the baselines and the held-out cells).
#[derive(Clone, Copy)]
pub struct HeadInputs<'a> {
    pub db: &'a MetaDb,
    pub base: &'a Predictor,
    pub g_all: &'a [f32],
    pub prior_all: Option<&'a [f32]>,
    pub table: &'a Nb201Table,
}

/// Trains the within-task head (see [`HeadInputs`]).
pub fn train_head(
    inputs: HeadInputs<'_>,
    cfg: &RankerConfig,
    prior_report: Option<PriorReport>,
    log: &mut dyn FnMut(&str),
) -> Result<Trained> {
    let HeadInputs { db, base, .. } = inputs;
    let (dd, nz) = (base.dims.set.out_dim, base.dims.nz);
    let mut rng = Rng::new(cfg.seed, 0x4845_4144);
    if let Some(s) = &cfg.holdout_source {
        if !db.tasks.iter().any(|t| t.source == *s) {
            return Err(Error::invalid(format!(
                "no task of the database has source {s}"
            )));
        }
    }
    let (mut tasks, task_ids) = task_data(inputs, cfg, &mut rng)?;
    let is_valid = |t: usize| match (&cfg.holdout_source, cfg.holdout_fold) {
        (Some(s), _) => db.tasks[t].source == *s,
        (None, Some((f, k))) => t % k == f,
        (None, None) => db.tasks[t].split == Split::Valid,
    };
    let held_out = cfg.holdout_source.is_some() || cfg.holdout_fold.is_some();
    // with a hold-out, the `valid` split's other tasks choose the epoch (and do not train)
    let chooses = |i: usize| {
        held_out && !is_valid(task_ids[i]) && db.tasks[task_ids[i]].split == Split::Valid
    };
    let (valid, rest): (Vec<usize>, Vec<usize>) =
        (0..tasks.len()).partition(|&i| is_valid(task_ids[i]));
    let (inner, train): (Vec<usize>, Vec<usize>) = rest.into_iter().partition(|&i| chooses(i));
    if train.is_empty() || valid.is_empty() {
        return Err(Error::invalid(
            "the database needs training and validation tasks with at least 2 records each",
        ));
    }
    let (d_mean, d_std) = standardise(&mut tasks, &train, dd, log);
    let head = Head {
        params: init_head(base, &d_mean, &d_std, cfg.mix)?,
        dd,
        nz,
        mix: cfg.mix,
    };
    let mut adam = Adam::new(cfg.lr);
    let check = HeldOutCells::new(inputs.table, inputs.g_all, nz, cfg.seed)?;
    // the training tasks' mean embeddings (standardised): the mix's anchors
    let anchors: Vec<f32> = train
        .iter()
        .flat_map(|&t| tasks[t].d_avg.iter().copied())
        .collect();
    let unit = vec![1.0; dd];
    let novelty_of = |set: &[usize]| -> Vec<f64> {
        set.iter()
            .map(|&v| {
                crate::model::cell_mix::nearest_rms_distance(&tasks[v].d_avg, &anchors, &unit)
                    as f64
            })
            .collect()
    };
    let (novelty, inner_novelty) = (novelty_of(&valid), novelty_of(&inner));
    let validate = |set: &[usize], novelty: &[f64], epoch: usize, train_loss: f64| {
        head.validate(
            &tasks,
            set,
            novelty,
            cfg.mix_gate,
            inputs.prior_all,
            &check,
            epoch,
            train_loss,
        )
    };
    // the measure that chooses the epoch: the inner tasks with a hold-out (none left: the last
    // epoch is kept), else the validation tasks themselves
    let choose = |v: &Validation, epoch: usize, train_loss: f64| -> Result<f64> {
        Ok(if !held_out {
            v.selection
        } else if inner.is_empty() {
            epoch as f64
        } else {
            validate(&inner, &inner_novelty, epoch, train_loss)?.selection
        })
    };
    if held_out {
        log(&format!(
            "{} training tasks, {} held out, {} of the valid split choose the epoch",
            train.len(),
            valid.len(),
            inner.len()
        ));
    }
    let mut history = vec![validate(&valid, &novelty, 0, f64::NAN)?];
    let mut best = (
        history[0].clone(),
        head.params.values()?,
        choose(&history[0], 0, f64::NAN)?,
    );
    log(&format!(
        "epoch 0 (prior alone): valid within-task spearman {:.4} (fixed embedding {:.4}), source benchmark {:.4}, top {:.4}",
        history[0].spearman, history[0].spearman_fixed_embedding, history[0].source_spearman, history[0].source_top
    ));
    let mut order = train.clone();
    let source_pairs = if cfg.source_pairs > 0.0 {
        let acc = source_accuracies(inputs.table)?;
        let cells: Vec<usize> = cell_split(cfg.seed)[NUM_ARCHS / 10..].to_vec();
        Some(SourcePairs {
            acc: cells.iter().map(|&c| acc[c]).collect(),
            x: one_hots(&cells),
            cells,
            g_all: inputs.g_all,
            prior_all: inputs.prior_all,
        })
    } else {
        None
    };
    for epoch in 1..=cfg.epochs {
        let loss = head.pairwise_epoch(
            &tasks,
            &mut order,
            cfg,
            source_pairs.as_ref(),
            &mut adam,
            &mut rng,
        )?;
        let v = validate(&valid, &novelty, epoch, loss)?;
        log(&format!(
            "epoch {epoch}: loss {:.4}, valid within-task spearman {:.4} (fixed embedding {:.4}), source benchmark {:.4}, top {:.4}",
            v.train_loss, v.spearman, v.spearman_fixed_embedding, v.source_spearman, v.source_top
        ));
        let c = choose(&v, epoch, loss)?;
        if c > best.2 {
            best = (v.clone(), head.params.values()?, c);
        }
        history.push(v);
    }
    // fold the standardisation back: W_D = W'_D / σ, b = b' − W_D μ
    let mut best_tensors = best.1;
    let w = best_tensors
        .iter()
        .position(|t| t.0 == "pred_fc.0.weight")
        .expect("head weight");
    let b = best_tensors
        .iter()
        .position(|t| t.0 == "pred_fc.0.bias")
        .expect("head bias");
    let mut bias = best_tensors[b].2.clone();
    fold_standardisation(&mut best_tensors[w].2, &mut bias, dd + nz, &d_mean, &d_std);
    best_tensors[b].2 = bias;
    if cfg.mix {
        // the anchors, raw
        let gate = cfg.mix_gate.map(|r| {
            let raw = anchors
                .chunks_exact(dd)
                .flat_map(|a| {
                    a.iter()
                        .zip(d_mean.iter().zip(&d_std))
                        .map(|(v, (m, s))| v * s + m)
                })
                .collect();
            (r, raw)
        });
        mix_to_runtime(&mut best_tensors, &d_mean, &d_std, gate);
    }
    let baselines = Baselines::of(&history[0].per_task);
    Ok(Trained {
        tensors: runtime_shapes(best_tensors),
        report: RankerReport {
            config: cfg.clone(),
            prior: prior_report,
            train_tasks: train.len(),
            valid_tasks: valid.len(),
            choosing_tasks: inner.len(),
            best: best.0,
            epochs: history,
            baselines,
        },
    })
}

/// Every task with at least two records: `cfg.samples` dataset embeddings from the base set
/// encoder, and per record its graph embedding, prior, label and baselines. Also returns each
/// entry's task index.
fn task_data(
    inputs: HeadInputs<'_>,
    cfg: &RankerConfig,
    rng: &mut Rng,
) -> Result<(Vec<TaskData>, Vec<usize>)> {
    let HeadInputs {
        db,
        base,
        g_all,
        prior_all,
        table,
    } = inputs;
    let (dd, nz) = (base.dims.set.out_dim, base.dims.nz);
    let mut tasks: Vec<TaskData> = Vec::new();
    let mut task_ids = Vec::new();
    for (t, task) in db.tasks.iter().enumerate() {
        let recs: Vec<&super::metadb::Record> = db.records.iter().filter(|r| r.task == t).collect();
        if recs.len() < 2 {
            continue;
        }
        let classes = task.classes.len();
        let mut d = Vec::with_capacity(cfg.samples * dd);
        for _ in 0..cfg.samples {
            let x = db.sample_task(t, cfg.per_class, rng);
            d.extend(base.set_encoder.encode(&x, 1, classes, cfg.per_class)?);
        }
        let mut td = TaskData {
            source: task.source.clone(),
            d,
            g: Vec::new(),
            x: Vec::new(),
            prior: Vec::new(),
            label: Vec::new(),
            source_acc: Vec::new(),
            params: Vec::new(),
            flops: Vec::new(),
            naswot: Vec::new(),
            better: Vec::new(),
            pairs: 0.0,
            d_avg: Vec::new(),
        };
        for r in recs {
            let a: Nb201Arch = r.arch.parse()?;
            let c = a.code();
            td.g.extend_from_slice(&g_all[c * nz..(c + 1) * nz]);
            td.x.extend_from_slice(&one_hot(&a));
            td.prior.push(prior_all.map_or(0.0, |v| v[c]));
            td.label.push(r.acc);
            td.source_acc
                .push(table.get(&a).map_or(f64::NAN, |e| e.imagenet16_120));
            let cost = a.cost(&crate::space::Nb201Net::default());
            td.params.push(cost.params as f64);
            td.flops.push(cost.flops as f64);
            // a record that names its protocol and has no NASWOT score had minus infinity
            td.naswot.push(match (r.naswot, &r.protocol) {
                (Some(v), _) => v,
                (None, Some(_)) => -1e300,
                (None, None) => f64::NAN,
            });
        }
        tasks.push(td);
        task_ids.push(t);
    }
    Ok((tasks, task_ids))
}

/// Standardises every task's embeddings per dimension with the mean and spread over the
/// training tasks' samples (the base set encoder's embeddings vary little between tasks), and
/// finishes the tasks. Returns the mean and spread, which are folded into `pred_fc.0` when the
/// weights are written, so the runtime is unchanged.
fn standardise(
    tasks: &mut [TaskData],
    train: &[usize],
    dd: usize,
    log: &mut dyn FnMut(&str),
) -> (Vec<f32>, Vec<f32>) {
    let mut d_mean = vec![0.0f32; dd];
    let mut count = 0.0f32;
    for &i in train {
        for row in tasks[i].d.chunks_exact(dd) {
            for (m, v) in d_mean.iter_mut().zip(row) {
                *m += v;
            }
            count += 1.0;
        }
    }
    d_mean.iter_mut().for_each(|m| *m /= count);
    let mut d_std = vec![0.0f32; dd];
    for &i in train {
        for row in tasks[i].d.chunks_exact(dd) {
            for ((s, v), m) in d_std.iter_mut().zip(row).zip(&d_mean) {
                *s += (v - m) * (v - m);
            }
        }
    }
    d_std
        .iter_mut()
        .for_each(|s| *s = (*s / count).sqrt().max(1e-6));
    log(&format!(
        "dataset embeddings: per-dimension spread over training samples {:.3e} (mean over dimensions)",
        d_std.iter().sum::<f32>() / dd as f32
    ));
    for td in tasks.iter_mut() {
        for row in td.d.chunks_exact_mut(dd) {
            for ((v, m), s) in row.iter_mut().zip(&d_mean).zip(&d_std) {
                *v = (*v - m) / s;
            }
        }
        td.finish(dd);
    }
    (d_mean, d_std)
}

/// `[n, n]`: 1 where `label[i] > label[j]`, and how many such pairs.
fn better_pairs(label: &[f64]) -> (Vec<f32>, f64) {
    let n = label.len();
    let mut better = vec![0.0; n * n];
    let mut pairs = 0.0;
    for a in 0..n {
        for b in 0..n {
            if label[a] > label[b] {
                better[a * n + b] = 1.0;
                pairs += 1.0;
            }
        }
    }
    (better, pairs)
}

/// The pairwise loss of scores `s` (`[n]`), summed over the pairs of `better` (from
/// [`better_pairs`]): `softplus(−(s_i − s_j) / τ)` where `i` beats `j`.
fn pairwise_loss(s: &Tensor, better: Vec<f32>, tau: f64) -> Result<Tensor> {
    let n = better.len().isqrt();
    let m = Tensor::from_vec(better, (n, n), &Device::Cpu)?;
    let diff = (s.unsqueeze(1)?.broadcast_sub(&s.unsqueeze(0)?)? / tau)?;
    Ok((softplus(&diff.neg()?)? * m)?.sum_all()?)
}

/// The one-hot operations of cells, `[cells, PRIOR_INPUTS]`.
fn one_hots(cells: &[usize]) -> Vec<f32> {
    cells
        .iter()
        .flat_map(|&c| one_hot(&Nb201Arch::from_code(c).expect("a cell code below NUM_ARCHS")))
        .collect()
}

/// The base head's variables for standardised embeddings (`pred_fc.0` absorbs the mean and
/// spread), with a zero last layer: training starts from the prior alone.
fn init_head(base: &Predictor, d_mean: &[f32], d_std: &[f32], mix: bool) -> Result<Params> {
    let (dd, nz, p) = (base.dims.set.out_dim, base.dims.nz, base.dims.head_hidden);
    let w0 = &base.head[0];
    let mut w_init = w0.weight.to_vec();
    let mut b_init = w0
        .bias
        .as_ref()
        .map(|b| b.to_vec())
        .unwrap_or_else(|| vec![0.0; p]);
    for (row, b) in w_init.chunks_exact_mut(dd + nz).zip(b_init.iter_mut()) {
        for j in 0..dd {
            *b += row[j] * d_mean[j];
            row[j] *= d_std[j];
        }
    }
    let mut vars = BTreeMap::new();
    vars.insert("pred_fc.0.weight".to_string(), var(w_init, (p, dd + nz))?);
    vars.insert("pred_fc.0.bias".to_string(), var(b_init, (1, p))?);
    vars.insert("pred_fc.2.weight".to_string(), var(vec![0.0; p], (1, p))?);
    vars.insert("pred_fc.2.bias".to_string(), var(vec![0.0], (1, 1))?);
    if mix {
        vars.insert(
            MIX.to_string(),
            var(vec![0.0; dd * PRIOR_INPUTS], (dd, PRIOR_INPUTS))?,
        );
        vars.insert(
            MIX_BIAS.to_string(),
            var(vec![0.0; PRIOR_INPUTS], (1, PRIOR_INPUTS))?,
        );
    }
    Ok(Params { vars })
}

// The runtime's names of the mix's matrix `W` and bias `b`; in training `W` is
// `[d_D, PRIOR_INPUTS]` on standardised `D` and `b` is `[1, PRIOR_INPUTS]`: the term is
// `x(c) · (W^T D + b)` (`mix_to_runtime` writes the runtime's layout).
use crate::model::cell_mix::{BIAS as MIX_BIAS, WEIGHT as MIX};

/// The cells the prior never saw, their one-hot operations and graph embeddings, their source
/// accuracies, and every cell's percentile of source accuracy (its rank over all cells, 0..1).
struct HeldOutCells {
    cells: Vec<usize>,
    x: Vec<f32>,
    g: Vec<f32>,
    acc: Vec<f64>,
    percentile: Vec<f64>,
}

impl HeldOutCells {
    fn new(table: &Nb201Table, g_all: &[f32], nz: usize, seed: u64) -> Result<Self> {
        let source_acc = source_accuracies(table)?;
        let cells: Vec<usize> = cell_split(seed)[..NUM_ARCHS / 10].to_vec();
        Ok(HeldOutCells {
            x: one_hots(&cells),
            g: cells
                .iter()
                .flat_map(|&c| g_all[c * nz..(c + 1) * nz].iter().copied())
                .collect(),
            acc: cells.iter().map(|&c| source_acc[c]).collect(),
            percentile: crate::stats::ranks(&source_acc)
                .iter()
                .map(|r| r / (NUM_ARCHS - 1) as f64)
                .collect(),
            cells,
        })
    }
}

/// The cells of the prior's fit, for the source-benchmark pairs of
/// [`RankerConfig::source_pairs`]: codes, source accuracies, one-hots, and every cell's graph
/// embedding and prior.
struct SourcePairs<'a> {
    cells: Vec<usize>,
    acc: Vec<f64>,
    x: Vec<f32>,
    g_all: &'a [f32],
    prior_all: Option<&'a [f32]>,
}

/// Cells drawn per task sample for the source-benchmark pairs.
const SOURCE_CELLS: usize = 32;

/// The head being trained, on rows `[D; G]`.
struct Head {
    params: Params,
    dd: usize,
    nz: usize,
    mix: bool,
}

impl Head {
    /// Rows `[D; G]` of graph embeddings `g` with embedding row `d`.
    fn rows(&self, d: &[f32], g: &[f32]) -> Vec<f32> {
        g.chunks_exact(self.nz)
            .flat_map(|g| d.iter().chain(g).copied())
            .collect()
    }

    fn score(&self, x: Vec<f32>, n: usize) -> Result<Tensor> {
        mlp(
            &self.params,
            "pred_fc",
            &Tensor::from_vec(x, (n, self.dd + self.nz), &Device::Cpu)?,
        )
    }

    /// The bilinear term `x W^T D` for `n` cells with one-hots `x` and embedding `d` (none
    /// without `mix`).
    fn mix_term(&self, d: &[f32], gate: f32, x: &[f32], n: usize) -> Result<Option<Tensor>> {
        if !self.mix {
            return Ok(None);
        }
        let w = self.params.vars[MIX].as_tensor();
        let d = Tensor::from_vec(
            d.iter().map(|v| v * gate).collect(),
            (1, self.dd),
            &Device::Cpu,
        )?;
        let v = (d.matmul(w)? + self.params.vars[MIX_BIAS].as_tensor())?; // [1, PRIOR_INPUTS]
        let x = Tensor::from_vec(x.to_vec(), (n, PRIOR_INPUTS), &Device::Cpu)?;
        Ok(Some(x.matmul(&v.t()?)?.squeeze(1)?))
    }

    /// The head's scores of `n` cells (graph embeddings `g`, one-hots `x`) with embedding `d`.
    fn scores(&self, d: &[f32], gate: f32, g: &[f32], x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut s = self.score(self.rows(d, g), n)?;
        if let Some(m) = self.mix_term(d, gate, x, n)? {
            s = (s + m)?;
        }
        Ok(s.to_vec1()?)
    }

    /// One epoch of the pairwise loss: each batch of tasks, one embedding sample each, every
    /// pair of records within a task whose labels differ. Returns the mean batch loss.
    fn pairwise_epoch(
        &self,
        tasks: &[TaskData],
        order: &mut [usize],
        cfg: &RankerConfig,
        source: Option<&SourcePairs<'_>>,
        adam: &mut Adam,
        rng: &mut Rng,
    ) -> Result<f64> {
        let (dd, nz) = (self.dd, self.nz);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (mut total, mut steps) = (0.0, 0usize);
        let mix_alone;
        let trainable = if self.mix && cfg.mix_only {
            mix_alone = Params {
                vars: self
                    .params
                    .vars
                    .iter()
                    .filter(|(k, _)| k.as_str() == MIX || k.as_str() == MIX_BIAS)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            &mix_alone
        } else {
            &self.params
        };
        for batch in order.chunks(cfg.batch_tasks.max(1)) {
            let mut x = Vec::new();
            let mut spans = Vec::new();
            for &i in batch {
                let td = &tasks[i];
                let k = rng.below((td.d.len() / dd) as u64) as usize;
                spans.push((i, k, x.len() / (dd + nz), td.label.len()));
                x.extend(self.rows(&td.d[k * dd..(k + 1) * dd], &td.g));
            }
            let n = x.len() / (dd + nz);
            let r = self.score(x, n)?;
            let mut loss_terms = Vec::new();
            let mut pairs_total = 0.0f64;
            for &(i, k, start, len) in &spans {
                let td = &tasks[i];
                let prior = Tensor::from_vec(td.prior.clone(), len, &Device::Cpu)?;
                if td.pairs == 0.0 {
                    continue;
                }
                let mut s = (r.narrow(0, start, len)? + prior)?;
                if let Some(m) = self.mix_term(&td.d[k * dd..(k + 1) * dd], 1.0, &td.x, len)? {
                    s = (s + m)?;
                }
                loss_terms.push(pairwise_loss(&s, td.better.clone(), cfg.tau)?);
                pairs_total += td.pairs;
            }
            if loss_terms.is_empty() {
                continue;
            }
            let mut loss = (Tensor::stack(&loss_terms, 0)?.sum_all()? / pairs_total)?;
            if let Some(sp) = source {
                let mut terms = Vec::with_capacity(spans.len());
                for &(i, k, _, _) in &spans {
                    let pick: Vec<usize> = (0..SOURCE_CELLS)
                        .map(|_| rng.below(sp.cells.len() as u64) as usize)
                        .collect();
                    let (mut g, mut x, mut prior, mut acc) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for &p in &pick {
                        let c = sp.cells[p];
                        g.extend_from_slice(&sp.g_all[c * nz..(c + 1) * nz]);
                        x.extend_from_slice(&sp.x[p * PRIOR_INPUTS..(p + 1) * PRIOR_INPUTS]);
                        prior.push(sp.prior_all.map_or(0.0, |v| v[c]));
                        acc.push(sp.acc[p]);
                    }
                    let n = pick.len();
                    let d = &tasks[i].d[k * dd..(k + 1) * dd];
                    let mut sc = (self.score(self.rows(d, &g), n)?
                        + Tensor::from_vec(prior, n, &Device::Cpu)?)?;
                    if let Some(m) = self.mix_term(d, 1.0, &x, n)? {
                        sc = (sc + m)?;
                    }
                    let (better, pairs) = better_pairs(&acc);
                    if pairs == 0.0 {
                        continue;
                    }
                    terms.push((pairwise_loss(&sc, better, cfg.tau)? / pairs)?);
                }
                if !terms.is_empty() {
                    let k = terms.len() as f64;
                    let src = (Tensor::stack(&terms, 0)?.sum_all()? / k)?;
                    loss = (loss + (src * cfg.source_pairs)?)?;
                }
            }
            if self.mix && cfg.mix_l2 > 0.0 {
                let w = self.params.vars[MIX].as_tensor();
                loss = (loss + (w.sqr()?.sum_all()? * cfg.mix_l2)?)?;
            }
            total += loss.to_scalar::<f32>()? as f64;
            steps += 1;
            adam.update(trainable, &loss.backward()?)?;
        }
        Ok(total / steps.max(1) as f64)
    }

    /// The measures on the validation tasks the kept epoch is chosen by.
    #[allow(clippy::too_many_arguments)]
    fn validate(
        &self,
        tasks: &[TaskData],
        valid: &[usize],
        novelty: &[f64],
        gate: Option<f64>,
        prior_all: Option<&[f32]>,
        check: &HeldOutCells,
        epoch: usize,
        train_loss: f64,
    ) -> Result<Validation> {
        const TOP: usize = 10;
        let dd = self.dd;
        let d_fixed = vec![0.0f32; dd];
        let mut per_task = Vec::with_capacity(valid.len());
        for (&i, &nu) in valid.iter().zip(novelty) {
            let td = &tasks[i];
            let g = gate.map_or(1.0, |r| (-(nu / r) * (nu / r)).exp()) as f32;
            let n = td.label.len();
            let mut s = vec![0.0f64; n];
            let samples = td.d.len() / dd;
            for d in td.d.chunks_exact(dd) {
                let r = self.scores(d, g, &td.g, &td.x, n)?;
                for (s, r) in s.iter_mut().zip(r) {
                    *s += r as f64 / samples as f64;
                }
            }
            let rf = self.scores(&d_fixed, g, &td.g, &td.x, n)?;
            let with_prior = |v: &[f64]| -> Vec<f64> {
                v.iter()
                    .zip(&td.prior)
                    .map(|(a, &b)| a + b as f64)
                    .collect()
            };
            // the held-out cells, scored with the task's mean embedding
            let rc = self.scores(&td.d_avg, g, &check.g, &check.x, check.cells.len())?;
            let sc: Vec<f64> = rc
                .iter()
                .zip(&check.cells)
                .map(|(&r, &c)| r as f64 + prior_all.map_or(0.0, |p| p[c] as f64))
                .collect();
            let faithful = nan0(spearman(&sc, &check.acc));
            let mut best: Vec<usize> = (0..sc.len()).collect();
            best.sort_by(|&a, &b| sc[b].total_cmp(&sc[a]).then(a.cmp(&b)));
            let top = mean(
                &best
                    .iter()
                    .take(TOP)
                    .map(|&k| check.percentile[check.cells[k]])
                    .collect::<Vec<_>>(),
            );
            let so = spearman(&with_prior(&s), &td.label);
            let sf = spearman(
                &with_prior(&rf.iter().map(|&v| v as f64).collect::<Vec<_>>()),
                &td.label,
            );
            let base = |v: &[f64]| nan0(spearman(v, &td.label));
            per_task.push(TaskMeasure {
                source: td.source.clone(),
                spearman: nan0(so),
                spearman_fixed_embedding: nan0(sf),
                source_spearman: faithful,
                source_top: top,
                baselines: [base(&td.source_acc), base(&td.params), base(&td.flops)],
                naswot: td
                    .naswot
                    .iter()
                    .all(|v| !v.is_nan())
                    .then(|| base(&td.naswot)),
                novelty: nu,
            });
        }
        Ok(Validation::from_tasks(epoch, train_loss, per_task))
    }
}

/// One source of a leave-one-source-out run: the ranker trained on every other source,
/// measured on this source's tasks.
#[derive(Clone, Debug, Serialize)]
pub struct LosoRow {
    pub source: String,
    pub tasks: usize,
    /// Before the head trains (epoch 0: the prior alone, or the untrained head).
    pub start: Validation,
    /// After the last epoch. The held-out source never chooses an epoch: a LOSO number is a
    /// test number.
    pub last: Validation,
    /// At the epoch the `valid` split's other tasks chose (nested validation: the variant as
    /// `train ranker` keeps it). Over folds, `epoch` is the mean of the folds' kept epochs.
    pub kept: Validation,
    /// Baselines on the same tasks.
    #[serde(flatten)]
    pub baselines: Baselines,
}

/// Leave-one-source-out validation of the ranker head: for each source of `db`, the head is
/// trained on the other sources' tasks and measured on this source's (the prior, which reads
/// only the benchmark table, is shared). Sources without a task of two records (a database
/// being built) are skipped.
pub fn leave_one_source_out(
    inputs: HeadInputs<'_>,
    cfg: &RankerConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<LosoRow>> {
    let db = inputs.db;
    let sources: std::collections::BTreeSet<&String> = db.tasks.iter().map(|t| &t.source).collect();
    if sources.len() < 2 {
        return Err(Error::invalid(
            "leave-one-source-out needs a database with at least two sources",
        ));
    }
    let mut per_task = vec![0usize; db.tasks.len()];
    for r in &db.records {
        per_task[r.task] += 1;
    }
    let mut rows = Vec::new();
    for source in sources {
        let usable = (0..db.tasks.len())
            .filter(|&t| db.tasks[t].source == *source && per_task[t] >= 2)
            .count();
        if usable == 0 {
            log(&format!(
                "skipping {source}: no task of it has 2 records yet"
            ));
            continue;
        }
        log(&format!("leaving out {source}"));
        let c = RankerConfig {
            holdout_source: Some(source.clone()),
            ..cfg.clone()
        };
        let r = train_head(inputs, &c, None, &mut |_| {})?.report;
        let row = LosoRow {
            source: source.clone(),
            tasks: r.valid_tasks,
            start: r.epochs[0].clone(),
            last: r.epochs.last().expect("epoch 0 at least").clone(),
            kept: r.best,
            baselines: r.baselines,
        };
        log(&format!(
            "{source}: {} tasks, within-task Spearman {:.3} after {} epochs, {:.3} at kept epoch {} ({:.3} before; fixed embedding {:.3}; ImageNet16-120 alone {:.3}, parameter count {:.3}); novelty {}",
            row.tasks,
            row.last.spearman,
            row.last.epoch,
            row.kept.spearman,
            row.kept.epoch,
            row.start.spearman,
            row.last.spearman_fixed_embedding,
            row.baselines.source_benchmark,
            row.baselines.params,
            novelty_summary(&row.last.per_task)
        ));
        rows.push(row);
    }
    Ok(rows)
}

/// Held-out tasks of seen sources: the tasks are split into `k` folds by index (task `t` in
/// fold `t % k`); for each fold the head is trained on the other folds and measured on it.
/// Returns one row per source, over all its tasks (each measured by the fold that held it out).
pub fn task_folds(
    inputs: HeadInputs<'_>,
    cfg: &RankerConfig,
    k: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<LosoRow>> {
    if k < 2 {
        return Err(Error::invalid("task folds need k >= 2"));
    }
    let (mut start, mut last, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let (mut epoch, mut kept_epochs) = (0, 0);
    for f in 0..k {
        log(&format!("fold {f} of {k}"));
        let c = RankerConfig {
            holdout_source: None,
            holdout_fold: Some((f, k)),
            ..cfg.clone()
        };
        let r = train_head(inputs, &c, None, &mut |_| {})?.report;
        let l = r.epochs.last().expect("epoch 0 at least");
        log(&format!(
            "fold {f}: {} tasks, within-task Spearman {:.3} after {} epochs, {:.3} at kept epoch {} ({:.3} before; fixed embedding {:.3}); novelty {}",
            r.valid_tasks, l.spearman, l.epoch, r.best.spearman, r.best.epoch, r.epochs[0].spearman,
            l.spearman_fixed_embedding, novelty_summary(&l.per_task)
        ));
        epoch = l.epoch;
        kept_epochs += r.best.epoch;
        start.extend(r.epochs[0].per_task.iter().cloned());
        last.extend(l.per_task.iter().cloned());
        kept.extend(r.best.per_task.iter().cloned());
    }
    let sources: std::collections::BTreeSet<String> =
        start.iter().map(|m| m.source.clone()).collect();
    Ok(sources
        .into_iter()
        .map(|source| {
            let of = |v: &[TaskMeasure]| -> Vec<TaskMeasure> {
                v.iter().filter(|m| m.source == source).cloned().collect()
            };
            let (s, l) = (of(&start), of(&last));
            LosoRow {
                tasks: s.len(),
                baselines: Baselines::of(&s),
                start: Validation::from_tasks(0, f64::NAN, s),
                last: Validation::from_tasks(epoch, f64::NAN, l),
                kept: Validation::from_tasks(
                    (kept_epochs as f64 / k as f64).round() as usize,
                    f64::NAN,
                    of(&kept),
                ),
                source,
            }
        })
        .collect())
}

/// Median and range of the tasks' novelty, e.g. `0.41 (0.20-0.93)`.
fn novelty_summary(tasks: &[TaskMeasure]) -> String {
    let mut v: Vec<f64> = tasks.iter().map(|m| m.novelty).collect();
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.2} ({:.2}-{:.2})", v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The leave-one-source-out table (markdown), with the task-weighted mean as its last row;
/// NASWOT shows where every record of the source has its score (v2 records).
pub fn loso_markdown(rows: &[LosoRow], first_column: &str) -> String {
    let mut t = format!(
        "| {first_column} | tasks | ranker (last epoch) | before training | one fixed embedding | ImageNet16-120 accuracy | parameter count | FLOPs | NASWOT |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let cell = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.3}"));
    let mut sum = [0.0f64; 7];
    let (mut n, mut naswot_n) = (0, 0);
    for r in rows {
        let v = [
            r.last.spearman,
            r.start.spearman,
            r.last.spearman_fixed_embedding,
            r.baselines.source_benchmark,
            r.baselines.params,
            r.baselines.flops,
            r.baselines.naswot.unwrap_or(0.0),
        ];
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x * r.tasks as f64;
        }
        n += r.tasks;
        naswot_n += if r.baselines.naswot.is_some() {
            r.tasks
        } else {
            0
        };
        t += &format!(
            "| {} | {} | {} |\n",
            r.source,
            r.tasks,
            v[..6]
                .iter()
                .map(|&x| format!("{x:.3}"))
                .chain([cell(r.baselines.naswot)])
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let mean: Vec<String> = sum[..6]
        .iter()
        .map(|s| format!("{:.3}", s / n.max(1) as f64))
        .collect();
    // the NASWOT mean only when every source has it
    let naswot = (naswot_n == n && n > 0).then(|| sum[6] / n as f64);
    t += &format!(
        "| **all (task-weighted)** | {n} | {} | {} |\n",
        mean.join(" | "),
        cell(naswot)
    );
    t
}

/// Rewrites the trained mix (`W: [d_D, inputs]` on standardised embeddings, `b: [1, inputs]`)
/// into the runtime's layout on raw embeddings (`CellMix`): `W' = (W / σ)ᵀ` (`[inputs, d_D]`),
/// `b`, and the center `μ`, so that `x · (W' (D − μ) + b) = x · (Wᵀ (D − μ) / σ + b)`; with a
/// gate radius, the anchors (the training tasks' mean embeddings, raw), the scale `σ` and the
/// radius.
fn mix_to_runtime(
    tensors: &mut Vec<NamedTensor>,
    mean: &[f32],
    std: &[f32],
    gate: Option<(f64, Vec<f32>)>,
) {
    let dd = mean.len();
    let wi = tensors.iter().position(|t| t.0 == MIX).expect("mix weight");
    let w = &tensors[wi].2;
    let inputs = w.len() / dd;
    let mut wt = vec![0.0f32; inputs * dd];
    for j in 0..dd {
        for i in 0..inputs {
            wt[i * dd + j] = w[j * inputs + i] / std[j];
        }
    }
    use crate::model::cell_mix::{ANCHORS, CENTER, RADIUS, SCALE};
    tensors[wi] = (MIX.to_string(), vec![inputs, dd], wt);
    tensors.push((CENTER.into(), vec![dd], mean.to_vec()));
    if let Some((radius, anchors)) = gate {
        let n = anchors.len() / dd;
        tensors.push((ANCHORS.into(), vec![n, dd], anchors));
        tensors.push((SCALE.into(), vec![dd], std.to_vec()));
        tensors.push((RADIUS.into(), vec![1], vec![radius as f32]));
    }
}

/// Folds an input standardisation `x' = (x − μ) / σ` of the first `μ.len()` inputs into a
/// layer `y = W x' + b` (`W: [out, cols]`), so that `y = W₂ x + b₂` reads the raw inputs.
pub fn fold_standardisation(w: &mut [f32], b: &mut [f32], cols: usize, mean: &[f32], std: &[f32]) {
    for (row, bi) in w.chunks_exact_mut(cols).zip(b.iter_mut()) {
        for j in 0..mean.len() {
            row[j] /= std[j];
            *bi -= row[j] * mean[j];
        }
    }
}

fn nan0(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `log(1 + e^x)`, stably: `relu(x) + log(1 + e^−|x|)`.
fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?)
}

/// Targets for a generator that matches a ranker: for every task of `db`, the `top` cells the
/// engine's predictor scores highest over all 15,625 (exhaustive, one search with `seed` on
/// the task's feature rows), as records whose `acc` is `100 − rank` (so the best record of a
/// task is the ranker's favourite). Features and tasks are unchanged.
pub fn relabel(
    engine: &crate::search::Engine,
    db: &MetaDb,
    top: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<super::metadb::Record>> {
    let all: Vec<crate::space::Arch> = Nb201Arch::all().map(Into::into).collect();
    let mut records = Vec::new();
    for (t, task) in db.tasks.iter().enumerate() {
        let (mut x, mut labels) = (Vec::new(), Vec::new());
        for (k, &c) in task.classes.iter().enumerate() {
            for r in db.class_rows(c) {
                x.extend_from_slice(&db.features[r * db.dim..(r + 1) * db.dim]);
                labels.push(k as u32);
            }
        }
        let data = crate::dataset::Dataset::new(x, db.dim, labels, None)?;
        let cfg = crate::search::SearchConfig {
            exhaustive: true,
            seed,
            ..crate::search::SearchConfig::default()
        };
        let scores = engine.score(&data, &all, &cfg)?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        for (rank, &c) in order.iter().take(top).enumerate() {
            records.push(super::metadb::Record {
                task: t,
                arch: Nb201Arch::from_code(c).expect("code in range").to_string(),
                acc: 100.0 - rank as f64,
                ..Default::default()
            });
        }
        progress(t + 1, db.tasks.len());
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime mix on raw embeddings equals the trained one on standardised embeddings,
    /// both written out in f64 (and read back through the runtime's `CellMix`).
    #[test]
    fn the_runtime_mix_reads_raw_embeddings() {
        let (dd, inputs) = (7, PRIOR_INPUTS);
        let mut rng = Rng::new(3, 4);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let (w, b, mean, d) = (r(dd * inputs), r(inputs), r(dd), r(dd));
        let std: Vec<f32> = r(dd).iter().map(|v| 0.5 + v.abs()).collect();
        let mut t = vec![
            (MIX.to_string(), vec![dd, inputs], w.clone()),
            (MIX_BIAS.to_string(), vec![1, inputs], b.clone()),
        ];
        // one anchor, at d itself: the gate is open at d
        mix_to_runtime(&mut t, &mean, &std, Some((0.4, d.clone())));
        let store = crate::weights::WeightStore::from_tensors("mix", &runtime_shapes(t)).unwrap();
        let mix = crate::model::CellMix::load_optional(&store, dd, 7, 8)
            .unwrap()
            .unwrap();
        let v = mix.values(&d);
        for i in 0..inputs {
            let want = b[i] as f64
                + (0..dd)
                    .map(|j| w[j * inputs + i] as f64 * (d[j] - mean[j]) as f64 / std[j] as f64)
                    .sum::<f64>();
            assert!(
                (v[i] as f64 - want).abs() < 1e-4,
                "input {i}: {} vs {want}",
                v[i]
            );
        }
        // 0.4 standard deviations from the anchor in every dimension: novelty 0.4, gate e^-1
        let d2: Vec<f32> = d.iter().zip(&std).map(|(x, s)| x + 0.4 * s).collect();
        assert!((mix.novelty(&d2).unwrap() - 0.4).abs() < 1e-5);
        assert!((mix.gate(&d2) as f64 - (-1.0f64).exp()).abs() < 1e-5);
    }

    #[test]
    fn folded_standardisation_reads_raw_inputs() {
        let mut rng = Rng::new(3, 4);
        let mut r = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let (out, cols, std_cols) = (5, 7, 4);
        let (w, b, x) = (r(out * cols), r(out), r(cols));
        let mean = r(std_cols);
        let std: Vec<f32> = r(std_cols).iter().map(|v| 0.5 + v.abs()).collect();
        // the layer on standardised inputs, computed directly
        let xs: Vec<f32> = (0..cols)
            .map(|j| {
                if j < std_cols {
                    (x[j] - mean[j]) / std[j]
                } else {
                    x[j]
                }
            })
            .collect();
        let want: Vec<f32> = (0..out)
            .map(|o| b[o] + (0..cols).map(|j| w[o * cols + j] * xs[j]).sum::<f32>())
            .collect();
        let (mut w2, mut b2) = (w.clone(), b.clone());
        fold_standardisation(&mut w2, &mut b2, cols, &mean, &std);
        for o in 0..out {
            let got = b2[o] + (0..cols).map(|j| w2[o * cols + j] * x[j]).sum::<f32>();
            assert!((got - want[o]).abs() < 1e-4, "{got} vs {}", want[o]);
        }
    }

    #[test]
    fn one_hot_matches_the_cell_prior_layout() {
        let a: Nb201Arch =
            "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
                .parse()
                .unwrap();
        let x = one_hot(&a);
        // vertex k+1 has type 2 + op; the prior reads input k * 5 + (type - 2)
        let g = a.to_graph();
        for k in 0..6 {
            let t = g.types[k + 1] as usize - 2;
            assert_eq!(x[k * 5 + t], 1.0);
            assert_eq!(x[k * 5..k * 5 + 5].iter().sum::<f32>(), 1.0);
        }
    }
}
