//! A composed reference for the backbone on candle tensors (NCHW, candle's `conv2d` with groups
//! for the depthwise convolutions, explicit asymmetric SAME padding). Slow; tests compare the
//! fast path against it.

use candle_core::{Tensor, D};

use super::backbone::{same_padding, STRIDES};
use crate::error::Result;
use crate::nn::reference::RefWeights;

fn conv(
    w: &RefWeights,
    name: &str,
    x: &Tensor,
    shape4: (usize, usize, usize, usize),
    stride: usize,
    groups: usize,
) -> Result<Tensor> {
    let wt = w.get(&format!("{name}.weight"))?.reshape(shape4)?;
    let b = w.get(&format!("{name}.bias"))?;
    let (_, _, h, wd) = x.dims4()?;
    let k = shape4.2;
    let (oh, pt) = same_padding(h, k, stride);
    let (ow, pl) = same_padding(wd, k, stride);
    let pb = ((oh - 1) * stride + k).saturating_sub(h) - pt;
    let pr = ((ow - 1) * stride + k).saturating_sub(wd) - pl;
    let xp = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
    let y = xp.conv2d(&wt, 0, stride, 1, groups)?;
    Ok(y.broadcast_add(&b.reshape((1, shape4.0, 1, 1))?)?)
}

fn relu6(x: &Tensor) -> Result<Tensor> {
    Ok(x.clamp(0f32, 6f32)?)
}

/// Pooled features `[n, 1280]` and logits `[n, 1000]` of normalised images `x: [n, 3, H, W]`.
pub fn forward(w: &RefWeights, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut y = relu6(&conv(w, "stem", x, (32, 3, 3, 3), 2, 1)?)?;
    for (i, &s) in STRIDES.iter().enumerate() {
        let p = format!("blocks.{i}");
        let input = y.clone();
        let cin = input.dim(1)?;
        let mut t = input.clone();
        if let Ok(e) = w.get(&format!("{p}.expand.weight")) {
            let ce = e.dim(0)?;
            t = relu6(&conv(w, &format!("{p}.expand"), &t, (ce, cin, 1, 1), 1, 1)?)?;
        }
        let dw = w.get(&format!("{p}.depthwise.weight"))?;
        let (c, k) = (dw.dim(0)?, dw.dim(1)?);
        t = relu6(&conv(w, &format!("{p}.depthwise"), &t, (c, 1, k, k), s, c)?)?;
        let co = w.get(&format!("{p}.project.weight"))?.dim(0)?;
        t = conv(w, &format!("{p}.project"), &t, (co, c, 1, 1), 1, 1)?;
        y = if s == 1 && cin == co { (t + input)? } else { t };
    }
    let c = y.dim(1)?;
    let h = relu6(&conv(w, "head", &y, (1280, c, 1, 1), 1, 1)?)?;
    let feats = h.mean(D::Minus1)?.mean(D::Minus1)?;
    let logits = w.linear("classifier", &feats)?;
    Ok((feats, logits))
}
