//! Reading PyTorch `torch.save` files that hold a plain `state_dict` (name -> tensor), without
//! Python and without executing anything (see [`super::pickle`]).
//!
//! Two containers exist: the zip format (PyTorch >= 1.6: `<prefix>/data.pkl` plus one entry per
//! storage, `<prefix>/data/<key>`) and the legacy format (magic number, protocol and sys-info
//! pickles, the object pickle, the storage-key list, then each storage as an 8-byte element count
//! followed by its raw bytes). Both are read; every size is checked against the file.

use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use super::pickle::{self, Id, Obj, Pickle};

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDtype {
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => TorchDtype::F32,
            "DoubleStorage" => TorchDtype::F64,
            "HalfStorage" => TorchDtype::F16,
            "BFloat16Storage" => TorchDtype::BF16,
            "LongStorage" => TorchDtype::I64,
            "IntStorage" => TorchDtype::I32,
            "ShortStorage" => TorchDtype::I16,
            "CharStorage" => TorchDtype::I8,
            "ByteStorage" => TorchDtype::U8,
            "BoolStorage" => TorchDtype::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            TorchDtype::F64 | TorchDtype::I64 => 8,
            TorchDtype::F32 | TorchDtype::I32 => 4,
            TorchDtype::F16 | TorchDtype::BF16 | TorchDtype::I16 => 2,
            TorchDtype::I8 | TorchDtype::U8 | TorchDtype::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            TorchDtype::F32 | TorchDtype::F64 | TorchDtype::F16 | TorchDtype::BF16
        )
    }
}

/// One tensor of a state_dict, made contiguous (row-major, little-endian).
#[derive(Clone, Debug)]
pub struct TorchTensor {
    pub dtype: TorchDtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl TorchTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values widened or narrowed to f32 (integers converted by value).
    pub fn to_f32(&self) -> Vec<f32> {
        let d = &self.data;
        match self.dtype {
            TorchDtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            TorchDtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDtype::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            TorchDtype::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            TorchDtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDtype::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            TorchDtype::I8 => d.iter().map(|&b| b as i8 as f32).collect(),
            TorchDtype::U8 | TorchDtype::Bool => d.iter().map(|&b| b as f32).collect(),
        }
    }
}

/// A state_dict read from a checkpoint, in the file's key order.
#[derive(Debug, Default)]
pub struct StateDict {
    pub tensors: Vec<(String, TorchTensor)>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&TorchTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Largest checkpoint file read (the official MetaD2A checkpoints are a few MB, the backbone
/// 19 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;

/// Reads a checkpoint file of at most [`MAX_CHECKPOINT_BYTES`].
pub fn read_checkpoint_file(path: &std::path::Path) -> crate::Result<Vec<u8>> {
    crate::util::read_limited(path, MAX_CHECKPOINT_BYTES, "a PyTorch checkpoint")
}

/// Reads a `torch.save`d state_dict from the bytes of a checkpoint file.
pub fn read_state_dict(bytes: &[u8]) -> Result<StateDict, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else if bytes.first() == Some(&0x80) {
        read_legacy(bytes)
    } else {
        Err("neither a zip-format nor a legacy PyTorch file (no zip or pickle signature)".into())
    }
}

/// A storage reference found in the pickle: `('storage', <type>, key, location, numel, ...)`.
struct StorageRef {
    dtype: TorchDtype,
    key: String,
    numel: usize,
}

fn read_zip(bytes: &[u8]) -> Result<StateDict, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("unreadable zip container: {e}"))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .ok_or("zip container has no <prefix>/data.pkl: not a torch.save file")?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        (&mut f).take(64).read_to_string(&mut s).ok();
        if s.trim() != "little" {
            return Err(format!(
                "storages are stored {s:?}-endian; only little is read"
            ));
        }
    }
    let pkl = read_entry(&mut zip, &pkl_name, bytes.len())?;
    let pk = pickle::read(&pkl).map_err(|e| format!("data.pkl: {e}"))?;
    let mut cache: HashMap<String, Rc<[u8]>> = HashMap::new();
    extract(&pk, bytes.len(), |s: &StorageRef| {
        if !cache.contains_key(&s.key) {
            let name = format!("{prefix}data/{}", s.key);
            let data = read_entry(&mut zip, &name, bytes.len())?;
            cache.insert(s.key.clone(), data.into());
        }
        Ok(Rc::clone(&cache[&s.key]))
    })
}

