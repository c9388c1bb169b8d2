//! Labelled image collections: a folder of class sub-folders, or MNIST-style idx files.
//!
//! Folder layout: `DIR/<class name>/<image>.{png,jpg,jpeg}`; classes are the sub-folders in
//! sorted order, images are taken in sorted file-name order. idx layout: an images file
//! (magic `0x00000803`, `n × rows × cols` bytes) and a labels file (magic `0x00000801`, `n`
//! bytes), each optionally gzip-compressed.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::image::{Image, MAX_PIXELS};
use crate::error::{Error, Result};

/// Images with class labels `0..C`.
#[derive(Clone, Debug)]
pub struct LabelledImages {
    pub images: Vec<Image>,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl LabelledImages {
    /// Keeps at most `k` images of each class (the first ones in reading order).
    pub fn take_per_class(mut self, k: usize) -> Self {
        let mut count = vec![0usize; self.class_names.len()];
        let keep: Vec<bool> = self
            .labels
            .iter()
            .map(|&l| {
                count[l as usize] += 1;
                count[l as usize] <= k
            })
            .collect();
        let mut it = keep.iter();
        self.images.retain(|_| *it.next().unwrap());
        let mut it = keep.iter();
        self.labels.retain(|_| *it.next().unwrap());
        self
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Reads `dir/<class>/<images>`; with `per_class`, at most that many images of each class are
/// decoded. `progress(done, total)` is called as images are read.
pub fn read_folder(
    dir: &Path,
    per_class: Option<usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LabelledImages> {
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory of class folders",
            dir.display()
        )));
    }
    let classes: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no class sub-folders (expected DIR/<class>/<image>.png|jpg)",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (c, cdir) in classes.iter().enumerate() {
        let mut imgs: Vec<PathBuf> = sorted_entries(cdir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if imgs.is_empty() {
            return Err(Error::invalid(format!(
                "class folder {} holds no PNG or JPEG images",
                cdir.display()
            )));
        }
        if let Some(k) = per_class {
            imgs.truncate(k);
        }
        files.extend(imgs.into_iter().map(|p| (p, c as u32)));
        names.push(
            cdir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    let total = files.len();
    let mut images = Vec::with_capacity(total);
    let mut labels = Vec::with_capacity(total);
    for (i, (p, c)) in files.into_iter().enumerate() {
        images.push(Image::open(&p)?);
        labels.push(c);
        if i % 64 == 63 || i + 1 == total {
            progress(i + 1, total);
        }
    }
    Ok(LabelledImages {
        images,
        labels,
        class_names: names,
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Reads MNIST-style idx files (see the module docs). Class names are the label values.
pub fn read_idx(images: &Path, labels: &Path, per_class: Option<usize>) -> Result<LabelledImages> {
    let read = |p: &Path| -> Result<Vec<u8>> {
        let raw = crate::util::read_limited(p, MAX_IDX_BYTES, "an idx file")?;
        maybe_gunzip(raw).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
    };
    parse_idx(&read(images)?, &read(labels)?, per_class).map_err(|(which, why)| {
        let p = if which == 0 { images } else { labels };
        Error::invalid(format!("{}: {why}", p.display()))
    })
}

/// Most bytes an idx file may decompress to (the image cap of 64 Mi pixels, 64 times).
pub const MAX_IDX_BYTES: u64 = (MAX_PIXELS as u64) * 64;

/// Gzip's best ratio is about 1032:1; a stream claiming more is forged or broken.
const MAX_GZIP_RATIO: u64 = 1100;

/// `raw`, gunzipped when it starts with the gzip signature. Refuses to decompress beyond
/// [`MAX_IDX_BYTES`] or beyond what deflate can encode in `raw.len()` bytes.
pub fn maybe_gunzip(raw: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    maybe_gunzip_within(raw, MAX_IDX_BYTES)
}

/// [`maybe_gunzip`] with a cap of `max` bytes instead of [`MAX_IDX_BYTES`].
pub fn maybe_gunzip_within(raw: Vec<u8>, max: u64) -> std::result::Result<Vec<u8>, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        if raw.len() as u64 > max {
            return Err(format!(
                "{} bytes exceed the limit of {max} bytes",
                raw.len()
            ));
        }
        return Ok(raw);
    }
    let limit = max.min((raw.len() as u64).saturating_mul(MAX_GZIP_RATIO));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("broken gzip stream: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("decompresses to more than {limit} bytes (limit: {max} bytes, and {MAX_GZIP_RATIO}x the compressed size)"));
    }
    Ok(out)
}

/// Parses idx image and label bytes (already decompressed). Errors say which input is at fault
/// (0: images, 1: labels).
pub fn parse_idx(
    img: &[u8],
    lab: &[u8],
    per_class: Option<usize>,
) -> std::result::Result<LabelledImages, (u8, String)> {
    if img.len() < 16 || be32(img, 0) != 0x0000_0803 {
        return Err((
            0,
            "not an idx image file (magic 0x00000803, 16-byte header)".into(),
        ));
    }
    if lab.len() < 8 || be32(lab, 0) != 0x0000_0801 {
        return Err((
            1,
            "not an idx label file (magic 0x00000801, 8-byte header)".into(),
        ));
    }
    let (n, rows, cols) = (
        be32(img, 4) as usize,
        be32(img, 8) as usize,
        be32(img, 12) as usize,
    );
    let need = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .and_then(|x| x.checked_add(16));
    if need != Some(img.len()) || rows == 0 || cols == 0 {
        return Err((
            0,
            format!(
                "header says {n} images of {rows}x{cols}, the file holds {} bytes",
                img.len()
            ),
        ));
    }
    if rows > super::image::MAX_SIDE || cols > super::image::MAX_SIDE {
        return Err((
            0,
            format!(
                "images of {rows}x{cols} exceed the limit of {} per side",
                super::image::MAX_SIDE
            ),
        ));
    }
    let nl = be32(lab, 4) as usize;
    if nl != n || lab.len() != 8 + n {
        return Err((
            1,
            format!(
                "holds {} labels for {n} images",
                lab.len().saturating_sub(8).min(nl)
            ),
        ));
    }
    let classes = lab[8..].iter().max().map_or(0, |&m| m as usize + 1);
    let mut count = vec![0usize; classes];
    let mut out = LabelledImages {
        images: Vec::new(),
        labels: Vec::new(),
        class_names: (0..classes).map(|c| c.to_string()).collect(),
    };
    for (g, &l) in img[16..].chunks_exact(rows * cols).zip(&lab[8..]) {
        count[l as usize] += 1;
        if per_class.is_none_or(|k| count[l as usize] <= k) {
            out.images.push(Image::from_grey(cols, rows, g));
            out.labels.push(l as u32);
        }
    }
    Ok(out)
}
