//! From images to the set encoder's input: decoding and resizing ([`image`]), labelled
//! collections ([`readers`]), the built-in ImageNet backbone ([`backbone`], converted from the
//! PyTorch checkpoint by [`convert`]), and [`FeatureExtractor`], which turns labelled images
//! into a [`Dataset`] of pooled features.

pub mod backbone;
pub mod convert;
pub mod image;
pub mod readers;
pub mod reference;

use std::path::{Path, PathBuf};

pub use backbone::{EfficientNetLite0, FEATURE_DIM};
pub use image::Image;
pub use readers::LabelledImages;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::weights::WeightStore;

/// Default input resolution of the backbone (chosen by measurement, see docs/features.md).
pub const DEFAULT_RESOLUTION: usize = 128;

/// File name of the converted backbone inside its weights directory.
pub const BACKBONE_FILE: &str = "backbone.safetensors";

/// The built-in backbone directory of a source checkout (`weights/effnet-lite0`).
pub fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/effnet-lite0")
}

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
        if !(16..=1024).contains(&resolution) {
            return Err(Error::invalid(format!(
                "resolution {resolution} is outside 16..=1024"
            )));
        }
        let store = WeightStore::open(path)?;
        Ok(FeatureExtractor {
            net: EfficientNetLite0::load(&store)?,
            resolution,
        })
    }

    /// The built-in backbone (`weights/effnet-lite0/backbone.safetensors`).
    pub fn builtin(resolution: usize) -> Result<Self> {
        Self::load(&builtin_dir().join(BACKBONE_FILE), resolution)
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
