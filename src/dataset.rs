//! A dataset as the set encoder sees it: feature rows grouped by class, and the feature file
//! that carries it.
//!
//! # Feature file format
//!
//! A safetensors file with
//! - `features`: `[N, D]`, F32 or F16 (or BF16): one row per image, e.g. the pooled output of an
//!   ImageNet backbone;
//! - `labels`: `[N]`, an integer dtype (I64, I32, I16, I8, U8, U16, U32, U64): the class of each
//!   row, `0..C`;
//! - optional `__metadata__` entry `class_names`: a JSON array of `C` strings.
//!
//! Every class `0..C` must have rows (with `class_names`, `C` is its length; otherwise it is the
//! largest label plus one). Rows need not be sorted by class. Values must be finite.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Feature rows grouped by class.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[N, dim]`, row-major.
    pub features: Vec<f32>,
    pub dim: usize,
    /// Class of each row.
    pub labels: Vec<u32>,
    /// Row indices of each class, in file order.
    pub class_rows: Vec<Vec<u32>>,
    pub class_names: Option<Vec<String>>,
}

/// Most classes a dataset may have.
pub const MAX_CLASSES: usize = 100_000;
/// Most rows a dataset may have (16 Mi; a search samples 20 per class).
pub const MAX_ROWS: usize = 1 << 24;
/// Largest feature file read.
pub const MAX_FEATURE_FILE_BYTES: u64 = 4 << 30;

