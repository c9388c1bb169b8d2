//! Weights: the memory-mapped safetensors store, the manifest that says where weights came
//! from, and the importer of official PyTorch checkpoints (with its restricted pickle reader).

pub mod import;
pub mod manifest;
pub mod pickle;
pub mod store;
pub mod torch;

pub use manifest::Manifest;
pub use store::{Param, StoredDtype, WeightStore};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A named f32 tensor: `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Lower-case hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lower-case hex BLAKE3 of a byte string (large inputs are hashed on several threads).
pub fn blake3_hex(bytes: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    if bytes.len() >= 1 << 20 {
        h.update_rayon(bytes);
    } else {
        h.update(bytes);
    }
    h.finalize().to_hex().to_string()
}

/// Serialises named f32 tensors as a safetensors image, stored as f32 or f16.
pub fn serialize(
    tensors: &[NamedTensor],
    dtype: ExportDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> crate::Result<Vec<u8>> {
    serialize_with(tensors, &|_| dtype, metadata)
}

/// As [`serialize`], with the storage dtype chosen per tensor name.
pub fn serialize_with(
    tensors: &[NamedTensor],
    dtype_of: &dyn Fn(&str) -> ExportDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> crate::Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let encoded: Vec<(safetensors::Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, _, v)| match dtype_of(n) {
            ExportDtype::F32 => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            ExportDtype::F16 => (
                safetensors::Dtype::F16,
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&encoded)
        .map(|((n, s, _), (d, b))| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| crate::Error::invalid(format!("tensor {n}: {e}")))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|e| crate::Error::invalid(format!("cannot serialise safetensors: {e}")))
}

/// The graph-embedding cache's file name in a weights directory (written by the search layer,
/// `search::graph_cache`; removed by an import, whose new weights it would not match).
pub const GRAPH_CACHE_FILE: &str = "graph_cache.safetensors";

/// Storage dtype of exported weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    F32,
    F16,
}

impl ExportDtype {
    pub fn name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "f32",
            ExportDtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for ExportDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(ExportDtype::F32),
            "f16" => Ok(ExportDtype::F16),
            _ => Err(Error::argument(format!("dtype `{s}`: choose f32 or f16"))),
        }
    }
}
