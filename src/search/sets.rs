//! Drawing set samples from a dataset and encoding many of them cheaply.
//!
//! A set sample takes `per_class` rows of every class (without replacement unless asked). The
//! set encoder is invariant to the order of rows inside a class, so a sample is recorded as the
//! sorted row indices of each class, and two samples that draw the same rows for a class share
//! that class's prototype (with exactly `per_class` rows in a class, every sample draws the same
//! set). Work that does not depend on the sample, the first attention block's projections of
//! each feature row, is done once per row, and stored only for the rows samples use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::model::SetEncoder;
use crate::rng::Rng;

/// One set sample: `per_class` row indices of each class, class after class, each class's
/// indices sorted.
pub type SetSample = Vec<u32>;

/// Draws a set sample: `per_class` rows of each class, uniformly without replacement (or with
/// replacement when `replace`).
pub fn draw(data: &Dataset, per_class: usize, replace: bool, rng: &mut Rng) -> SetSample {
    let mut out = Vec::with_capacity(data.class_rows.len() * per_class);
    let mut idx: Vec<usize> = Vec::with_capacity(per_class);
    for rows in &data.class_rows {
        let n = rows.len();
        if takes_whole_class(n, per_class, replace) {
            // The whole class: nothing to draw (rows are in increasing order already).
            out.extend_from_slice(rows);
            continue;
        }
        let at = out.len();
        if replace {
            for _ in 0..per_class {
                out.push(rows[rng.below(n as u64) as usize]);
            }
        } else {
            // Floyd's algorithm: a uniform subset in O(k^2), whatever the class size.
            debug_assert!(per_class <= n);
            idx.clear();
            for j in n - per_class..n {
                let t = rng.below(j as u64 + 1) as usize;
                idx.push(if idx.contains(&t) { j } else { t });
            }
            out.extend(idx.iter().map(|&i| rows[i]));
        }
        out[at..].sort_unstable();
    }
    out
}

/// Whether [`draw`] takes every row of a class of `rows` rows (so every sample holds it).
fn takes_whole_class(rows: usize, per_class: usize, replace: bool) -> bool {
    !replace && rows == per_class
}

/// Whether every set sample [`draw`] makes from `data` is the whole dataset, so that every
/// sample is the same set.
pub fn every_sample_is_the_data(data: &Dataset, per_class: usize, replace: bool) -> bool {
    data.class_rows
        .iter()
        .all(|r| takes_whole_class(r.len(), per_class, replace))
}

/// The distinct samples among `samples`, in order of first appearance, and for each sample the
/// index of its distinct one (what [`SetEmbedder::embed_distinct`] returns embeddings for).
pub fn distinct(samples: &[SetSample]) -> (Vec<&[u32]>, Vec<usize>) {
    let mut first: RowsMap = RowsMap::default();
    let mut out: Vec<&[u32]> = Vec::new();
    let ids = samples
        .iter()
        .map(|s| {
            *first.entry(s.clone()).or_insert_with(|| {
                out.push(s);
                out.len() as u32 - 1
            }) as usize
        })
        .collect();
    (out, ids)
}

/// A fast hash for row-index keys (the engine's own indices: no untrusted input to resist).
#[derive(Default)]
struct RowsHasher(u64);

impl Hasher for RowsHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type RowsMap = HashMap<Vec<u32>, u32, BuildHasherDefault<RowsHasher>>;

/// Sets encoded per task and reused class prototypes, against one dataset and one encoder.
pub struct SetEmbedder<'a> {
    enc: &'a SetEncoder,
    data: &'a Dataset,
    per_class: usize,
    /// First-block projections (`[q ; k ; v]`, `3 h` values) of the rows projected so far, in
    /// the order they were projected...
    proj: Vec<f32>,
    /// ... and where each row's are: 1 + its index in `proj`, 0 while not projected (zeroed
    /// memory: a large dataset costs address space here, not resident pages).
    slot: Vec<u32>,
    /// Prototype id of each class set seen, per class, by its rows.
    protos: Vec<RowsMap>,
    num_protos: usize,
    proto_store: Vec<f32>,
    /// Embedding id of each whole sample seen, by its rows.
    samples: RowsMap,
    sample_store: Vec<f32>,
}

/// Sets encoded together in the intra-class pool; fixed so results do not depend on threads.
const SET_CHUNK: usize = 64;

impl<'a> SetEmbedder<'a> {
    pub fn new(enc: &'a SetEncoder, data: &'a Dataset, per_class: usize) -> Self {
        SetEmbedder {
            enc,
            data,
            per_class,
            proj: Vec::new(),
            slot: vec![0; data.num_rows()],
            protos: vec![RowsMap::default(); data.num_classes()],
            num_protos: 0,
            proto_store: Vec::new(),
            samples: RowsMap::default(),
            sample_store: Vec::new(),
        }
    }

    /// Number of distinct class prototypes computed so far.
    pub fn distinct_prototypes(&self) -> usize {
        self.num_protos
    }

