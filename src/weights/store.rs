//! Memory-mapped safetensors weight store.
//!
//! The file is mapped once with memmap2 and parsed with `safetensors` (which validates the header
//! and that every tensor's byte range lies inside the file). f32 tensors are then *borrowed* from
//! the mapping with no copy (safetensors aligns data to 8 bytes; the alignment is checked anyway);
//! f16 and bf16 tensors are widened to f32 once, at load.
//!
//! A model asks for each tensor by name and expected shape ([`WeightStore::param`]); a missing
//! tensor, a wrong shape or an unsupported dtype is an error that names the tensor.
//!
//! With [`WeightStore::expect_tensor_hashes`] (the manifest's per-tensor BLAKE3s), each tensor is
//! checked the first time it is read: a search hashes only what it uses (a few hundred kilobytes
//! of a 14 MB predictor whose graph encoder the graph cache stands in for), and a damaged tensor
//! is an error before any of its values is used.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Bytes behind a store: a file mapping or an owned buffer (weights embedded in a program).
enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    Static(&'static [u8]),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
            Backing::Static(s) => s,
        }
    }
}

/// Storage dtype of a tensor in a weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
}

impl fmt::Display for StoredDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoredDtype::F32 => "f32",
            StoredDtype::F16 => "f16",
            StoredDtype::BF16 => "bf16",
        })
    }
}

#[derive(Clone, Debug)]
struct Entry {
    dtype: StoredDtype,
    shape: Vec<usize>,
    /// Absolute byte range of the data inside the backing buffer.
    start: usize,
    end: usize,
    /// The BLAKE3 the tensor's bytes must have, when the store was given one.
    want: Option<blake3::Hash>,
    /// Whether `want` was checked (shared by clones of the store).
    checked: Arc<AtomicBool>,
}

/// Name under which [`tensor_hashes`] records the file's header (`8 + header length` bytes).
pub const HEADER_KEY: &str = "__header__";

/// BLAKE3 of each tensor's stored bytes, and of the header under [`HEADER_KEY`], in hex: what a
/// manifest records so that tensors can be checked as they are read.
pub fn tensor_hashes(store: &WeightStore) -> BTreeMap<String, String> {
    let bytes = store.backing.bytes();
    let mut out: BTreeMap<String, String> = store
        .entries
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                blake3::hash(&bytes[e.start..e.end]).to_hex().to_string(),
            )
        })
        .collect();
    out.insert(
        HEADER_KEY.into(),
        blake3::hash(&bytes[..store.header_end])
            .to_hex()
            .to_string(),
    );
    out
}

/// An opened safetensors file: an index of its tensors over the mapped bytes.
#[derive(Clone)]
pub struct WeightStore {
    label: String,
    backing: Arc<Backing>,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
    /// End of the header: 8 + its length.
    header_end: usize,
}