fn read_entry(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let f = zip
        .by_name(name)
        .map_err(|e| format!("zip entry {name}: {e}"))?;
    // A stored entry cannot be larger than the file that holds it; refuse to trust a forged size.
    let size = f.size() as usize;
    if size > limit {
        return Err(format!(
            "zip entry {name} claims {size} bytes, more than the file"
        ));
    }
    let mut out = Vec::with_capacity(size);
    f.take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("zip entry {name}: {e}"))?;
    Ok(out)
}

fn read_legacy(bytes: &[u8]) -> Result<StateDict, String> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Pickle, String> {
        let pk = pickle::read(&bytes[pos..]).map_err(|e| format!("{what}: {e}"))?;
        pos += pk.consumed;
        Ok(pk)
    };
    let magic = next("magic number")?;
    if magic.get(magic.root) != &Obj::BigInt(LEGACY_MAGIC.to_le_bytes()[..10].to_vec()) {
        return Err("legacy torch file with a wrong magic number".into());
    }
    next("protocol version")?;
    next("sys info")?;
    let main = next("state_dict pickle")?;
    let keys_pk = next("storage key list")?;
    let keys: Vec<String> = match keys_pk.get(keys_pk.root) {
        Obj::List(l) => l
            .iter()
            .map(|&k| match keys_pk.get(k) {
                Obj::Str(s) => Ok(s.clone()),
                _ => Err("storage key that is not a string".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("legacy torch file: storage keys are not a list".into()),
    };
    // Storage types come from the main pickle's persistent ids; collect them first.
    let mut types: HashMap<String, TorchDtype> = HashMap::new();
    for o in &main.arena {
        if let Obj::PersId(p) = o {
            let s = storage_ref(&main, *p)?;
            types.insert(s.key, s.dtype);
        }
    }
    let mut storages: HashMap<String, Rc<[u8]>> = HashMap::new();
    for key in keys {
        let dtype = *types
            .get(&key)
            .ok_or_else(|| format!("storage {key} is not referenced by any tensor"))?;
        if bytes.len() - pos < 8 {
            return Err(format!("storage {key}: truncated before its size"));
        }
        let numel = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
        pos += 8;
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|&l| l <= bytes.len() - pos)
            .ok_or_else(|| {
                format!("storage {key}: {numel} elements run past the end of the file")
            })?;
        storages.insert(key, bytes[pos..pos + len].into());
        pos += len;
    }
    extract(&main, bytes.len(), |s: &StorageRef| {
        storages
            .get(&s.key)
            .map(Rc::clone)
            .ok_or_else(|| format!("storage {} is missing from the file", s.key))
    })
}

/// The number a legacy torch file starts with.
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;

fn storage_ref(pk: &Pickle, pid: Id) -> Result<StorageRef, String> {
    let bad = || "persistent id is not a torch storage reference".to_string();
    let Obj::Tuple(t) = pk.get(pid) else {
        return Err(bad());
    };
    if t.len() < 5 || pk.get(t[0]) != &Obj::Str("storage".into()) {
        return Err(bad());
    }
    let dtype = match pk.get(t[1]) {
        Obj::Global(m, n) if m == "torch" => TorchDtype::from_storage(n)
            .ok_or_else(|| format!("unsupported storage type torch.{n}"))?,
        _ => return Err(bad()),
    };
    let key = match pk.get(t[2]) {
        Obj::Str(s) => s.clone(),
        _ => return Err(bad()),
    };
    let numel = match pk.get(t[4]) {
        Obj::Int(n) if *n >= 0 => *n as usize,
        _ => return Err(bad()),
    };
    Ok(StorageRef { dtype, key, numel })
}

fn int_tuple(pk: &Pickle, id: Id, what: &str) -> Result<Vec<i64>, String> {
    match pk.get(id) {
        Obj::Tuple(t) => t
            .iter()
            .map(|&x| match pk.get(x) {
                Obj::Int(v) => Ok(*v),
                _ => Err(format!("{what} holds a non-integer")),
            })
            .collect(),
        _ => Err(format!("{what} is not a tuple")),
    }
}

/// Walks the root dict and rebuilds every tensor with the storage bytes that `load` returns.
/// Most tensor bytes a checkpoint of `file_len` bytes may rebuild: the storages it holds can be
/// viewed more than once (tied weights), but a forged file must not turn zero strides or many
/// views of one storage into allocations far beyond its own size.
pub const TENSOR_BYTES_PER_FILE_BYTE: usize = 4;

fn extract(
    pk: &Pickle,
    file_len: usize,
    mut load: impl FnMut(&StorageRef) -> Result<Rc<[u8]>, String>,
) -> Result<StateDict, String> {
    let mut budget = file_len
        .saturating_mul(TENSOR_BYTES_PER_FILE_BYTE)
        .saturating_add(1 << 20);
    let Obj::Dict(items) = pk.get(pk.root) else {
        return Err(format!(
            "the file holds {}, not a state_dict (a dict of tensors)",
            pk.kind(pk.root)
        ));
    };
    if items.is_empty() {
        return Err("the state_dict is empty".into());
    }
    let mut out = StateDict::default();
    for &(k, v) in items {
        let name = match pk.get(k) {
            Obj::Str(s) => s.clone(),
            _ => return Err(format!("a state_dict key is {}, not a string", pk.kind(k))),
        };
        let t = rebuild(pk, v, &mut load, &mut budget).map_err(|e| {
            format!("entry `{name}`: {e} (a plain state_dict maps names to tensors)")
        })?;
        out.tensors.push((name, t));
    }
    Ok(out)
}

fn rebuild(
    pk: &Pickle,
    id: Id,
    load: &mut impl FnMut(&StorageRef) -> Result<Rc<[u8]>, String>,
    budget: &mut usize,
) -> Result<TorchTensor, String> {
    let not_tensor = || format!("is {}, not a tensor", pk.kind(id));
    let Obj::Call { func, args } = pk.get(id) else {
        return Err(not_tensor());
    };
    let Obj::Global(m, n) = pk.get(*func) else {
        return Err(not_tensor());
    };
    let Obj::Tuple(a) = pk.get(*args) else {
        return Err(not_tensor());
    };
    match (m.as_str(), n.as_str()) {
        ("torch._utils", "_rebuild_parameter") if !a.is_empty() => rebuild(pk, a[0], load, budget),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor")
            if a.len() >= 4 =>
        {
            let Obj::PersId(pid) = pk.get(a[0]) else {
                return Err("tensor without a storage".into());
            };
            let s = storage_ref(pk, *pid)?;
            let offset = match pk.get(a[1]) {
                Obj::Int(o) if *o >= 0 => *o as usize,
                _ => return Err("bad storage offset".into()),
            };
            let size = int_tuple(pk, a[2], "size")?;
            let stride = int_tuple(pk, a[3], "stride")?;
            let storage = load(&s)?;
            gather(&storage, &s, offset, &size, &stride, budget)
        }
        _ => Err(not_tensor()),
    }
}

/// Copies a (possibly strided) view out of a storage into a contiguous tensor.
fn gather(
    storage: &[u8],
    s: &StorageRef,
    offset: usize,
    size: &[i64],
    stride: &[i64],
    budget: &mut usize,
) -> Result<TorchTensor, String> {
    let es = s.dtype.size();
    if size.len() != stride.len() {
        return Err("size and stride differ in length".into());
    }
    if storage.len() < s.numel.saturating_mul(es) {
        return Err(format!(
            "storage {} holds {} bytes, fewer than its {} elements",
            s.key,
            storage.len(),
            s.numel
        ));
    }
    let shape: Vec<usize> = size
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| "negative dimension".to_string()))
        .collect::<Result<_, _>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("tensor size overflows")?;
    let bytes = numel.checked_mul(es).ok_or("tensor size overflows")?;
    if bytes > *budget {
        return Err(format!(
            "the tensors rebuild more than {TENSOR_BYTES_PER_FILE_BYTE}x the file's size (views of shared or broadcast storage): refused"
        ));
    }
    *budget -= bytes;
    if numel == 0 {
        return Ok(TorchTensor {
            dtype: s.dtype,
            shape,
            data: Vec::new(),
        });
    }
    // Highest element index the view touches must lie inside the storage.
    let mut max = offset as i128;
    for (&d, &st) in shape.iter().zip(stride) {
        if st < 0 {
            return Err("negative stride".into());
        }
        max += (d as i128 - 1) * st as i128;
    }
    if max >= s.numel as i128 {
        return Err(format!(
            "view reaches element {max} of a storage of {} elements",
            s.numel
        ));
    }
    let mut data = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let e = offset
            + idx
                .iter()
                .zip(stride)
                .map(|(&i, &st)| i * st as usize)
                .sum::<usize>();
        data.extend_from_slice(&storage[e * es..(e + 1) * es]);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Ok(TorchTensor {
        dtype: s.dtype,
        shape,
        data,
    })
}
