//! The meta-training loops: epochs over the meta-database, validation on the held-out tasks,
//! checkpoints after every epoch (a run resumes from its last checkpoint), and the export of a
//! weights directory the runtime loads.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::meta::{self, Adam, Params, Plateau};
use super::metadb::{MetaDb, Split};
use crate::error::{Error, Result};
use crate::model::dims::{GeneratorDims, PredictorDims};
use crate::model::inventory;
use crate::model::Dag;
use crate::nn::reference::RefWeights;
use crate::rng::Rng;
use crate::space::Nb201Arch;

/// Which model a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Generator,
    Predictor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Generator => "generator",
            Kind::Predictor => "predictor",
        }
    }
}

/// Hyper-parameters (official values by default).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetaTrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Rows per class in a set sample.
    pub per_class: usize,
    pub seed: u64,
    pub plateau_factor: f64,
    pub plateau_patience: usize,
    /// How the predictor's accuracy targets are standardised.
    #[serde(default)]
    pub target: TargetNorm,
    /// Generator: the best this many records of each task are its targets (official: 1).
    #[serde(default = "one")]
    pub targets_per_task: usize,
}

fn one() -> usize {
    1
}

/// Standardisation of the predictor's targets, `((acc - mean) / std) / 100`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetNorm {
    /// Mean and spread of all training records (the official objective): the loss is then
    /// dominated by how hard each task is.
    #[default]
    Global,
    /// Mean and spread of each task's own records: the loss only sees how the cells of a task
    /// rank against each other, which is all the search uses.
    Task,
}

impl std::str::FromStr for TargetNorm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "global" => Ok(TargetNorm::Global),
            "task" => Ok(TargetNorm::Task),
            _ => Err(Error::invalid(format!(
                "unknown target standardisation {s:?} (global or task)"
            ))),
        }
    }
}

impl Default for MetaTrainConfig {
    fn default() -> Self {
        MetaTrainConfig {
            epochs: 400,
            batch: 32,
            lr: 1e-4,
            per_class: 20,
            seed: 333,
            plateau_factor: 0.1,
            plateau_patience: 10,
            target: TargetNorm::Global,
            targets_per_task: 1,
        }
    }
}

/// One epoch's log line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    /// Mean training loss per item (generator: total; predictor: squared error).
    pub train_loss: f64,
    pub valid_loss: f64,
    /// Predictor only: correlations on the validation records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_pearson: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_spearman: Option<f64>,
    /// Generator only: mean reconstruction loss and KL per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_recon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_kld: Option<f64>,
    pub seconds: f64,
}

/// Progress within a run.
#[derive(Clone, Copy, Debug)]
pub enum TrainProgress<'a> {
    Batch {
        epoch: usize,
        done: usize,
        total: usize,
    },
    Epoch(&'a EpochLog),
}

/// The loop state kept in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopState {
    kind: Kind,
    epoch: usize,
    plateau: Plateau,
    history: Vec<EpochLog>,
    /// The predictor's best validation Pearson so far (none before its first epoch, and never
    /// for the generator); an option because JSON has no infinities.
    #[serde(default)]
    best_pearson: Option<f64>,
    config: MetaTrainConfig,
}

/// Official-size generator for features of width `feat_dim`.
pub fn generator_dims(feat_dim: usize) -> GeneratorDims {
    GeneratorDims {
        set: inventory::official_set_dims(feat_dim),
        ..inventory::nb201_generator_dims()
    }
}

/// Official-size predictor for features of width `feat_dim`.
pub fn predictor_dims(feat_dim: usize) -> PredictorDims {
    PredictorDims {
        set: inventory::official_set_dims(feat_dim),
        ..inventory::nb201_predictor_dims()
    }
}

fn graphs_of(db: &MetaDb, items: &[usize]) -> Result<Vec<Dag>> {
    items
        .iter()
        .map(|&i| Ok(db.records[i].arch.parse::<Nb201Arch>()?.to_graph()))
        .collect()
}

/// Set samples of the tasks of `items` (records), one tensor per task.
fn samples(db: &MetaDb, items: &[usize], per_class: usize, rng: &mut Rng) -> Result<Vec<Tensor>> {
    items
        .iter()
        .map(|&i| {
            let t = db.records[i].task;
            let x = db.sample_task(t, per_class, rng);
            Ok(Tensor::from_vec(
                x,
                (db.tasks[t].classes.len() * per_class, db.dim),
                &Device::Cpu,
            )?)
        })
        .collect()
}