    /// Projects the rows that have not been projected yet.
    fn ensure_projected(&mut self, rows: &[u32]) {
        let mut missing: Vec<u32> = rows
            .iter()
            .copied()
            .filter(|&r| self.slot[r as usize] == 0)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        let (d, h) = (self.data.dim, self.enc.dims.intra_hidden);
        // One product for the three projections, straight from the feature rows when the
        // missing rows are a contiguous range (e.g. the whole of a small dataset).
        let first = missing[0] as usize;
        let contiguous = missing.last().map(|&l| l as usize - first + 1) == Some(missing.len());
        let gathered: Vec<f32>;
        let x = if contiguous {
            &self.data.features[first * d..(first + missing.len()) * d]
        } else {
            gathered = missing
                .iter()
                .flat_map(|&r| self.data.row(r))
                .copied()
                .collect();
            &gathered
        };
        let at = self.proj.len() / (3 * h);
        self.proj.resize((at + missing.len()) * 3 * h, 0.0);
        self.enc
            .intra
            .sab1
            .project_qkv(x, d, missing.len(), &mut self.proj[at * 3 * h..]);
        for (i, &r) in missing.iter().enumerate() {
            self.slot[r as usize] = (at + i + 1) as u32;
        }
    }

    /// Embeddings of `samples`, `[S, out_dim]`.
    pub fn embed(&mut self, samples: &[SetSample]) -> Vec<f32> {
        let (distinct, ids) = self.embed_distinct(samples);
        let out_dim = self.enc.dims.out_dim;
        let mut out = Vec::with_capacity(samples.len() * out_dim);
        for id in ids {
            out.extend_from_slice(&distinct[id * out_dim..(id + 1) * out_dim]);
        }
        out
    }

    /// Embeddings of the distinct samples among `samples` (`[K, out_dim]`, in order of first
    /// appearance) and, for each sample, the index of its embedding.
    pub fn embed_distinct(&mut self, samples: &[SetSample]) -> (Vec<f32>, Vec<usize>) {
        let classes = self.data.num_classes();
        let (h, pd) = (self.enc.dims.intra_hidden, self.enc.dims.proto_dim);
        let per = self.per_class;
        // 1. Which samples are new, and which class sets of the new samples are new (a sample
        // seen before has only known class sets).
        let mut pending: Vec<(u32, &[u32])> = Vec::new();
        let mut fresh: Vec<Vec<u32>> = Vec::new();
        let mut sample_ids = Vec::with_capacity(samples.len());
        for s in samples {
            debug_assert_eq!(s.len(), classes * per);
            if let Some(&id) = self.samples.get(s.as_slice()) {
                sample_ids.push(id);
                continue;
            }
            let ids = s
                .chunks_exact(per)
                .zip(self.protos.iter_mut())
                .enumerate()
                .map(|(c, (rows, protos))| {
                    if let Some(&id) = protos.get(rows) {
                        return id;
                    }
                    let id = self.num_protos as u32;
                    self.num_protos += 1;
                    protos.insert(rows.to_vec(), id);
                    pending.push((c as u32, rows));
                    id
                })
                .collect();
            let id = self.samples.len() as u32;
            self.samples.insert(s.clone(), id);
            fresh.push(ids);
            sample_ids.push(id);
        }
        // 2. Intra-class pooling of the new sets, in fixed chunks across threads.
        if !pending.is_empty() {
            let rows: Vec<u32> = pending
                .iter()
                .flat_map(|(_, r)| r.iter().copied())
                .collect();
            self.ensure_projected(&rows);
            let (proj, slot) = (&self.proj, &self.slot);
            let intra = &self.enc.intra;
            let chunks: Vec<Vec<f32>> = pending
                .par_chunks(SET_CHUNK)
                .map(|chunk| {
                    let m = chunk.len() * per;
                    let mut qkv = [
                        Vec::with_capacity(m * h),
                        Vec::with_capacity(m * h),
                        Vec::with_capacity(m * h),
                    ];
                    for (_, rows) in chunk {
                        for &r in *rows {
                            let at = (slot[r as usize] as usize - 1) * 3 * h;
                            for (which, dst) in qkv.iter_mut().enumerate() {
                                dst.extend_from_slice(&proj[at + which * h..at + (which + 1) * h]);
                            }
                        }
                    }
                    intra.forward_projected(&qkv[0], &qkv[1], &qkv[2], chunk.len(), per)
                })
                .collect();
            for c in chunks {
                self.proto_store.extend_from_slice(&c);
            }
        }
        // 3. Inter-class pooling of each new sample's prototypes.
        let out_dim = self.enc.dims.out_dim;
        if !fresh.is_empty() {
            let mut x = Vec::with_capacity(fresh.len() * classes * pd);
            for ids in &fresh {
                for &id in ids {
                    x.extend_from_slice(
                        &self.proto_store[id as usize * pd..(id as usize + 1) * pd],
                    );
                }
            }
            let v = self.enc.inter.forward(&x, fresh.len(), classes);
            self.sample_store.extend_from_slice(&v);
        }
        let mut local: HashMap<u32, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let idx = sample_ids
            .iter()
            .map(|&id| {
                let next = local.len();
                *local.entry(id).or_insert_with(|| {
                    distinct.extend_from_slice(
                        &self.sample_store[id as usize * out_dim..(id as usize + 1) * out_dim],
                    );
                    next
                })
            })
            .collect();
        (distinct, idx)
    }
}