impl fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightStore")
            .field("label", &self.label)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl WeightStore {
    /// Maps `path` and indexes its tensors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only. If another process truncates or rewrites the file
        // while it is mapped, reads may see the new bytes or fault (SIGBUS); callers that need to
        // detect a changed file check the manifest's checksum (see `weights::manifest`).
        // (Pre-faulting the whole mapping was measured slower: the checksum threads fault the
        // pages in side by side.)
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_backing(path.display().to_string(), Backing::Mapped(mmap))
    }

    /// Indexes a safetensors image held in memory (e.g. weights embedded in a firmware image).
    pub fn from_bytes(label: impl Into<String>, bytes: Vec<u8>) -> Result<Self> {
        Self::from_backing(label.into(), Backing::Owned(bytes))
    }

    /// A store of named f32 tensors built in memory (stored as f32).
    pub fn from_tensors(label: impl Into<String>, tensors: &[super::NamedTensor]) -> Result<Self> {
        let bytes = super::serialize(tensors, super::import::ExportDtype::F32, None)?;
        Self::from_bytes(label, bytes)
    }

    /// Indexes a safetensors image with static lifetime (`include_bytes!`), without copying it.
    pub fn from_static(label: impl Into<String>, bytes: &'static [u8]) -> Result<Self> {
        Self::from_backing(label.into(), Backing::Static(bytes))
    }

    fn from_backing(label: String, backing: Backing) -> Result<Self> {
        let bytes = backing.bytes();
        let bad = |reason: String| Error::BadWeightsFile {
            file: label.clone(),
            reason,
        };
        if bytes.len() < 8 {
            return Err(bad(format!(
                "{} bytes is shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        // One parse of the header, validated (offsets inside the data, in order, no gaps, the
        // data ending where the file does).
        let (header_len, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let header_end = 8 + header_len;
        let mut entries = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                Dtype::F32 => StoredDtype::F32,
                Dtype::F16 => StoredDtype::F16,
                Dtype::BF16 => StoredDtype::BF16,
                other => {
                    return Err(Error::UnsupportedDtype {
                        file: label.clone(),
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            let (start, end) = info.data_offsets;
            entries.insert(
                name,
                Entry {
                    dtype,
                    shape: info.shape.clone(),
                    start: header_end + start,
                    end: header_end + end,
                    want: None,
                    checked: Arc::new(AtomicBool::new(false)),
                },
            );
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(WeightStore {
            label,
            backing: Arc::new(backing),
            entries,
            metadata,
            header_end,
        })
    }

    /// Makes every later read of a tensor check its bytes against `want` (tensor name -> BLAKE3
    /// hex, the header under [`HEADER_KEY`], as [`tensor_hashes`] makes them), each tensor the
    /// first time it is read. Checks the header now, and that `want` names exactly the file's
    /// tensors.
    pub fn expect_tensor_hashes(&mut self, want: &BTreeMap<String, String>) -> Result<()> {
        let damaged = |reason: String| Error::Manifest {
            file: self.label.clone(),
            reason,
        };
        let parse = |name: &str, hex: &str| {
            blake3::Hash::from_hex(hex)
                .map_err(|_| damaged(format!("the BLAKE3 of {name} is not 64 hex digits")))
        };
        let header = want
            .get(HEADER_KEY)
            .ok_or_else(|| damaged("the per-tensor checksums lack the header's".into()))?;
        if blake3::hash(&self.backing.bytes()[..self.header_end]) != parse(HEADER_KEY, header)? {
            return Err(damaged(
                "the header's BLAKE3 differs from the manifest's: the file was changed or damaged"
                    .into(),
            ));
        }
        if want.len() != self.entries.len() + 1 {
            return Err(damaged(format!(
                "the manifest has checksums of {} tensors, the file holds {}",
                want.len() - 1,
                self.entries.len()
            )));
        }
        for (name, e) in &mut self.entries {
            let hex = want.get(name).ok_or_else(|| Error::Manifest {
                file: self.label.clone(),
                reason: format!("the manifest has no checksum of tensor {name}"),
            })?;
            e.want = Some(parse(name, hex)?);
        }
        Ok(())
    }

    /// A view of the same file whose reads do not check checksums, for tensors whose checks are
    /// deferred to their first use (then made with [`WeightStore::check_all`] on this store).
    pub fn deferring_checks(&self) -> WeightStore {
        let mut s = self.clone();
        for e in s.entries.values_mut() {
            e.want = None;
        }
        s
    }

    /// Checks every tensor not checked yet against its expected BLAKE3 (nothing without
    /// [`WeightStore::expect_tensor_hashes`]).
    pub fn check_all(&self) -> Result<()> {
        for (name, e) in &self.entries {
            self.check(name, e)?;
        }
        Ok(())
    }

    /// Checks a tensor's bytes against its expected BLAKE3 the first time it is read.
    fn check(&self, name: &str, e: &Entry) -> Result<()> {
        let Some(want) = e.want else {
            return Ok(());
        };
        if e.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        if blake3::hash(&self.backing.bytes()[e.start..e.end]) != want {
            return Err(Error::Manifest {
                file: self.label.clone(),
                reason: format!(
                    "tensor {name} differs from the manifest's BLAKE3: the file was changed or damaged"
                ),
            });
        }
        e.checked.store(true, Ordering::Release);
        Ok(())
    }

    /// sha256 of the whole file, as the manifest records it (hashes the mapped bytes).
    pub fn sha256_hex(&self) -> String {
        crate::weights::sha256_hex(self.backing.bytes())
    }

    /// BLAKE3 of the whole file (see [`crate::weights::blake3_hex`]).
    pub fn blake3_hex(&self) -> String {
        crate::weights::blake3_hex(self.backing.bytes())
    }

    /// Where the store came from (a path or a caller-given label), for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The safetensors `__metadata__` map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Shape of a tensor, or a `MissingTensor` error.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.entry(name).map(|e| e.shape.as_slice())
    }

    /// Storage dtype of a tensor.
    pub fn dtype(&self, name: &str) -> Result<StoredDtype> {
        self.entry(name).map(|e| e.dtype)
    }

    /// The dtype shared by every tensor, or `None` when they differ.
    pub fn common_dtype(&self) -> Option<StoredDtype> {
        let mut it = self.entries.values().map(|e| e.dtype);
        let first = it.next()?;
        it.all(|d| d == first).then_some(first)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            file: self.label.clone(),
            name: name.to_string(),
        })
    }

    /// The raw stored bytes of a tensor (little-endian, in its stored dtype).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        self.check(name, e)?;
        Ok(&self.backing.bytes()[e.start..e.end])
    }

    /// Fetches a tensor as f32, checking its shape. f32 data is borrowed from the mapping.
    pub fn param(&self, name: &str, expected: &[usize]) -> Result<Param> {
        let e = self.entry(name)?;
        if e.shape != expected {
            return Err(Error::ShapeMismatch {
                file: self.label.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: e.shape.clone(),
            });
        }
        self.check(name, e)?;
        self.param_of(e)
    }

    /// Fetches a tensor as f32 whatever its shape (the shape is returned with it).
    pub fn param_any(&self, name: &str) -> Result<Param> {
        let e = self.entry(name)?;
        self.check(name, e)?;
        self.param_of(e)
    }

    fn param_of(&self, e: &Entry) -> Result<Param> {
        let bytes = &self.backing.bytes()[e.start..e.end];
        let data = match e.dtype {
            StoredDtype::F32 => {
                if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>())
                    && cfg!(target_endian = "little")
                {
                    ParamData::Mapped {
                        backing: self.backing.clone(),
                        start: e.start,
                        len: bytes.len() / 4,
                    }
                } else {
                    ParamData::Owned(
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    )
                }
            }
            StoredDtype::F16 => ParamData::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            StoredDtype::BF16 => ParamData::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
        };
        Ok(Param {
            data,
            shape: e.shape.clone(),
        })
    }
}

enum ParamData {
    /// f32 data borrowed from the backing buffer (kept alive by the `Arc`).
    Mapped {
        backing: Arc<Backing>,
        start: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

/// A contiguous, row-major f32 tensor: a view into the mapping or an owned buffer.
pub struct Param {
    data: ParamData,
    shape: Vec<usize>,
}

impl Param {
    /// An owned parameter (derived weights, tests).
    pub fn owned(data: Vec<f32>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Param {
            data: ParamData::Owned(data),
            shape,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// True when the data is read straight from the mapped file (no copy was made).
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, ParamData::Mapped { .. })
    }
}

impl Deref for Param {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.data {
            ParamData::Mapped {
                backing,
                start,
                len,
            } => {
                let bytes = &backing.bytes()[*start..*start + *len * 4];
                // SAFETY: alignment and length were checked when the view was made, the bytes
                // are immutable and outlive `self` through the Arc, and every bit pattern is a
                // valid f32.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, *len) }
            }
            ParamData::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Param{:?}", self.shape)
    }
}