/// Mean and spread of the targets of each task under `norm` (a task whose records all have
/// one accuracy gets spread 1).
fn target_stats(db: &MetaDb, norm: TargetNorm) -> Vec<(f64, f64)> {
    match norm {
        TargetNorm::Global => vec![db.acc_stats(); db.tasks.len()],
        TargetNorm::Task => {
            let mut by_task = vec![Vec::new(); db.tasks.len()];
            for r in &db.records {
                by_task[r.task].push(r.acc);
            }
            by_task
                .iter()
                .map(|v| {
                    let (m, s) = crate::stats::mean_std(v);
                    (m, if s > 1e-9 { s } else { 1.0 })
                })
                .collect()
        }
    }
}

fn ckpt_path(out: &Path, kind: Kind) -> std::path::PathBuf {
    out.join(format!("{}.ckpt.safetensors", kind.name()))
}

/// Trains one model on `db`; `init` gives the starting variables (ignored when a checkpoint of
/// this kind exists in `out`, which is then resumed). Writes `out/<kind>.safetensors` (for the
/// predictor, the epoch with the best validation Pearson) and `out/<kind>.json`.
///
/// Speed: candle's CPU matrix product looks up the thread count on every call (reading the
/// cgroup and CPU files unless `RAYON_NUM_THREADS` is set), which dominates the many small
/// products of meta-training. Set `RAYON_NUM_THREADS` before the process starts threads (the
/// `metad2a` command does) for several times faster training; the library never changes the
/// environment itself.
pub fn train(
    kind: Kind,
    db: &MetaDb,
    init: Params,
    cfg: &MetaTrainConfig,
    out: &Path,
    progress: &mut dyn FnMut(TrainProgress),
) -> Result<Vec<EpochLog>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ckpt = ckpt_path(out, kind);
    let (params, mut adam, mut state) = resume_or_start(kind, init, cfg, &ckpt)?;
    let (train_items, valid_items) = match kind {
        Kind::Generator => (
            db.top_per_task(Split::Train, cfg.targets_per_task),
            db.top_per_task(Split::Valid, cfg.targets_per_task),
        ),
        Kind::Predictor => (db.records_of(Split::Train), db.records_of(Split::Valid)),
    };
    if train_items.is_empty() {
        return Err(Error::invalid("the meta-database has no training records"));
    }
    let stats = target_stats(db, cfg.target);
    let target = |i: usize| {
        let (m, s) = stats[db.records[i].task];
        ((db.records[i].acc - m) / s / 100.0) as f32
    };
    let pass = Pass {
        kind,
        db,
        cfg,
        target: &target,
    };
    while state.epoch < cfg.epochs {
        let epoch = state.epoch + 1;
        let t0 = Instant::now();
        let (train_loss, recon, kld) =
            pass.train_epoch(epoch, &train_items, &params, &mut adam, progress)?;
        adam.lr = state.plateau.step(train_loss, adam.lr);
        let (valid_loss, pearson, spearman) = pass.validate(epoch, &valid_items, &params)?;
        let log = EpochLog {
            epoch,
            lr: adam.lr,
            train_loss,
            valid_loss,
            valid_pearson: pearson,
            valid_spearman: spearman,
            train_recon: (kind == Kind::Generator).then_some(recon),
            train_kld: (kind == Kind::Generator).then_some(kld),
            seconds: t0.elapsed().as_secs_f64(),
        };
        // the predictor keeps its best-Pearson epoch (the generator its last)
        let export_now = match (kind, pearson) {
            (Kind::Predictor, Some(p))
                if p.is_finite() && state.best_pearson.is_none_or(|b| p > b) =>
            {
                state.best_pearson = Some(p);
                true
            }
            (Kind::Predictor, _) => valid_items.is_empty(),
            (Kind::Generator, _) => true,
        };
        if export_now {
            export_model(kind, &params, out, db, cfg, &log)?;
        }
        state.history.push(log.clone());
        state.epoch = epoch;
        meta::save_checkpoint(
            &ckpt,
            &params,
            &adam,
            &serde_json::to_value(&state).expect("state serialises"),
        )?;
        progress(TrainProgress::Epoch(&log));
    }
    Ok(state.history)
}

