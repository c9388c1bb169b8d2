//! `manifest.json`: what a weights directory holds and where it came from.
//!
//! ```json
//! {
//!   "format": "metad2a-weights", "version": 1, "space": "nb201", "dtype": "f32",
//!   "feature_extractor": "...",
//!   "generator": { "file": "generator.safetensors", "sha256": "...", "bytes": 1225776,
//!                  "dims": { ... }, "dropped": ["set_fc.0.weight", ...] },
//!   "predictor": { ... },
//!   "provenance": { "source": "...", "inputs": [{"path": "...", "sha256": "...", "bytes": 1}],
//!                   "command": "...", "tool": "metad2a 0.1.0", "licence": "...", "data": "..." }
//! }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::Space;

pub const FORMAT: &str = "metad2a-weights";
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "manifest.json";
/// Largest manifest read (real ones are a few kilobytes).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// One model file of a weights directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelEntry {
    pub file: String,
    pub sha256: String,
    /// BLAKE3 of the file; when present, loading checks it instead of the (slower) sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    pub bytes: u64,
    /// BLAKE3 of each tensor and of the header (`__header__`); when present, loading checks each
    /// tensor as it is first read instead of hashing the whole file (see
    /// [`crate::weights::WeightStore::expect_tensor_hashes`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tensors_blake3: BTreeMap<String, String>,
    /// The model sizes, as read from the weights.
    pub dims: serde_json::Value,
    /// Tensors of the source checkpoint that were not exported (unused at inference).
    #[serde(default)]
    pub dropped: Vec<String>,
}

impl ModelEntry {
    /// The entry of model file `file` whose content is `bytes` (a safetensors image): its
    /// size, sha256, BLAKE3 and per-tensor BLAKE3s.
    pub fn describe(
        file: &str,
        bytes: &[u8],
        dims: serde_json::Value,
        dropped: Vec<String>,
    ) -> Result<Self> {
        let store = super::WeightStore::from_bytes(file, bytes.to_vec())?;
        Ok(ModelEntry {
            file: file.into(),
            sha256: super::sha256_hex(bytes),
            blake3: Some(super::blake3_hex(bytes)),
            bytes: bytes.len() as u64,
            tensors_blake3: super::store::tensor_hashes(&store),
            dims,
            dropped,
        })
    }

    /// Checks a model file's whole content (`store`, the file `dir/self.file`) against this
    /// entry: its BLAKE3 when the entry has one (several times faster), else its sha256.
    pub fn check_digest(&self, dir: &Path, store: &super::WeightStore) -> Result<()> {
        let (name, got, want) = match &self.blake3 {
            Some(want) => ("BLAKE3", store.blake3_hex(), want),
            None => ("sha256", store.sha256_hex(), &self.sha256),
        };
        if got != *want {
            return Err(Error::Manifest {
                file: dir.join(&self.file).display().to_string(),
                reason: format!(
                    "{name} is {got}, the manifest says {want}: the file was changed or damaged"
                ),
            });
        }
        Ok(())
    }
}

/// A source file the weights were made from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputFile {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

impl InputFile {
    /// The file named `path` whose content is `bytes`.
    pub fn of(path: impl Into<String>, bytes: &[u8]) -> Self {
        InputFile {
            path: path.into(),
            sha256: super::sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// What the weights are (e.g. "official MetaD2A checkpoints, imported").
    pub source: String,
    pub inputs: Vec<InputFile>,
    /// The command that produced the directory.
    pub command: String,
    /// The producing program and version.
    pub tool: String,
    pub licence: String,
    /// The data the models were trained on, as far as known.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub space: Space,
    pub dtype: String,
    /// Which features the set encoder expects (backbone, resolution), as far as known.
    pub feature_extractor: String,
    pub generator: ModelEntry,
    pub predictor: ModelEntry,
    pub provenance: Provenance,
    /// Further files and facts (graph-embedding cache, accuracy normalisation, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Adds per-tensor checksums (and a BLAKE3) to the entries of `dir/manifest.json` that lack
/// them, after checking each such file against the checksum the manifest has; loading then
/// checks each tensor when first read instead of hashing whole files. Returns whether the
/// manifest changed.
pub fn add_tensor_checksums(dir: &Path) -> Result<bool> {
    let mut m = Manifest::read(dir)?;
    let mut changed = false;
    for e in [&mut m.generator, &mut m.predictor] {
        if !e.tensors_blake3.is_empty() {
            continue;
        }
        let store = super::WeightStore::open(dir.join(&e.file))?;
        e.check_digest(dir, &store)?;
        if e.blake3.is_none() {
            // checked by sha256 above; the BLAKE3 lets `verify` hash faster
            e.blake3 = Some(store.blake3_hex());
        }
        e.tensors_blake3 = super::store::tensor_hashes(&store);
        changed = true;
    }
    if changed {
        m.write(dir)?;
    }
    Ok(changed)
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let bytes = crate::util::read_limited(&path, MAX_MANIFEST_BYTES, "a manifest")?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Manifest {
            file: path.display().to_string(),
            reason: "not UTF-8 text".into(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses manifest text; `label` names it in errors.
    pub fn parse(text: &str, label: &str) -> Result<Self> {
        let bad = |reason: String| Error::Manifest {
            file: label.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?}",
                m.format
            )));
        }
        if m.version != VERSION {
            return Err(bad(format!(
                "version {} is not supported (this engine reads version {VERSION})",
                m.version
            )));
        }
        for e in [&m.generator, &m.predictor] {
            if e.file.contains('/') || e.file.contains('\\') || e.file.starts_with('.') {
                return Err(bad(format!(
                    "model file {:?} must be a plain file name inside the directory",
                    e.file
                )));
            }
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` (pretty-printed, through a temporary file and a rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        crate::util::write_atomic(&dir.join(FILE_NAME), format!("{text}\n").as_bytes())
    }
}
