//! Training an NB201 cell network on an image classification task: SGD with Nesterov momentum,
//! weight decay, a cosine learning-rate schedule stepped per batch, random horizontal flips;
//! deterministic for a seed.

use std::time::Instant;

use super::cell_net::{CellNet, NetConfig};
use crate::error::{Error, Result};
use crate::features::image::Image;
use crate::rng::Rng;
use crate::space::Nb201Arch;

/// Images prepared for training: `[n, r, r, 3]`, normalised per channel.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub data: Vec<f32>,
    pub labels: Vec<u32>,
    pub resolution: usize,
    pub classes: usize,
}

/// Per-channel normalisation of CIFAR-10 (mean, std of 0..1 pixel values).
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

impl ImageSet {
    /// Resizes each image to `resolution` and normalises it with `mean`/`std` (per channel, for
    /// pixel values in 0..1).
    pub fn new(
        images: &[Image],
        labels: &[u32],
        classes: usize,
        resolution: usize,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Self {
        let mut data = Vec::with_capacity(images.len() * resolution * resolution * 3);
        for img in images {
            let r = img.resize(resolution, resolution);
            for px in r.rgb.chunks_exact(3) {
                for c in 0..3 {
                    data.push((px[c] as f32 / 255.0 - mean[c]) / std[c]);
                }
            }
        }
        ImageSet {
            data,
            labels: labels.to_vec(),
            resolution,
            classes,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image(&self, i: usize) -> &[f32] {
        let s = self.resolution * self.resolution * 3;
        &self.data[i * s..(i + 1) * s]
    }
}

/// How to train.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TrainConfig {
    pub net: NetConfig,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// Random horizontal flips.
    pub flip: bool,
    pub seed: u64,
    /// Parts of each batch processed on separate threads. Results depend on the seed and on
    /// this number (it fixes the order of the floating-point sums), not on the machine.
    pub shards: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            net: NetConfig {
                channels: 8,
                cells: 1,
                classes: 10,
            },
            epochs: 10,
            batch: 64,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            flip: true,
            seed: 0,
            shards: 2,
        }
    }
}

/// What a training run measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TrainReport {
    /// Accuracy on the training images during the last epoch (training mode), in %.
    pub train_acc: f64,
    /// Accuracy on the validation images (inference mode), in %.
    pub valid_acc: f64,
    pub final_loss: f64,
    /// Mean training loss of each epoch (their sum is a training-speed estimate).
    pub epoch_losses: Vec<f64>,
    pub seconds: f64,
    /// Training images processed per second.
    pub images_per_second: f64,
}

/// Trains `arch` on `train` and evaluates it on `valid`.
pub fn train_cell(
    arch: &Nb201Arch,
    train: &ImageSet,
    valid: &ImageSet,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    if train.is_empty() || valid.is_empty() || cfg.batch == 0 || cfg.epochs == 0 {
        return Err(Error::invalid(
            "training needs images, a batch size and epochs",
        ));
    }
    if train.resolution != valid.resolution || !train.resolution.is_multiple_of(4) {
        return Err(Error::invalid(
            "train and valid images need one resolution, a multiple of 4",
        ));
    }
    let start = Instant::now();
    let mut net = CellNet::new(arch, cfg.net, cfg.seed);
    let r = train.resolution;
    let per = r * r * 3;
    let steps_per_epoch = train.len().div_ceil(cfg.batch);
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut velocity = vec![0.0f32; net.num_params()];
    let mut rng = Rng::new(cfg.seed, 0x7a11);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut step, mut last_correct, mut last_seen, mut last_loss) =
        (0usize, 0usize, 0usize, 0.0f64);
    let mut batch = Vec::with_capacity(cfg.batch * per);
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    let mut tapes: Vec<super::cell_net::Tape> = (0..cfg.shards.max(1))
        .map(|_| super::cell_net::Tape::new())
        .collect();
    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let (mut correct, mut seen, mut loss_sum) = (0usize, 0usize, 0.0f64);
        for idx in order.chunks(cfg.batch) {
            batch.clear();
            let mut labels = Vec::with_capacity(idx.len());
            for &i in idx {
                let img = train.image(i);
                if cfg.flip && rng.next_f32() < 0.5 {
                    for y in 0..r {
                        for x in (0..r).rev() {
                            batch.extend_from_slice(&img[(y * r + x) * 3..(y * r + x) * 3 + 3]);
                        }
                    }
                } else {
                    batch.extend_from_slice(img);
                }
                labels.push(train.labels[i]);
            }
            let logits = net.forward(&batch, idx.len(), r, r, true, &mut tapes);
            let (loss, dlogits, c) = super::ops::cross_entropy(&logits, &labels, cfg.net.classes);
            let grads = net.backward(&mut tapes, &dlogits);
            let lr = 0.5
                * cfg.lr
                * (1.0 + (std::f32::consts::PI * step as f32 / total_steps as f32).cos());
            sgd_step(&mut net.params, &grads, &mut velocity, lr, cfg);
            step += 1;
            correct += c;
            seen += idx.len();
            loss_sum += loss as f64 * idx.len() as f64;
        }
        epoch_losses.push(loss_sum / seen.max(1) as f64);
        if epoch + 1 == cfg.epochs {
            (last_correct, last_seen, last_loss) = (correct, seen, loss_sum / seen as f64);
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let valid_acc = evaluate(&mut net, valid, cfg.batch.max(256), cfg.shards.max(1));
    if !last_loss.is_finite() {
        return Err(Error::invalid(format!(
            "training of {arch} diverged (loss {last_loss})"
        )));
    }
    Ok(TrainReport {
        train_acc: 100.0 * last_correct as f64 / last_seen as f64,
        valid_acc,
        final_loss: last_loss,
        epoch_losses,
        seconds: start.elapsed().as_secs_f64(),
        images_per_second: (train.len() * cfg.epochs) as f64 / train_seconds,
    })
}

/// PyTorch's SGD step: `g += wd·p`, `v = μv + g`, `g = g + μv` (Nesterov) or `v`, `p -= lr·g`.
fn sgd_step(params: &mut [f32], grads: &[f32], v: &mut [f32], lr: f32, cfg: &TrainConfig) {
    for ((p, &g), vel) in params.iter_mut().zip(grads).zip(v.iter_mut()) {
        let g = g + cfg.weight_decay * *p;
        *vel = cfg.momentum * *vel + g;
        let upd = if cfg.nesterov {
            g + cfg.momentum * *vel
        } else {
            *vel
        };
        *p -= lr * upd;
    }
}

/// Accuracy (%) in inference mode.
pub fn evaluate(net: &mut CellNet, set: &ImageSet, batch: usize, shards: usize) -> f64 {
    let r = set.resolution;
    let per = r * r * 3;
    let mut correct = 0usize;
    let mut tapes: Vec<super::cell_net::Tape> =
        (0..shards).map(|_| super::cell_net::Tape::new()).collect();
    for (chunk, labels) in set.data.chunks(batch * per).zip(set.labels.chunks(batch)) {
        let logits = net.forward(chunk, labels.len(), r, r, false, &mut tapes);
        let k = net.config.classes;
        for (row, &l) in logits.chunks_exact(k).zip(labels) {
            if crate::nn::linalg::argmax(row) == l as usize {
                correct += 1;
            }
        }
    }
    100.0 * correct as f64 / set.len() as f64
}
