//! The meta-database: datasets (tasks) as groups of classes of feature rows, and records of how
//! well NB201 architectures do on each task.
//!
//! # Format (a directory)
//!
//! - `features.safetensors`: `features` `[N, D]` (F16 or F32), the feature rows of all classes
//!   one class after another, and `class_offsets` `[C + 1]` (I64): class `c` owns rows
//!   `class_offsets[c] .. class_offsets[c + 1]`. Metadata: `class_names` (JSON array of `C`
//!   strings) and `feature_extractor` (which backbone and resolution made the rows).
//! - `tasks.jsonl`: one task per line, in id order: `{"classes": [3, 17, ...], "source":
//!   "fashion-mnist", "split": "train"}`; `split` is `train` or `valid` (fixed).
//! - `records.jsonl`: one record per line: `{"task": 12, "arch": "|nor_conv_3x3~0|+...",
//!   "acc": 87.5}` (accuracy in %); more fields may follow and are ignored.
//!
//! A task's split is shared by all its records, so the predictor and the generator are
//! validated on tasks they never saw.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::space::Nb201Arch;

/// Which side of the fixed split a task is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub classes: Vec<u32>,
    #[serde(default)]
    pub source: String,
    pub split: Split,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub task: usize,
    pub arch: String,
    /// Accuracy on the task's held-out images, % (the label models learn by default).
    pub acc: f64,
    /// Accuracy on the task's training images at the end of training, %, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f64>,
    /// The labelling protocol, when the record names it (v2 records do; v1 records were all
    /// labelled with the 500-images-per-class protocol of their plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Mean training loss of each epoch, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_losses: Option<Vec<f64>>,
    /// Free scores of the cell, when recorded: NASWOT on the task's own images (absent also
    /// when it is minus infinity), FLOPs and parameters of NAS-Bench-201's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naswot: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
}

/// Which accuracy of a record the models learn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Held-out accuracy (`acc`).
    Valid,
    /// Final training accuracy (`train_acc`); on CIFAR-10 it ranks cells better than the
    /// held-out accuracy under the cheap protocols (docs/calibration.md).
    Train,
    /// Training speed: minus the mean training loss of the last epoch (SoTL-E with E = 1,
    /// from `epoch_losses`), the label that ranked the calibration cells best
    /// (docs/calibration.md).
    Speed,
}

impl Label {
    /// The name `--label` takes.
    pub fn name(self) -> &'static str {
        match self {
            Label::Valid => "valid",
            Label::Train => "train",
            Label::Speed => "speed",
        }
    }
}

impl std::str::FromStr for Label {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "valid" => Ok(Label::Valid),
            "train" => Ok(Label::Train),
            "speed" => Ok(Label::Speed),
            _ => Err(Error::invalid(format!(
                "label {s}: expected valid, train or speed"
            ))),
        }
    }
}

/// A loaded meta-database.
#[derive(Clone, Debug)]
pub struct MetaDb {
    pub features: Vec<f32>,
    pub dim: usize,
    pub class_offsets: Vec<usize>,
    pub class_names: Vec<String>,
    pub feature_extractor: String,
    pub tasks: Vec<Task>,
    pub records: Vec<Record>,
    /// Which accuracy `records[i].acc` holds (see [`MetaDb::use_label`]).
    pub label: Label,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {why}", path.display()))
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

impl MetaDb {
    pub fn num_classes(&self) -> usize {
        self.class_offsets.len() - 1
    }

    /// Rows of class `c`.
    pub fn class_rows(&self, c: u32) -> std::ops::Range<usize> {
        self.class_offsets[c as usize]..self.class_offsets[c as usize + 1]
    }