/// The checkpoint's variables, optimiser and loop state when `ckpt` exists, else a fresh start
/// from `init`.
fn resume_or_start(
    kind: Kind,
    init: Params,
    cfg: &MetaTrainConfig,
    ckpt: &Path,
) -> Result<(Params, Adam, LoopState)> {
    if !ckpt.is_file() {
        let s = LoopState {
            kind,
            epoch: 0,
            plateau: Plateau::new(cfg.plateau_factor, cfg.plateau_patience),
            history: Vec::new(),
            best_pearson: None,
            config: cfg.clone(),
        };
        return Ok((init, Adam::new(cfg.lr), s));
    }
    let (p, a, s) = meta::load_checkpoint(ckpt)?;
    let s: LoopState = serde_json::from_value(s)
        .map_err(|e| Error::invalid(format!("{}: {e}", ckpt.display())))?;
    if s.kind != kind {
        return Err(Error::invalid(format!(
            "{} is a {} checkpoint",
            ckpt.display(),
            s.kind.name()
        )));
    }
    Ok((p, a, s))
}

/// What every batch of a training run shares.
struct Pass<'a> {
    kind: Kind,
    db: &'a MetaDb,
    cfg: &'a MetaTrainConfig,
    /// The normalised accuracy a predictor learns for record `i`.
    target: &'a dyn Fn(usize) -> f32,
}

/// One batch's forward pass.
struct BatchOut {
    /// Summed over the batch: what training minimises.
    loss: Tensor,
    /// The generator's reconstruction and KL terms (0 for the predictor).
    recon: f64,
    kld: f64,
    /// The predictor's predictions (empty for the generator).
    preds: Vec<f32>,
}

impl Pass<'_> {
    /// The forward pass of `items`, set samples drawn from `rng`; `noise` draws the
    /// generator's reparameterisation noise from it too (training), else the latent mean is
    /// decoded (validation).
    fn forward(
        &self,
        w: &RefWeights,
        items: &[usize],
        rng: &mut Rng,
        noise: bool,
    ) -> Result<BatchOut> {
        let (heads, nvt, max_n) = (
            crate::model::HEADS,
            crate::space::nb201::NUM_TYPES,
            crate::space::nb201::NUM_VERTICES,
        );
        let per_class = self.cfg.per_class;
        let xs = samples(self.db, items, per_class, rng)?;
        let graphs = graphs_of(self.db, items)?;
        Ok(match self.kind {
            Kind::Generator => {
                let v = meta::set_embeddings(w, &xs, per_class, heads)?;
                let (mu, logvar) = (w.linear("fc1", &v)?, w.linear("fc2", &v)?);
                let eps = if noise {
                    Some(meta::normal((items.len(), mu.dim(1)?), rng)?)
                } else {
                    None
                };
                let (loss, recon, kld) =
                    meta::generator_loss(w, &mu, &logvar, &graphs, nvt, max_n, eps.as_ref())?;
                BatchOut {
                    loss,
                    recon: recon.to_scalar::<f32>()? as f64,
                    kld: kld.to_scalar::<f32>()? as f64,
                    preds: Vec::new(),
                }
            }
            Kind::Predictor => {
                let y = meta::predictor_forward(w, &xs, &graphs, per_class, heads, nvt, max_n)?;
                let t = Tensor::from_vec(
                    items.iter().map(|&i| (self.target)(i)).collect::<Vec<_>>(),
                    items.len(),
                    &Device::Cpu,
                )?;
                BatchOut {
                    loss: meta::mse_sum(&y, &t)?,
                    recon: 0.0,
                    kld: 0.0,
                    preds: y.to_vec1::<f32>()?,
                }
            }
        })
    }

    /// One epoch over `items` in a seeded order: the mean loss and, for the generator, the
    /// mean reconstruction and KL terms.
    fn train_epoch(
        &self,
        epoch: usize,
        items: &[usize],
        params: &Params,
        adam: &mut Adam,
        progress: &mut dyn FnMut(TrainProgress),
    ) -> Result<(f64, f64, f64)> {
        let mut rng = Rng::new(self.cfg.seed, epoch as u64);
        let mut order = items.to_vec();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let (mut sum, mut recon, mut kld) = (0.0f64, 0.0f64, 0.0f64);
        for (bi, chunk) in order.chunks(self.cfg.batch).enumerate() {
            let w = params.weights();
            let b = self.forward(&w, chunk, &mut rng, true)?;
            sum += b.loss.to_scalar::<f32>()? as f64;
            (recon, kld) = (recon + b.recon, kld + b.kld);
            let grads = b.loss.backward()?;
            adam.update(params, &grads)?;
            progress(TrainProgress::Batch {
                epoch,
                done: (bi * self.cfg.batch + chunk.len()).min(order.len()),
                total: order.len(),
            });
        }
        let n = order.len() as f64;
        let train_loss = sum / n;
        if !train_loss.is_finite() {
            return Err(Error::invalid(format!(
                "{} training diverged at epoch {epoch} (loss {train_loss})",
                self.kind.name()
            )));
        }
        Ok((train_loss, recon / n, kld / n))
    }

    /// Validation on held-out tasks, with its own sample stream: the mean loss and, for the
    /// predictor, the Pearson and Spearman correlations of its predictions.
    fn validate(
        &self,
        epoch: usize,
        items: &[usize],
        params: &Params,
    ) -> Result<(f64, Option<f64>, Option<f64>)> {
        let mut rng = Rng::new(self.cfg.seed ^ 0x5eed, epoch as u64);
        let (mut sum, mut preds, mut truths) = (0.0f64, Vec::new(), Vec::new());
        let w = params.weights();
        for chunk in items.chunks(self.cfg.batch) {
            let b = self.forward(&w, chunk, &mut rng, false)?;
            match self.kind {
                Kind::Generator => sum += b.loss.to_scalar::<f32>()? as f64,
                Kind::Predictor => {
                    for (&i, &p) in chunk.iter().zip(&b.preds) {
                        let t = (self.target)(i);
                        sum += ((p - t) as f64).powi(2);
                        preds.push(p as f64);
                        truths.push(t as f64);
                    }
                }
            }
        }
        let loss = sum / items.len().max(1) as f64;
        Ok(if self.kind == Kind::Predictor && preds.len() > 1 {
            (
                loss,
                Some(crate::stats::pearson(&truths, &preds)),
                Some(crate::stats::spearman(&truths, &preds)),
            )
        } else {
            (loss, None, None)
        })
    }
}

