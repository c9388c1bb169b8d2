//! EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant without squeeze-excitation and with
//! ReLU6), ImageNet-pretrained, as the image-feature extractor of the set encoder.
//!
//! Shapes: an RGB image `[H, W, 3]`, normalised `(v − 127) / 128`, → stem 3×3/2 conv (32) →
//! 16 MBConv blocks (expand 1×1, depthwise k×k, project 1×1; residual when the stride is 1 and
//! the widths match) → 1×1 head conv (1280) → global average pool → features `[1280]`
//! (→ the ImageNet classifier `[1000]`). TensorFlow "SAME" padding (the extra pixel of an odd
//! total goes after), batch norm folded into the convolutions at conversion
//! ([`super::convert`]), ReLU6 after the stem, expand, depthwise and head convolutions.
//!
//! The fast path works on NHWC activations: 1×1 convolutions are matrix products over the
//! pixels, the depthwise convolution a direct loop vectorised over channels.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nn::linalg::matmul_wt_blocked;
use crate::simd_fn;
use crate::weights::{Param, WeightStore};

/// Output width of the backbone.
pub const FEATURE_DIM: usize = 1280;

/// One MBConv block.
#[derive(Debug)]
pub struct Block {
    /// `[C_exp, C_in]` and `[C_exp]`, absent when the expand ratio is 1.
    pub expand: Option<(Param, Param)>,
    /// Depthwise weights transposed to `[k·k, C_exp]`, and the bias `[C_exp]`.
    depthwise: Vec<f32>,
    pub depthwise_bias: Param,
    pub kernel: usize,
    pub stride: usize,
    /// `[C_out, C_exp]` and `[C_out]`.
    pub project: (Param, Param),
    pub c_in: usize,
    pub c_exp: usize,
    pub c_out: usize,
}

/// The loaded backbone.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    /// `[32, 27]` (the `[32, 3, 3, 3]` kernel flattened as `(c_in, ky, kx)`) and `[32]`.
    stem: (Param, Param),
    pub blocks: Vec<Block>,
    /// `[1280, 320]` and `[1280]`.
    head: (Param, Param),
    /// ImageNet classifier `[1000, 1280]` and `[1000]`, when the file has it.
    classifier: Option<(Param, Param)>,
}

/// Strides of the 16 blocks (the stem has stride 2 as well).
pub const STRIDES: [usize; 16] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1];

fn dims2(store: &WeightStore, name: &str) -> Result<(usize, usize)> {
    match *store.shape(name)? {
        [a, b] => Ok((a, b)),
        ref s => Err(Error::InconsistentModel {
            file: store.label().into(),
            reason: format!("`{name}` should be a matrix, found {s:?}"),
        }),
    }
}

impl EfficientNetLite0 {
    /// Loads a converted backbone file (see [`super::convert`]).
    pub fn load(store: &WeightStore) -> Result<Self> {
        let stem_w = store.param("stem.weight", &[32, 3, 3, 3])?;
        let stem = (
            Param::owned(stem_w.to_vec(), vec![32, 27]),
            store.param("stem.bias", &[32])?,
        );
        let mut blocks = Vec::with_capacity(STRIDES.len());
        let mut c_in = 32;
        for (i, &stride) in STRIDES.iter().enumerate() {
            let p = format!("blocks.{i}");
            let expand = if store.contains(&format!("{p}.expand.weight")) {
                let (ce, ci) = dims2(store, &format!("{p}.expand.weight"))?;
                if ci != c_in {
                    return Err(Error::ShapeMismatch {
                        file: store.label().into(),
                        name: format!("{p}.expand.weight"),
                        expected: vec![ce, c_in],
                        found: vec![ce, ci],
                    });
                }
                Some((
                    store.param(&format!("{p}.expand.weight"), &[ce, c_in])?,
                    store.param(&format!("{p}.expand.bias"), &[ce])?,
                ))
            } else {
                None
            };
            let c_exp = expand.as_ref().map_or(c_in, |(w, _)| w.shape()[0]);
            let dw_name = format!("{p}.depthwise.weight");
            let kernel = match *store.shape(&dw_name)? {
                [c, k, k2] if c == c_exp && k == k2 && k % 2 == 1 => k,
                ref s => {
                    return Err(Error::InconsistentModel {
                        file: store.label().into(),
                        reason: format!(
                            "`{dw_name}` has shape {s:?}; [{c_exp}, k, k] with odd k expected"
                        ),
                    })
                }
            };
            let dw = store.param(&dw_name, &[c_exp, kernel, kernel])?;
            let mut depthwise = vec![0.0; kernel * kernel * c_exp];
            for c in 0..c_exp {
                for t in 0..kernel * kernel {
                    depthwise[t * c_exp + c] = dw[c * kernel * kernel + t];
                }
            }
            let (c_out, _) = dims2(store, &format!("{p}.project.weight"))?;
            blocks.push(Block {
                expand,
                depthwise,
                depthwise_bias: store.param(&format!("{p}.depthwise.bias"), &[c_exp])?,
                kernel,
                stride,
                project: (
                    store.param(&format!("{p}.project.weight"), &[c_out, c_exp])?,
                    store.param(&format!("{p}.project.bias"), &[c_out])?,
                ),
                c_in,
                c_exp,
                c_out,
            });
            c_in = c_out;
        }
        let head = (
            store.param("head.weight", &[FEATURE_DIM, c_in])?,
            store.param("head.bias", &[FEATURE_DIM])?,
        );
        let classifier = if store.contains("classifier.weight") {
            let (n, _) = dims2(store, "classifier.weight")?;
            Some((
                store.param("classifier.weight", &[n, FEATURE_DIM])?,
                store.param("classifier.bias", &[n])?,
            ))
        } else {
            None
        };
        Ok(EfficientNetLite0 {
            stem,
            blocks,
            head,
            classifier,
        })
    }