    /// Reads and checks a database directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let fpath = dir.join("features.safetensors");
        let bytes = std::fs::read(&fpath).map_err(|e| Error::io(&fpath, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(&fpath, format!("not a valid safetensors file: {e}")))?;
        let f = st
            .tensor("features")
            .map_err(|_| bad(&fpath, "no `features` tensor"))?;
        let (n, dim) = match *f.shape() {
            [n, d] => (n, d),
            ref s => {
                return Err(bad(
                    &fpath,
                    format!("`features` has shape {s:?}; [N, D] expected"),
                ))
            }
        };
        let features: Vec<f32> = match f.dtype() {
            safetensors::Dtype::F16 => f
                .data()
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            safetensors::Dtype::F32 => f
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            d => {
                return Err(bad(
                    &fpath,
                    format!("`features` is {d:?}; F16 or F32 expected"),
                ))
            }
        };
        let o = st
            .tensor("class_offsets")
            .map_err(|_| bad(&fpath, "no `class_offsets` tensor"))?;
        if o.dtype() != safetensors::Dtype::I64 || o.shape().len() != 1 {
            return Err(bad(&fpath, "`class_offsets` must be a 1-D I64 tensor"));
        }
        let offsets: Vec<i64> = o
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if offsets.len() < 2
            || offsets[0] != 0
            || *offsets.last().unwrap() != n as i64
            || offsets.windows(2).any(|w| w[1] <= w[0])
        {
            return Err(bad(
                &fpath,
                "`class_offsets` must rise strictly from 0 to the number of rows (no empty class)",
            ));
        }
        let class_offsets: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
        let classes = class_offsets.len() - 1;
        let meta = safetensors::SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default();
        let class_names: Vec<String> = match meta.get("class_names") {
            Some(s) => {
                serde_json::from_str(s).map_err(|e| bad(&fpath, format!("class_names: {e}")))?
            }
            None => (0..classes).map(|c| c.to_string()).collect(),
        };
        if class_names.len() != classes {
            return Err(bad(
                &fpath,
                format!("{} class names for {classes} classes", class_names.len()),
            ));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                &fpath,
                format!("feature row {} holds a non-finite value", i / dim),
            ));
        }
        let tpath = dir.join("tasks.jsonl");
        let tasks: Vec<Task> = read_jsonl(&tpath)?;
        for (i, t) in tasks.iter().enumerate() {
            if t.classes.is_empty() {
                return Err(bad(&tpath, format!("task {i} has no classes")));
            }
            if let Some(&c) = t.classes.iter().find(|&&c| c as usize >= classes) {
                return Err(bad(
                    &tpath,
                    format!("task {i} names class {c}; there are {classes}"),
                ));
            }
        }
        let rpath = dir.join("records.jsonl");
        let records: Vec<Record> = read_jsonl(&rpath)?;
        for (i, r) in records.iter().enumerate() {
            if r.task >= tasks.len() {
                return Err(bad(
                    &rpath,
                    format!(
                        "record {i} refers to task {}; there are {}",
                        r.task,
                        tasks.len()
                    ),
                ));
            }
            if !r.acc.is_finite() {
                return Err(bad(&rpath, format!("record {i} has accuracy {}", r.acc)));
            }
            r.arch
                .parse::<Nb201Arch>()
                .map_err(|e| bad(&rpath, format!("record {i}: {e}")))?;
        }
        Ok(MetaDb {
            features,
            dim,
            class_offsets,
            class_names,
            feature_extractor: meta.get("feature_extractor").cloned().unwrap_or_default(),
            tasks,
            records,
            label: Label::Valid,
        })
    }

    /// Writes the database into `dir` (features as f16).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        use safetensors::tensor::TensorView;
        let n = self.class_offsets.last().copied().unwrap_or(0);
        let fb: Vec<u8> = self
            .features
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let ob: Vec<u8> = self
            .class_offsets
            .iter()
            .flat_map(|&o| (o as i64).to_le_bytes())
            .collect();
        let views = vec![
            (
                "features".to_string(),
                TensorView::new(safetensors::Dtype::F16, vec![n, self.dim], &fb).expect("shape"),
            ),
            (
                "class_offsets".to_string(),
                TensorView::new(safetensors::Dtype::I64, vec![self.class_offsets.len()], &ob)
                    .expect("shape"),
            ),
        ];
        let meta = HashMap::from([
            (
                "class_names".to_string(),
                serde_json::to_string(&self.class_names).expect("names"),
            ),
            (
                "feature_extractor".to_string(),
                self.feature_extractor.clone(),
            ),
        ]);
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(e.to_string()))?;
        crate::util::write_atomic(&dir.join("features.safetensors"), &bytes)?;
        let jl = |v: Vec<String>| v.join("\n") + "\n";
        crate::util::write_atomic(
            &dir.join("tasks.jsonl"),
            jl(self
                .tasks
                .iter()
                .map(|t| serde_json::to_string(t).expect("task"))
                .collect())
            .as_bytes(),
        )?;
        crate::util::write_atomic(
            &dir.join("records.jsonl"),
            jl(self
                .records
                .iter()
                .map(|r| serde_json::to_string(r).expect("record"))
                .collect())
            .as_bytes(),
        )?;
        Ok(())
    }

    /// A set sample of task `t`: `per_class` rows of each of its classes (without replacement
    /// when the class is large enough), class after class, `[C_t · per_class, D]`.
    pub fn sample_task(&self, t: usize, per_class: usize, rng: &mut Rng) -> Vec<f32> {
        let task = &self.tasks[t];
        let mut x = Vec::with_capacity(task.classes.len() * per_class * self.dim);
        let (mut scratch, mut picked) = (Vec::new(), Vec::new());
        for &c in &task.classes {
            let rows = self.class_rows(c);
            let n = rows.len();
            picked.clear();
            if n >= per_class {
                rng.sample_without_replacement(n, per_class, &mut scratch, &mut picked);
            } else {
                picked.extend((0..per_class).map(|_| rng.below(n as u64) as u32));
            }
            for &r in &picked {
                let row = rows.start + r as usize;
                x.extend_from_slice(&self.features[row * self.dim..(row + 1) * self.dim]);
            }
        }
        x
    }

    /// Record indices of one split.
    pub fn records_of(&self, split: Split) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| self.tasks[self.records[i].task].split == split)
            .collect()
    }

    /// Makes `label` the accuracy every record is learned from (`acc`); every record must
    /// carry it.
    pub fn use_label(&mut self, label: Label) -> Result<()> {
        if label == self.label {
            return Ok(());
        }
        if self.label != Label::Valid {
            return Err(Error::invalid(
                "the held-out accuracies were replaced; reload the database",
            ));
        }
        let values = self
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v = match label {
                    Label::Valid => Some(r.acc),
                    Label::Train => r.train_acc,
                    Label::Speed => r.epoch_losses.as_ref().and_then(|l| l.last()).map(|l| -l),
                };
                v.filter(|a| a.is_finite()).ok_or_else(|| {
                    Error::invalid(format!("record {i} has no {} label", label.name()))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        for (r, a) in self.records.iter_mut().zip(values) {
            r.acc = a;
        }
        self.label = label;
        Ok(())
    }

    /// For the generator: the best `k` records of each task of `split` (the first in file
    /// order on ties), in file order (`k = 1`: the best record of each task).
    pub fn top_per_task(&self, split: Split, k: usize) -> Vec<usize> {
        let mut by_task: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, r) in self.records.iter().enumerate() {
            if self.tasks[r.task].split == split {
                by_task.entry(r.task).or_default().push(i);
            }
        }
        let mut out = Vec::new();
        for (_, mut v) in by_task {
            v.sort_by(|&a, &b| {
                self.records[b]
                    .acc
                    .total_cmp(&self.records[a].acc)
                    .then(a.cmp(&b))
            });
            out.extend(v.into_iter().take(k.max(1)));
        }
        out.sort_unstable();
        out
    }

    /// Mean and sample standard deviation of the accuracies of the training records.
    pub fn acc_stats(&self) -> (f64, f64) {
        let v: Vec<f64> = self
            .records_of(Split::Train)
            .iter()
            .map(|&i| self.records[i].acc)
            .collect();
        crate::stats::mean_std(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(records: Vec<Record>) -> MetaDb {
        MetaDb {
            features: Vec::new(),
            dim: 1,
            class_offsets: vec![0],
            class_names: Vec::new(),
            feature_extractor: String::new(),
            tasks: vec![Task {
                classes: vec![0],
                source: String::new(),
                split: Split::Train,
            }],
            records,
            label: Label::Valid,
        }
    }

    fn rec(arch: &str, acc: f64, train_acc: Option<f64>) -> Record {
        Record {
            task: 0,
            arch: arch.into(),
            acc,
            train_acc,
            ..Default::default()
        }
    }

    #[test]
    fn the_training_label_replaces_the_held_out_one() {
        let mut d = db(vec![rec("a", 80.0, Some(95.0)), rec("b", 85.0, Some(90.0))]);
        assert_eq!(d.top_per_task(Split::Train, 1), vec![1]);
        d.use_label(Label::Train).unwrap();
        assert_eq!(d.records[0].acc, 95.0);
        assert_eq!(d.top_per_task(Split::Train, 1), vec![0]);
        assert_eq!(d.top_per_task(Split::Train, 2), vec![0, 1]);
        // records without a training accuracy cannot be learned that way
        let mut d = db(vec![rec("a", 80.0, Some(95.0)), rec("b", 85.0, None)]);
        let e = d.use_label(Label::Train).unwrap_err();
        assert!(e.to_string().contains("record 1"), "{e}");
        let mut d = db(vec![rec("a", 80.0, None)]);
        d.use_label(Label::Valid).unwrap();
        assert_eq!(d.records[0].acc, 80.0);
        // once replaced, the held-out accuracies are gone
        let mut d = db(vec![rec("a", 80.0, Some(95.0))]);
        d.use_label(Label::Train).unwrap();
        d.use_label(Label::Train).unwrap();
        assert_eq!((d.records[0].acc, d.label), (95.0, Label::Train));
        assert!(d.use_label(Label::Valid).is_err());
        assert!("other".parse::<Label>().is_err());
        for l in [Label::Valid, Label::Train, Label::Speed] {
            assert_eq!(l.name().parse::<Label>().unwrap(), l);
        }
    }

    #[test]
    fn the_speed_label_is_minus_the_last_epoch_loss() {
        let with_losses = |arch: &str, l: Option<Vec<f64>>| Record {
            epoch_losses: l,
            ..rec(arch, 50.0, Some(60.0))
        };
        let mut d = db(vec![
            with_losses("a", Some(vec![1.0, 0.5, 0.25])),
            with_losses("b", Some(vec![0.5, 0.25, 0.125])),
        ]);
        d.use_label(Label::Speed).unwrap();
        assert_eq!((d.records[0].acc, d.records[1].acc), (-0.25, -0.125));
        assert_eq!(d.top_per_task(Split::Train, 1), vec![1]);
        // a speed label cannot be switched to the training accuracy afterwards
        assert!(d.use_label(Label::Train).is_err());
        let mut d = db(vec![
            with_losses("a", Some(vec![1.0])),
            with_losses("b", None),
        ]);
        let e = d.use_label(Label::Speed).unwrap_err();
        assert!(
            e.to_string().contains("record 1") && e.to_string().contains("speed"),
            "{e}"
        );
        let mut d = db(vec![with_losses("a", Some(vec![]))]);
        assert!(d.use_label(Label::Speed).is_err());
    }

    #[test]
    fn records_read_with_and_without_a_training_accuracy() {
        let r: Record = serde_json::from_str(
            r#"{"task":1,"arch":"x","acc":90.5,"train_acc":93.0,"seconds":2.0}"#,
        )
        .unwrap();
        assert_eq!(r.train_acc, Some(93.0));
        let r: Record = serde_json::from_str(r#"{"task":1,"arch":"x","acc":90.5}"#).unwrap();
        assert_eq!(r.train_acc, None);
    }
}