/// Tensors of the official checkpoints the runtime never reads (not exported).
fn unused(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Generator => crate::weights::import::GENERATOR_UNUSED,
        Kind::Predictor => crate::weights::import::PREDICTOR_UNUSED,
    }
}

/// Writes `out/<kind>.safetensors` (used tensors, f32) and `out/<kind>.json` (what it is).
fn export_model(
    kind: Kind,
    params: &Params,
    out: &Path,
    db: &MetaDb,
    cfg: &MetaTrainConfig,
    log: &EpochLog,
) -> Result<()> {
    let values: Vec<_> = params
        .values()?
        .into_iter()
        .filter(|(n, _, _)| !unused(kind).iter().any(|p| n.starts_with(p)))
        .collect();
    let meta =
        std::collections::HashMap::from([("heads".to_string(), crate::model::HEADS.to_string())]);
    let bytes = crate::weights::serialize(
        &values,
        crate::weights::import::ExportDtype::F32,
        Some(meta),
    )?;
    crate::util::write_atomic(&out.join(format!("{}.safetensors", kind.name())), &bytes)?;
    let (m, s) = db.acc_stats();
    let info = serde_json::json!({
        "model": kind.name(),
        "sha256": crate::weights::sha256_hex(&bytes),
        "epoch": log.epoch,
        "metrics": log,
        "config": cfg,
        "acc_mean": m,
        "acc_std": s,
        "feature_extractor": db.feature_extractor,
        "tasks": db.tasks.len(),
        "records": db.records.len(),
        "label": db.label.name(),
    });
    crate::util::write_atomic(
        &out.join(format!("{}.json", kind.name())),
        format!("{info:#}\n").as_bytes(),
    )
}

/// Fresh variables for `kind` with PyTorch's initialisation.
pub fn init_params(kind: Kind, feat_dim: usize, seed: u64) -> Result<Params> {
    let inv = match kind {
        Kind::Generator => inventory::generator(&generator_dims(feat_dim)),
        Kind::Predictor => inventory::predictor(&predictor_dims(feat_dim)),
    };
    Params::from_values(&inventory::pytorch_init(&inv, seed))
}

/// Where a trained weights directory came from: the meta-database (a description and its
/// files, with sha256), the licence, and the command of the step that completes it.
pub struct TrainedFrom<'a> {
    pub data: &'a str,
    pub inputs: Vec<crate::weights::manifest::InputFile>,
    pub licence: &'a str,
    pub command: &'a str,
}