impl Dataset {
    /// Builds a dataset from rows and labels, checking them.
    pub fn new(
        features: Vec<f32>,
        dim: usize,
        labels: Vec<u32>,
        class_names: Option<Vec<String>>,
    ) -> Result<Self> {
        let n = labels.len();
        if n == 0 || dim == 0 {
            return Err(Error::invalid(
                "the dataset is empty (no rows or zero-width features)",
            ));
        }
        if n > MAX_ROWS {
            return Err(Error::invalid(format!(
                "{n} rows exceed the limit of {MAX_ROWS} rows"
            )));
        }
        if features.len() != n * dim {
            return Err(Error::invalid(format!(
                "{} feature values for {n} labels of width {dim}",
                features.len()
            )));
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "feature row {} holds a non-finite value ({}) at column {}",
                i / dim,
                features[i],
                i % dim
            )));
        }
        let max = *labels.iter().max().expect("non-empty") as usize;
        let classes = match &class_names {
            Some(names) => {
                if max >= names.len() {
                    return Err(Error::invalid(format!(
                        "label {max} is out of range: class_names lists {} classes",
                        names.len()
                    )));
                }
                names.len()
            }
            None => max + 1,
        };
        if classes > MAX_CLASSES {
            return Err(Error::invalid(format!(
                "{classes} classes exceed the limit of {MAX_CLASSES}"
            )));
        }
        let mut class_rows = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            class_rows[l as usize].push(i as u32);
        }
        if let Some(c) = class_rows.iter().position(Vec::is_empty) {
            return Err(Error::invalid(format!(
                "class {c}{} has no rows: labels must cover every class 0..{classes}",
                class_names
                    .as_ref()
                    .map_or(String::new(), |n| format!(" ({})", n[c]))
            )));
        }
        Ok(Dataset {
            features,
            dim,
            labels,
            class_rows,
            class_names,
        })
    }

    /// Builds a dataset from class-contiguous rows: `rows_per_class` rows of class 0, then of
    /// class 1, ...
    pub fn from_contiguous(features: Vec<f32>, dim: usize, rows_per_class: usize) -> Result<Self> {
        if dim == 0 || rows_per_class == 0 || !features.len().is_multiple_of(dim * rows_per_class) {
            return Err(Error::invalid(format!(
                "{} values do not split into classes of {rows_per_class} rows of width {dim}",
                features.len()
            )));
        }
        let n = features.len() / dim;
        let labels = (0..n).map(|i| (i / rows_per_class) as u32).collect();
        Dataset::new(features, dim, labels, None)
    }

    pub fn num_classes(&self) -> usize {
        self.class_rows.len()
    }

    pub fn num_rows(&self) -> usize {
        self.labels.len()
    }

    /// Feature row `i`.
    pub fn row(&self, i: u32) -> &[f32] {
        &self.features[i as usize * self.dim..(i as usize + 1) * self.dim]
    }

    /// Fewest rows of any class.
    pub fn min_class_rows(&self) -> usize {
        self.class_rows.iter().map(Vec::len).min().unwrap_or(0)
    }

    /// Checks that every class has at least `per_class` rows (needed to draw a set without
    /// replacement).
    pub fn check_per_class(&self, per_class: usize) -> Result<()> {
        for (c, rows) in self.class_rows.iter().enumerate() {
            if rows.len() < per_class {
                let name = self
                    .class_names
                    .as_ref()
                    .map_or(String::new(), |n| format!(" ({})", n[c]));
                return Err(Error::invalid(format!(
                    "class {c}{name} has {} rows; a set needs {per_class} per class (provide more rows, or allow sampling with replacement)",
                    rows.len()
                )));
            }
        }
        Ok(())
    }

    /// Reads a feature file (see the module documentation). The file is read into the buffer
    /// that becomes the dataset's rows: f32 features are moved to its front in place, so a
    /// large file costs its own size in memory, not twice that.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let label = path.display().to_string();
        // Files over the limit (read_limited says so), rows that would need byte swapping and
        // files that change size while read take the plain way.
        let plain = || {
            let bytes = crate::util::read_limited(path, MAX_FEATURE_FILE_BYTES, "a feature file")?;
            Self::from_safetensors(&bytes, &label)
        };
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > MAX_FEATURE_FILE_BYTES || !cfg!(target_endian = "little") {
            return plain();
        }
        let len = len as usize;
        let mut words = vec![0.0f32; len.div_ceil(4)];
        match f.read_exact(&mut words_as_bytes_mut(&mut words)[..len]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return plain(),
            Err(e) => return Err(Error::io(path, e)),
        }
        if f.read(&mut [0u8; 1]).map_err(|e| Error::io(path, e))? != 0 {
            return plain();
        }
        let parsed = Parsed::new(&words_as_bytes(&words)[..len], &label)?;
        let features = match parsed.features {
            Features::F32 { start, end } if start % 4 == 0 => {
                words.copy_within(start / 4..end / 4, 0);
                words.truncate((end - start) / 4);
                words.shrink_to_fit();
                words
            }
            other => other.convert(&words_as_bytes(&words)[..len]),
        };
        parsed.into_dataset(features, &label)
    }

    /// Parses a feature file held in memory; `label` names it in errors.
    pub fn from_safetensors(bytes: &[u8], label: &str) -> Result<Self> {
        let parsed = Parsed::new(bytes, label)?;
        let features = parsed.features.convert(bytes);
        parsed.into_dataset(features, label)
    }
}

/// The byte view of an f32 buffer (every byte pattern is a valid f32 and u8 has alignment 1).
fn words_as_bytes(w: &[f32]) -> &[u8] {
    // SAFETY: the view covers exactly the buffer's bytes and borrows it.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, std::mem::size_of_val(w)) }
}

/// [`words_as_bytes`], writable: any bytes written make valid f32s.
fn words_as_bytes_mut(w: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above; the mutable borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, std::mem::size_of_val(w)) }
}

/// Where a feature file's rows are and how they are stored.
#[derive(Clone, Copy, Debug)]
enum Features {
    /// Little-endian f32 at these byte offsets of the file.
    F32 {
        start: usize,
        end: usize,
    },
    F16 {
        start: usize,
        end: usize,
    },
    Bf16 {
        start: usize,
        end: usize,
    },
}