    /// Pooled features `[1280]` of one normalised image `x: [h, w, 3]`.
    pub fn features(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        assert_eq!(x.len(), h * w * 3, "image buffer does not match {h}x{w}x3");
        // stem
        let (mut act, mut ah, mut aw) = stem(x, h, w, &self.stem.0, &self.stem.1);
        relu6(&mut act);
        for b in &self.blocks {
            let input = act;
            let (mut t, c) = match &b.expand {
                Some((wt, bias)) => {
                    let mut t = linear(&input, ah * aw, b.c_in, wt, bias);
                    relu6(&mut t);
                    (t, b.c_exp)
                }
                None => (input.clone(), b.c_in),
            };
            let (mut d, oh, ow) = depthwise(
                &t,
                ah,
                aw,
                c,
                b.kernel,
                b.stride,
                &b.depthwise,
                &b.depthwise_bias,
            );
            t.clear();
            relu6(&mut d);
            let mut out = linear(&d, oh * ow, b.c_exp, &b.project.0, &b.project.1);
            if b.stride == 1 && b.c_in == b.c_out {
                add_inplace(&mut out, &input);
            }
            act = out;
            ah = oh;
            aw = ow;
        }
        let c = self.blocks.last().map_or(32, |b| b.c_out);
        let mut head = linear(&act, ah * aw, c, &self.head.0, &self.head.1);
        relu6(&mut head);
        let n = (ah * aw) as f32;
        let mut pooled = vec![0.0f32; FEATURE_DIM];
        for row in head.chunks_exact(FEATURE_DIM) {
            for (p, &v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        pooled.iter_mut().for_each(|p| *p /= n);
        pooled
    }

    /// ImageNet logits `[1000]` of pooled features, when the classifier was kept.
    pub fn logits(&self, features: &[f32]) -> Option<Vec<f32>> {
        self.classifier
            .as_ref()
            .map(|(w, b)| linear(features, 1, FEATURE_DIM, w, b))
    }

    /// Features of many images in parallel, `[n, 1280]`.
    pub fn features_batch(&self, images: &[(Vec<f32>, usize, usize)]) -> Vec<f32> {
        let per: Vec<Vec<f32>> = images
            .par_iter()
            .map(|(x, h, w)| self.features(x, *h, *w))
            .collect();
        per.concat()
    }
}

/// `y = x Wᵀ + b` over `rows` pixels.
fn linear(x: &[f32], rows: usize, cin: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let cout = b.len();
    let mut y = vec![0.0f32; rows * cout];
    for r in y.chunks_exact_mut(cout) {
        r.copy_from_slice(b);
    }
    matmul_wt_blocked(&mut y, x, cin, w, cin, rows, cout, cin, true);
    y
}

/// TensorFlow SAME padding: output size and padding before.
pub fn same_padding(size: usize, k: usize, s: usize) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (out, total / 2)
}

/// The 3×3/2 stem convolution of a 3-channel NHWC image, through im2col.
fn stem(x: &[f32], h: usize, w: usize, wt: &[f32], b: &[f32]) -> (Vec<f32>, usize, usize) {
    let (oh, pt) = same_padding(h, 3, 2);
    let (ow, pl) = same_padding(w, 3, 2);
    let mut col = vec![0.0f32; oh * ow * 27];
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut col[(oy * ow + ox) * 27..(oy * ow + ox + 1) * 27];
            for ky in 0..3 {
                let iy = (oy * 2 + ky) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * 2 + kx) as isize - pl as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let px = &x[(iy as usize * w + ix as usize) * 3..][..3];
                    for ci in 0..3 {
                        row[ci * 9 + ky * 3 + kx] = px[ci];
                    }
                }
            }
        }
    }
    (linear(&col, oh * ow, 27, wt, b), oh, ow)
}

/// Depthwise k×k convolution with stride `s` and SAME padding on NHWC `[h, w, c]`;
/// `wt` is `[k·k, c]`.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    s: usize,
    wt: &[f32],
    b: &[f32],
) -> (Vec<f32>, usize, usize) {
    let (oh, pt) = same_padding(h, k, s);
    let (ow, pl) = same_padding(w, k, s);
    let mut out = vec![0.0f32; oh * ow * c];
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(oy, orow)| {
            for ox in 0..ow {
                let acc = &mut orow[ox * c..(ox + 1) * c];
                acc.copy_from_slice(b);
                for ky in 0..k {
                    let iy = (oy * s + ky) as isize - pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - pl as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let px = &x[(iy as usize * w + ix as usize) * c..][..c];
                        mul_add(acc, px, &wt[(ky * k + kx) * c..][..c]);
                    }
                }
            }
        });
    (out, oh, ow)
}

simd_fn! {
    /// `acc += a ⊙ b`.
    fn mul_add(acc: &mut [f32], a: &[f32], b: &[f32]) {
        let n = acc.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            acc[i] += a[i] * b[i];
        }
    }
}

simd_fn! {
    /// `min(max(x, 0), 6)` in place.
    fn relu6(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = x.clamp(0.0, 6.0);
        }
    }
}

simd_fn! {
    /// `a += b`.
    fn add_inplace(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}