/// Completes a weights directory trained here: once both `generator.safetensors` and
/// `predictor.safetensors` exist, computes the graph-embedding cache and writes `manifest.json`
/// (sizes, sha256, data, commands, commit, licence, accuracy normalisation). The command is
/// the two models' own commands (the `command` of `<kind>.json`) when both are recorded.
pub fn write_manifest(dir: &Path, from: &TrainedFrom) -> Result<crate::weights::Manifest> {
    use crate::weights::manifest::{Manifest, ModelEntry, Provenance, FORMAT, VERSION};
    use crate::weights::WeightStore;
    let mut entries = Vec::new();
    for kind in [Kind::Generator, Kind::Predictor] {
        let file = format!("{}.safetensors", kind.name());
        let bytes = std::fs::read(dir.join(&file)).map_err(|e| Error::io(dir.join(&file), e))?;
        let store = WeightStore::from_bytes(file.clone(), bytes.clone())?;
        let dims = match kind {
            Kind::Generator => serde_json::to_value(crate::model::Generator::load(&store)?.dims),
            Kind::Predictor => serde_json::to_value(crate::model::Predictor::load(&store)?.dims),
        }
        .expect("dims serialise");
        let info: serde_json::Value =
            std::fs::read_to_string(dir.join(format!("{}.json", kind.name())))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        entries.push((
            ModelEntry::describe(
                &file,
                &bytes,
                dims,
                unused(kind).iter().map(|p| format!("{p}*")).collect(),
            )?,
            info,
        ));
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let (pred_entry, pred_info) = entries.pop().expect("two entries");
    let (gen_entry, gen_info) = entries.pop().expect("two entries");
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("acc_mean".into(), pred_info["acc_mean"].clone());
    extra.insert("acc_std".into(), pred_info["acc_std"].clone());
    extra.insert("generator_training".into(), gen_info.clone());
    extra.insert("predictor_training".into(), pred_info.clone());
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        space: crate::space::Space::Nb201,
        dtype: "f32".into(),
        feature_extractor: pred_info["feature_extractor"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        generator: gen_entry,
        predictor: pred_entry,
        provenance: Provenance {
            source: "meta-trained by metad2a train".into(),
            inputs: from.inputs.clone(),
            command: match (gen_info["command"].as_str(), pred_info["command"].as_str()) {
                (Some(g), Some(p)) => format!("{g} && {p}"),
                _ => from.command.into(),
            },
            tool: format!("metad2a {}", env!("CARGO_PKG_VERSION")),
            licence: from.licence.into(),
            data: from.data.into(),
            commit,
        },
        extra,
    };
    crate::search::Engine::build_graph_cache_with(dir, &manifest.predictor, &mut |_, _| {})?;
    manifest.write(dir)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metadb::{Label, Record, Task};

    fn db(accs: &[&[f64]]) -> MetaDb {
        MetaDb {
            features: vec![0.0; 4],
            dim: 2,
            class_offsets: vec![0, 1, 2],
            class_names: vec!["a".into(), "b".into()],
            feature_extractor: "test".into(),
            tasks: accs
                .iter()
                .map(|_| Task {
                    classes: vec![0, 1],
                    source: "test".into(),
                    split: Split::Train,
                })
                .collect(),
            records: accs
                .iter()
                .enumerate()
                .flat_map(|(t, a)| {
                    a.iter().map(move |&acc| Record {
                        task: t,
                        arch: String::new(),
                        acc,
                        ..Default::default()
                    })
                })
                .collect(),
            label: Label::Valid,
        }
    }

    #[test]
    fn task_standardisation_uses_each_tasks_own_records() {
        let d = db(&[&[10.0, 20.0, 30.0], &[80.0, 90.0], &[55.0, 55.0]]);
        let task = target_stats(&d, TargetNorm::Task);
        // sample standard deviations worked by hand: [10, 20, 30] -> 10; [80, 90] -> 7.0711
        assert_eq!(task[0], (20.0, 10.0));
        assert!((task[1].0 - 85.0).abs() < 1e-12 && (task[1].1 - 50f64.sqrt()).abs() < 1e-12);
        assert_eq!(task[2], (55.0, 1.0), "a flat task keeps spread 1");
        let global = target_stats(&d, TargetNorm::Global);
        assert!(global.iter().all(|&g| g == d.acc_stats()));
        assert!((global[0].0 - 48.571_428_571).abs() < 1e-6);
        assert_eq!("task".parse::<TargetNorm>().unwrap(), TargetNorm::Task);
        assert!("both".parse::<TargetNorm>().is_err());
    }
}
