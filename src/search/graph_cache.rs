//! The graph-embedding cache: the predictor's embedding `G` of every NB201 cell.
//!
//! Graph embeddings depend only on the predictor's weights, so all 15,625 are computed once
//! (a few seconds; the graph encoder shares the work of common prefixes and suffixes) and
//! stored beside the weights as `graph_cache.safetensors`: tensor `embeddings`
//! `[15625, nz]` f32 in cell-code order (see [`Nb201Arch::code`]), metadata `predictor_sha256`
//! binding it to the predictor file it was computed from, and `embeddings_blake3` and
//! `embeddings_sha256`, checksums of its own content (the first is checked when present), and
//! `embeddings_blocks_crc32`, the CRC-32 of each block of [`BLOCK_ROWS`] rows. An engine checks
//! the binding when it loads, and the content before it is used: the blocks a search reads,
//! when it reads them (a generated search reads a few hundred cells' rows: a few microseconds,
//! where the whole content's BLAKE3 takes about 0.6 ms), or the whole content's BLAKE3
//! ([`GraphCache::verified`]: [`Engine::verify`], and every read of a cache written without
//! block checksums). The CRCs catch damage (any change of up to 32 consecutive bits, other
//! changes but for one chance in 2^32 per block), not deliberate forgery, which no checksum
//! stored beside the data can.
//!
//! [`Engine::verify`]: crate::search::Engine::verify

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
/// Metadata key of the per-block checksums: the CRC-32 (IEEE) of the bytes of each block of
/// [`BLOCK_ROWS`] rows (the last block shorter), 8 hex digits each, concatenated.
const BLOCKS_CRC32: &str = "embeddings_blocks_crc32";
/// Metadata key of the number of rows per checksummed block.
const BLOCK_ROWS_KEY: &str = "embeddings_block_rows";
/// Rows per checksummed block (16 rows of 56 values: 3.5 kB).
pub const BLOCK_ROWS: usize = 16;

/// A loaded cache.
#[derive(Debug)]
pub struct GraphCache {
    embeddings: Param,
    nz: usize,
    /// The file whose content checksum is still to be checked, and the check's outcome once
    /// made (`Err` holds the reason).
    pending: Option<(String, WeightStore)>,
    checked: OnceLock<std::result::Result<(), String>>,
    /// Per-block checksums (with `pending`, when the file has them) and each block's state:
    /// 0 unchecked, 1 matches, 2 damaged.
    blocks: Option<Blocks>,
}

#[derive(Debug)]
struct Blocks {
    rows: usize,
    want: Vec<u32>,
    state: Vec<std::sync::atomic::AtomicU8>,
}

/// The per-block checksums of `raw` (rows of `row_bytes` bytes), in hex.
fn block_crcs_hex(raw: &[u8], row_bytes: usize) -> String {
    raw.chunks(BLOCK_ROWS * row_bytes)
        .map(|b| format!("{:08x}", crc32fast::hash(b)))
        .collect()
}

impl Blocks {
    /// The block checksums a cache's metadata records, if any; an error when they are there
    /// but do not fit `rows` rows.
    fn parse(
        meta: &std::collections::BTreeMap<String, String>,
        rows: usize,
    ) -> std::result::Result<Option<Self>, String> {
        let (Some(hex), Some(per)) = (meta.get(BLOCKS_CRC32), meta.get(BLOCK_ROWS_KEY)) else {
            return Ok(None);
        };
        let per: usize = per
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{BLOCK_ROWS_KEY} is not a positive number: {per:?}"))?;
        let n = rows.div_ceil(per);
        let bad = || format!("{BLOCKS_CRC32} does not hold {n} checksums of 8 hex digits");
        if hex.len() != n * 8 {
            return Err(bad());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let want = hex
            .as_bytes()
            .chunks_exact(8)
            .map(|h| {
                h.iter()
                    .try_fold(0u32, |acc, &c| Some(acc << 4 | u32::from(nibble(c)?)))
                    .ok_or_else(bad)
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(Some(Blocks {
            rows: per,
            state: (0..n).map(|_| Default::default()).collect(),
            want,
        }))
    }
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
            (BLOCK_ROWS_KEY.to_string(), BLOCK_ROWS.to_string()),
            (BLOCKS_CRC32.to_string(), block_crcs_hex(&raw, nz * 4)),
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
        cache.blocks =
            Blocks::parse(store.metadata(), NUM_ARCHS).map_err(|reason| Error::Manifest {
                file: label.clone(),
                reason: format!("graph cache: {reason}; rebuild it with `metad2a cache`"),
            })?;
        cache.pending = Some((label, store));
        Ok(cache)
    }

    /// The cache, once the rows of cells `codes` match their blocks' checksums (each block is
    /// checked once, from any thread), or the whole content when the file has no block
    /// checksums. An error names the file when a block read is damaged.
    pub fn rows_verified(&self, codes: impl IntoIterator<Item = usize>) -> Result<&Self> {
        use std::sync::atomic::Ordering;
        let (Some((label, store)), Some(blocks)) = (&self.pending, &self.blocks) else {
            return self.verified();
        };
        if let Some(Ok(())) = self.checked.get() {
            return Ok(self);
        }
        let raw = store.raw("embeddings")?;
        let block_bytes = blocks.rows * self.nz * 4;
        for code in codes {
            let b = code / blocks.rows;
            let ok = match blocks.state[b].load(Ordering::Acquire) {
                1 => true,
                2 => false,
                _ => {
                    let bytes = &raw[b * block_bytes..((b + 1) * block_bytes).min(raw.len())];
                    let ok = crc32fast::hash(bytes) == blocks.want[b];
                    blocks.state[b].store(if ok { 1 } else { 2 }, Ordering::Release);
                    ok
                }
            };
            if !ok {
                return Err(Error::Manifest {
                    file: label.clone(),
                    reason: format!("graph cache rows {}..{} do not match their checksum (damaged or changed); rebuild it with `metad2a cache`", b * blocks.rows, ((b + 1) * blocks.rows).min(NUM_ARCHS)),
                });
            }
        }
        Ok(self)
    }

    /// Whether the content is checked block by block as it is read (a file with block
    /// checksums whose whole content has not been checked yet).
    pub fn checks_blocks(&self) -> bool {
        self.pending.is_some() && self.blocks.is_some() && self.checked.get().is_none()
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
            blocks: None,
        })
    }

