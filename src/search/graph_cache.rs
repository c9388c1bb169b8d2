//! The graph-embedding cache: the predictor's embedding `G` of every NB201 cell.
//!
//! Graph embeddings depend only on the predictor's weights, so all 15,625 are computed once
//! (a few seconds; the graph encoder shares the work of common prefixes and suffixes) and
//! stored beside the weights as `graph_cache.safetensors`: tensor `embeddings`
//! `[15625, nz]` f32 in cell-code order (see [`Nb201Arch::code`]), metadata `predictor_sha256`
//! binding it to the predictor file it was computed from, and `embeddings_blake3` and
//! `embeddings_sha256`, checksums of its own content (the first is checked when present).

use std::collections::HashMap;
use std::path::Path;

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
    /// `predictor_sha256` and has `nz` columns.
    pub fn open(path: &Path, nz: usize, predictor_sha256: &str) -> Result<Self> {
        Self::from_store(&Self::open_checked(path, predictor_sha256)?, nz)
    }

    /// Maps a cache file and checks that it belongs to the predictor with sha256
    /// `predictor_sha256` and that its content matches its checksum; the shape is checked by
    /// [`from_store`](Self::from_store). Needs no model, so it can run beside model loading.
    pub fn open_checked(path: &Path, predictor_sha256: &str) -> Result<WeightStore> {
        let store = WeightStore::open(path)?;
        let bad = |reason: String| Error::Manifest {
            file: path.display().to_string(),
            reason,
        };
        match store.metadata().get("predictor_sha256") {
            Some(s) if s == predictor_sha256 => {}
            Some(s) => {
                return Err(bad(format!(
                    "graph cache was computed from predictor {s}, not from this directory's predictor {predictor_sha256}; rebuild it with `metad2a cache`"
                )))
            }
            None => return Err(bad("graph cache does not say which predictor it belongs to".into())),
        }
        let raw = store.raw("embeddings")?;
        let ok = match store.metadata().get(CONTENT_BLAKE3) {
            Some(want) => crate::weights::blake3_hex(raw) == *want,
            None => store.metadata().get(CONTENT_SHA256) == Some(&crate::weights::sha256_hex(raw)),
        };
        if !ok {
            return Err(bad(
                "graph cache content does not match its checksum (damaged or changed); rebuild it with `metad2a cache`".into(),
            ));
        }
        Ok(store)
    }

    /// A cache from an opened store (e.g. bytes embedded in a program), checking only its shape.
    pub fn from_store(store: &WeightStore, nz: usize) -> Result<Self> {
        Ok(GraphCache {
            embeddings: store.param("embeddings", &[NUM_ARCHS, nz])?,
            nz,
        })
    }

    /// Builds a cache from embeddings held in memory.
    pub fn from_vec(embeddings: Vec<f32>, nz: usize) -> Self {
        GraphCache {
            embeddings: Param::owned(embeddings, vec![NUM_ARCHS, nz]),
            nz,
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