impl Features {
    /// The rows as f32, from the file's bytes.
    fn convert(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Features::F32 { start, end } => bytes[start..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Features::F16 { start, end } => bytes[start..end]
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Features::Bf16 { start, end } => bytes[start..end]
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

/// A feature file checked and read, but for its rows (still in the file's bytes).
struct Parsed {
    dim: usize,
    features: Features,
    labels: Vec<u32>,
    class_names: Option<Vec<String>>,
}

impl Parsed {
    fn new(bytes: &[u8], label: &str) -> Result<Self> {
        let bad = |reason: String| Error::invalid(format!("{label}: {reason}"));
        if bytes.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let f = st
            .tensor("features")
            .map_err(|_| bad("no `features` tensor ([N, D] float)".into()))?;
        let (n, dim) = match f.shape() {
            [n, d] => (*n, *d),
            s => return Err(bad(format!("`features` has shape {s:?}; [N, D] expected"))),
        };
        if n > MAX_ROWS {
            return Err(bad(format!("{n} rows exceed the limit of {MAX_ROWS} rows")));
        }
        let data = f.data();
        let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let end = start + data.len();
        let features = match f.dtype() {
            Dtype::F32 => Features::F32 { start, end },
            Dtype::F16 => Features::F16 { start, end },
            Dtype::BF16 => Features::Bf16 { start, end },
            d => {
                return Err(bad(format!(
                    "`features` is {d:?}; F32, F16 or BF16 expected"
                )))
            }
        };
        let l = st
            .tensor("labels")
            .map_err(|_| bad("no `labels` tensor ([N] integer)".into()))?;
        if l.shape() != [n] {
            return Err(bad(format!(
                "`labels` has shape {:?}; [{n}] expected (one per feature row)",
                l.shape()
            )));
        }
        let raw = l.data();
        let wide: Vec<i128> = match l.dtype() {
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i128)
                .collect(),
            Dtype::U64 => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i128)
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i128)
                .collect(),
            Dtype::U32 => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i128)
                .collect(),
            Dtype::I16 => raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i128)
                .collect(),
            Dtype::U16 => raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i128)
                .collect(),
            Dtype::I8 => raw.iter().map(|&b| b as i8 as i128).collect(),
            Dtype::U8 => raw.iter().map(|&b| b as i128).collect(),
            d => return Err(bad(format!("`labels` is {d:?}; an integer dtype expected"))),
        };
        let mut labels = Vec::with_capacity(n);
        for (i, &v) in wide.iter().enumerate() {
            if v < 0 || v >= MAX_CLASSES as i128 {
                return Err(bad(format!(
                    "label {v} of row {i} is out of range 0..{MAX_CLASSES}"
                )));
            }
            labels.push(v as u32);
        }
        let class_names = match st_metadata(bytes).and_then(|m| m.get("class_names").cloned()) {
            None => None,
            Some(s) => Some(serde_json::from_str::<Vec<String>>(&s).map_err(|e| {
                bad(format!(
                    "metadata class_names is not a JSON array of strings: {e}"
                ))
            })?),
        };
        Ok(Parsed {
            dim,
            features,
            labels,
            class_names,
        })
    }

    /// The dataset, from the rows as f32 (checked by [`Dataset::new`]).
    fn into_dataset(self, features: Vec<f32>, label: &str) -> Result<Dataset> {
        Dataset::new(features, self.dim, self.labels, self.class_names).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("{label}: {m}")),
            other => other,
        })
    }
}

impl Dataset {
    /// Writes the dataset as a feature file (f32 or f16 features, I64 labels).
    pub fn save(&self, path: &Path, f16: bool) -> Result<()> {
        crate::util::write_atomic(path, &self.to_safetensors(f16)?)
    }

