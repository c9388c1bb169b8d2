//! The graph-embedding cache: the predictor's embedding `G` of every NB201 cell.
//!
//! Graph embeddings depend only on the predictor's weights, so all 15,625 are computed once
//! (a few seconds; the graph encoder shares the work of common prefixes and suffixes) and
//! stored beside the weights as `graph_cache.safetensors`: tensor `embeddings`
//! `[15625, nz]` f32 in cell-code order (see [`Nb201Arch::code`]), metadata `predictor_sha256`
//! binding it to the predictor file it was computed from, and `embeddings_blake3` and
//! `embeddings_sha256`, checksums of its own content (the first is checked when present). An
//! engine checks the binding when it loads and the content before the cache's first use
//! ([`GraphCache::verified`]), which a search does beside its first generation batch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::model::Predictor;
use crate::space::nb201::{Nb201Arch, NUM_ARCHS};
use crate::weights::{Param, WeightStore};

pub const FILE_NAME: &str = crate::weights::GRAPH_CACHE_FILE;

/// Metadata key of the sha256 of the embeddings' bytes (little-endian f32), checked at open
/// when the file has no BLAKE3 of them.
const CONTENT_SHA256: &str = "embeddings_sha256";
/// Metadata key of the BLAKE3 of the embeddings' bytes, checked at open when present.
const CONTENT_BLAKE3: &str = "embeddings_blake3";

/// A loaded cache.
#[derive(Debug)]
pub struct GraphCache {
    embeddings: Param,
    nz: usize,
    /// The file whose content checksum is still to be checked, and the check's outcome once
    /// made (`Err` holds the reason).
    pending: Option<(String, WeightStore)>,
    checked: OnceLock<std::result::Result<(), String>>,
}

/// Graphs encoded per call when building (bounds the encoder's working memory).
const BUILD_CHUNK: usize = 3125;

impl GraphCache {
    /// Computes the embeddings of all NB201 cells, `[15625, nz]`, calling `progress(done, total)`.
    pub fn compute(
        predictor: &Predictor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let all: Vec<Nb201Arch> = Nb201Arch::all().collect();
        let mut out = Vec::with_capacity(NUM_ARCHS * predictor.dims.nz);
        for chunk in all.chunks(BUILD_CHUNK) {
            let graphs: Vec<_> = chunk.iter().map(|a| a.to_graph()).collect();
            out.extend(predictor.graph_embedding(&graphs)?);
            progress(out.len() / predictor.dims.nz, NUM_ARCHS);
        }
        Ok(out)
    }

    /// Writes a cache file for embeddings computed from the predictor with sha256 `predictor_sha256`.
    pub fn write(
        path: &Path,
        embeddings: &[f32],
        nz: usize,
        predictor_sha256: &str,
    ) -> Result<Vec<u8>> {
        let raw: Vec<u8> = embeddings.iter().flat_map(|x| x.to_le_bytes()).collect();
        let meta = HashMap::from([
            ("predictor_sha256".to_string(), predictor_sha256.to_string()),
            (CONTENT_SHA256.to_string(), crate::weights::sha256_hex(&raw)),
            (CONTENT_BLAKE3.to_string(), crate::weights::blake3_hex(&raw)),
        ]);
        let bytes = crate::weights::serialize(
            &[(
                "embeddings".into(),
                vec![embeddings.len() / nz, nz],
                embeddings.to_vec(),
            )],
            crate::weights::ExportDtype::F32,
            Some(meta),
        )?;
        crate::util::write_atomic(path, &bytes)?;
        Ok(bytes)
    }

    /// Maps a cache file and checks that it belongs to the predictor with sha256
    /// `predictor_sha256`, has `nz` columns and matches its content checksum.
    pub fn open(path: &Path, nz: usize, predictor_sha256: &str) -> Result<Self> {
        let cache = Self::open_deferred(path, nz, predictor_sha256)?;
        cache.verified()?;
        Ok(cache)
    }

    /// As [`open`](Self::open), with the content checksum left to [`verified`](Self::verified)
    /// (hashing the 3.5 MB of embeddings is most of the cost of opening).
    pub fn open_deferred(path: &Path, nz: usize, predictor_sha256: &str) -> Result<Self> {
        let store = WeightStore::open(path)?;
        let label = path.display().to_string();
        match store.metadata().get("predictor_sha256") {
            Some(s) if s == predictor_sha256 => {}
            Some(s) => {
                return Err(Error::Manifest {
                    file: label,
                    reason: format!(
                        "graph cache was computed from predictor {s}, not from this directory's predictor {predictor_sha256}; rebuild it with `metad2a cache`"
                    ),
                })
            }
            None => {
                return Err(Error::Manifest {
                    file: label,
                    reason: "graph cache does not say which predictor it belongs to".into(),
                })
            }
        }
        let mut cache = Self::from_store(&store, nz)?;
        cache.pending = Some((label, store));
        Ok(cache)
    }

    /// The cache, once its content matches its checksum (checked on the first call; later
    /// calls, from any thread, return the first call's outcome).
    pub fn verified(&self) -> Result<&Self> {
        let Some((label, store)) = &self.pending else {
            return Ok(self);
        };
        let outcome = self.checked.get_or_init(|| {
            let raw = store.raw("embeddings").map_err(|e| e.to_string())?;
            let ok = match store.metadata().get(CONTENT_BLAKE3) {
                Some(want) => crate::weights::blake3_hex(raw) == *want,
                None => {
                    store.metadata().get(CONTENT_SHA256)
                        == Some(&crate::weights::sha256_hex(raw))
                }
            };
            if ok {
                Ok(())
            } else {
                Err("graph cache content does not match its checksum (damaged or changed); rebuild it with `metad2a cache`".into())
            }
        });
        match outcome {
            Ok(()) => Ok(self),
            Err(reason) => Err(Error::Manifest {
                file: label.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// A cache from an opened store (e.g. bytes embedded in a program), checking only its shape.
    pub fn from_store(store: &WeightStore, nz: usize) -> Result<Self> {
        Ok(GraphCache {
            embeddings: store.param("embeddings", &[NUM_ARCHS, nz])?,
            nz,
            pending: None,
            checked: OnceLock::new(),
        })
    }

    /// Builds a cache from embeddings held in memory.
    pub fn from_vec(embeddings: Vec<f32>, nz: usize) -> Self {
        GraphCache {
            embeddings: Param::owned(embeddings, vec![NUM_ARCHS, nz]),
            nz,
            pending: None,
            checked: OnceLock::new(),
        }
    }

    /// The embedding of one cell, `[nz]`.
    pub fn get(&self, a: &Nb201Arch) -> &[f32] {
        let c = a.code();
        &self.embeddings[c * self.nz..(c + 1) * self.nz]
    }

    /// All embeddings, `[15625, nz]` in code order.
    pub fn all(&self) -> &[f32] {
        &self.embeddings
    }
}
