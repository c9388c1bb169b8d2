//! From images to the set encoder's input: decoding and resizing ([`image`]), labelled
//! collections ([`readers`]), the built-in ImageNet backbone ([`backbone`], converted from the
//! PyTorch checkpoint by [`convert`]), and [`FeatureExtractor`], which turns labelled images
//! into a [`Dataset`] of pooled features.

pub mod backbone;
pub mod convert;
pub mod image;
pub mod readers;
#[cfg(feature = "reference")]
pub mod reference;

use std::path::Path;

pub use backbone::{EfficientNetLite0, FEATURE_DIM};
pub use image::Image;
pub use readers::LabelledImages;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::weights::WeightStore;

/// Default input resolution of the backbone (chosen by measurement, see docs/features.md).
pub const DEFAULT_RESOLUTION: usize = 160;

/// File name of the converted backbone inside its weights directory.
pub const BACKBONE_FILE: &str = "backbone.safetensors";

/// The built-in backbone (`weights/effnet-lite0/backbone.safetensors`, 9.7 MB of f16), compiled
/// into the library so that an installed program or a library linked on another machine needs
/// no file from the source tree.
pub static BUILTIN_BACKBONE: &[u8] =
    include_bytes!("../../weights/effnet-lite0/backbone.safetensors");

/// Images → pooled backbone features at a fixed input resolution.
pub struct FeatureExtractor {
    pub net: EfficientNetLite0,
    pub resolution: usize,
}

/// Images processed between progress reports.
const CHUNK: usize = 32;

impl FeatureExtractor {
    /// Loads the backbone from a file made by `metad2a convert-backbone`.
    pub fn load(path: &Path, resolution: usize) -> Result<Self> {
        Self::from_store(&WeightStore::open(path)?, resolution)
    }

    /// The backbone of an opened store (a file, or bytes in memory).
    pub fn from_store(store: &WeightStore, resolution: usize) -> Result<Self> {
        if !(16..=1024).contains(&resolution) {
            return Err(Error::invalid(format!(
                "resolution {resolution} is outside 16..=1024"
            )));
        }
        Ok(FeatureExtractor {
            net: EfficientNetLite0::load(store)?,
            resolution,
        })
    }

    /// The built-in backbone ([`BUILTIN_BACKBONE`]).
    pub fn builtin(resolution: usize) -> Result<Self> {
        Self::from_store(
            &WeightStore::from_static("built-in backbone", BUILTIN_BACKBONE)?,
            resolution,
        )
    }

    /// Features of `images`, `[n, 1280]`, each image resized to the extractor's resolution.
    /// `progress(done, total)` is called after each chunk of images.
    pub fn extract(&self, images: &[Image], progress: &mut dyn FnMut(usize, usize)) -> Vec<f32> {
        let r = self.resolution;
        let mut out = Vec::with_capacity(images.len() * FEATURE_DIM);
        for (i, chunk) in images.chunks(CHUNK).enumerate() {
            let inputs: Vec<(Vec<f32>, usize, usize)> = chunk
                .iter()
                .map(|im| (im.resize(r, r).normalized(), r, r))
                .collect();
            out.extend(self.net.features_batch(&inputs));
            progress((i * CHUNK + chunk.len()).min(images.len()), images.len());
        }
        out
    }

    /// A dataset of the features of labelled images.
    pub fn dataset(
        &self,
        images: &LabelledImages,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Dataset> {
        let feats = self.extract(&images.images, progress);
        Dataset::new(
            feats,
            FEATURE_DIM,
            images.labels.clone(),
            Some(images.class_names.clone()),
        )
    }
}

/// Nearest-class-mean accuracy: for each class, the first half of its rows (in order) give the
/// class mean, the second half are classified by the nearest mean (Euclidean distance).
pub fn nearest_class_mean_accuracy(features: &[f32], labels: &[u32], classes: usize) -> f64 {
    let d = features.len() / labels.len().max(1);
    let mut count = vec![0usize; classes];
    for &l in labels {
        count[l as usize] += 1;
    }
    let mut seen = vec![0usize; classes];
    let mut sums = vec![0.0f64; classes * d];
    let mut n_mean = vec![0usize; classes];
    let mut held = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let c = l as usize;
        seen[c] += 1;
        let row = &features[i * d..(i + 1) * d];
        if seen[c] <= count[c] / 2 {
            for (s, &x) in sums[c * d..(c + 1) * d].iter_mut().zip(row) {
                *s += x as f64;
            }
            n_mean[c] += 1;
        } else {
            held.push(i);
        }
    }
    let means: Vec<f64> = (0..classes * d)
        .map(|k| sums[k] / n_mean[k / d].max(1) as f64)
        .collect();
    let correct = held
        .iter()
        .filter(|&&i| {
            let row = &features[i * d..(i + 1) * d];
            let best = (0..classes)
                .min_by(|&a, &b| {
                    let da: f64 = row
                        .iter()
                        .zip(&means[a * d..(a + 1) * d])
                        .map(|(&x, m)| (x as f64 - m).powi(2))
                        .sum();
                    let db: f64 = row
                        .iter()
                        .zip(&means[b * d..(b + 1) * d])
                        .map(|(&x, m)| (x as f64 - m).powi(2))
                        .sum();
                    da.total_cmp(&db)
                })
                .unwrap_or(0);
            best == labels[i] as usize
        })
        .count();
    correct as f64 / held.len().max(1) as f64
}