    /// The feature-file bytes of this dataset.
    pub fn to_safetensors(&self, f16: bool) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        let n = self.num_rows();
        let (dtype, fbytes): (Dtype, Vec<u8>) = if f16 {
            (
                Dtype::F16,
                self.features
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            )
        } else {
            (
                Dtype::F32,
                self.features.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        };
        let lbytes: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect();
        let views = vec![
            (
                "features".to_string(),
                TensorView::new(dtype, vec![n, self.dim], &fbytes).expect("shape matches"),
            ),
            (
                "labels".to_string(),
                TensorView::new(Dtype::I64, vec![n], &lbytes).expect("shape matches"),
            ),
        ];
        let meta = self.class_names.as_ref().map(|names| {
            HashMap::from([(
                "class_names".to_string(),
                serde_json::to_string(names).expect("strings serialise"),
            )])
        });
        safetensors::serialize(views, meta)
            .map_err(|e| Error::invalid(format!("cannot serialise features: {e}")))
    }
}

fn st_metadata(bytes: &[u8]) -> Option<HashMap<String, String>> {
    SafeTensors::read_metadata(bytes).ok()?.1.metadata().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let features = (0..12).map(|i| i as f32).collect();
        Dataset::new(
            features,
            2,
            vec![1, 0, 1, 0, 2, 2],
            Some(vec!["a".into(), "b".into(), "c".into()]),
        )
        .unwrap()
    }

    #[test]
    fn groups_rows_by_class_and_round_trips() {
        let d = tiny();
        assert_eq!(d.class_rows, vec![vec![1, 3], vec![0, 2], vec![4, 5]]);
        assert_eq!(d.row(4), &[8.0, 9.0]);
        for f16 in [false, true] {
            let b = d.to_safetensors(f16).unwrap();
            let e = Dataset::from_safetensors(&b, "t").unwrap();
            assert_eq!(e.labels, d.labels);
            assert_eq!(e.features, d.features);
            assert_eq!(e.class_names, d.class_names);
        }
    }

    #[test]
    fn loading_a_file_gives_what_parsing_its_bytes_gives() {
        // f32 rows moved in place (aligned), f32 rows at an odd offset (converted), f16 rows.
        let d = Dataset::new(
            (0..600).map(|i| (i as f32 * 0.37).sin()).collect(),
            3,
            (0..200).map(|i| (i % 7) as u32).collect(),
            None,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("metad2a-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aligned = d.to_safetensors(false).unwrap();
        // The same file with one more space in its JSON header: the rows start one byte later.
        let n = u64::from_le_bytes(aligned[..8].try_into().unwrap()) as usize;
        let mut odd = ((n + 1) as u64).to_le_bytes().to_vec();
        odd.extend_from_slice(&aligned[8..8 + n]);
        odd.push(b' ');
        odd.extend_from_slice(&aligned[8 + n..]);
        for (name, bytes) in [
            ("aligned", aligned),
            ("odd", odd),
            ("f16", d.to_safetensors(true).unwrap()),
        ] {
            let path = dir.join(format!("{name}.safetensors"));
            std::fs::write(&path, &bytes).unwrap();
            let loaded = Dataset::load(&path).unwrap();
            let parsed = Dataset::from_safetensors(&bytes, "t").unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&loaded.features), bits(&parsed.features), "{name}");
            assert_eq!(loaded.features.len(), 600, "{name}");
            assert_eq!(loaded.labels, d.labels, "{name}");
            assert_eq!(loaded.dim, 3, "{name}");
        }
        let e = Dataset::load(dir.join("missing.safetensors")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        std::fs::write(dir.join("empty.safetensors"), b"").unwrap();
        let e = Dataset::load(dir.join("empty.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_datasets_are_refused_with_reasons() {
        let e = Dataset::new(vec![1.0, f32::NAN], 1, vec![0, 1], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("non-finite"), "{e}");
        let e = Dataset::new(vec![1.0, 2.0], 1, vec![0, 2], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class 1 has no rows"), "{e}");
        let e = Dataset::new(vec![], 1, vec![], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = Dataset::new(
            vec![1.0, 2.0],
            1,
            vec![0, 5],
            Some(vec!["x".into(), "y".into()]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("label 5 is out of range"), "{e}");
        let e = tiny().check_per_class(3).unwrap_err().to_string();
        assert!(e.contains("class 0 (a) has 2 rows"), "{e}");
        let e = Dataset::from_safetensors(b"", "f").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