    /// Builds a cache from embeddings held in memory.
    pub fn from_vec(embeddings: Vec<f32>, nz: usize) -> Self {
        GraphCache {
            embeddings: Param::owned(embeddings, vec![NUM_ARCHS, nz]),
            nz,
            pending: None,
            checked: OnceLock::new(),
            blocks: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(tag: &str, edit: impl FnOnce(&mut Vec<u8>, usize)) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("metad2a-cache-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let emb: Vec<f32> = (0..NUM_ARCHS * 4)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut b = GraphCache::write(&path, &emb, 4, "p").unwrap();
        let start = 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        edit(&mut b, start);
        std::fs::write(&path, &b).unwrap();
        path
    }

    #[test]
    fn blocks_are_checked_as_they_are_read() {
        let intact = file_with("intact", |_, _| {});
        let c = GraphCache::open_deferred(&intact, 4, "p").unwrap();
        assert!(c.checks_blocks());
        c.rows_verified([0, 100, NUM_ARCHS - 1]).unwrap();
        c.verified().unwrap();
        assert!(
            !c.checks_blocks(),
            "a whole check makes block checks needless"
        );

        // one byte of cell 100's row (block 6: rows 96..112) changed
        let damaged = file_with("damaged", |b, start| b[start + 100 * 16 + 2] ^= 4);
        let c = GraphCache::open_deferred(&damaged, 4, "p").unwrap();
        c.rows_verified([0, 95, 112, NUM_ARCHS - 1]).unwrap();
        for _ in 0..2 {
            let e = c.rows_verified([3, 100]).unwrap_err().to_string();
            assert!(
                e.contains("rows 96..112 do not match their checksum"),
                "{e}"
            );
        }
        let e = c.verified().unwrap_err().to_string();
        assert!(e.contains("does not match its checksum"), "{e}");
    }

    #[test]
    fn caches_without_block_checksums_are_checked_whole() {
        let legacy = |tag: &str, flip: bool| {
            let dir =
                std::env::temp_dir().join(format!("metad2a-cache-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(FILE_NAME);
            let emb: Vec<f32> = (0..NUM_ARCHS * 4).map(|i| i as f32).collect();
            let raw: Vec<u8> = emb.iter().flat_map(|x| x.to_le_bytes()).collect();
            let meta = HashMap::from([
                ("predictor_sha256".to_string(), "p".to_string()),
                (CONTENT_BLAKE3.to_string(), crate::weights::blake3_hex(&raw)),
            ]);
            let mut b = crate::weights::serialize(
                &[("embeddings".into(), vec![NUM_ARCHS, 4], emb)],
                crate::weights::ExportDtype::F32,
                Some(meta),
            )
            .unwrap();
            if flip {
                let k = b.len() - 3;
                b[k] ^= 1;
            }
            std::fs::write(&path, &b).unwrap();
            GraphCache::open_deferred(&path, 4, "p").unwrap()
        };
        let c = legacy("legacy", false);
        assert!(!c.checks_blocks());
        c.rows_verified([0]).unwrap();
        // a change in the last row fails a read of the first
        let e = legacy("legacy-damaged", true)
            .rows_verified([0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match its checksum"), "{e}");
    }

    #[test]
    fn malformed_block_checksums_fail_the_open() {
        let path = file_with("malformed", |b, _| {
            // one hex digit of the block checksums made a non-hex letter (same length)
            let key = BLOCKS_CRC32.as_bytes();
            let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 3;
            b[at + 10] = b'z';
        });
        let e = GraphCache::open_deferred(&path, 4, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not hold 977 checksums"), "{e}");
    }
}
