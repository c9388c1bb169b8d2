//! Training kernels on NHWC activations: convolution (forward, input gradient, weight gradient),
//! batch norm, ReLU, pooling, global average pooling, linear layer and softmax cross-entropy.
//!
//! Channel counts of convolution outputs (and inputs, for the input gradient) are multiples of 8:
//! the inner loops run over eight channels at a time (explicit AVX2+FMA kernels in
//! `conv_avx2.rs` where the CPU has them, portable loops otherwise). Every kernel works serially
//! on the images it is given; the network runs shards of a batch on separate threads
//! ([`super::cell_net`]), so batch norm is split into per-shard moments and an application step.

use crate::simd_fn;

/// Activation shape `[n, h, w, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements of one image.
    pub fn image(&self) -> usize {
        self.h * self.w * self.c
    }
}

/// A square convolution without bias; weights are laid out `[k·k][c_in][c_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ci: usize,
    pub co: usize,
}

impl Conv {
    pub fn out_shape(&self, s: Shape) -> Shape {
        Shape {
            n: s.n,
            h: (s.h + 2 * self.pad - self.k) / self.stride + 1,
            w: (s.w + 2 * self.pad - self.k) / self.stride + 1,
            c: self.co,
        }
    }
    pub fn weight_len(&self) -> usize {
        self.k * self.k * self.ci * self.co
    }
}

#[inline(always)]
fn fma8(acc: &mut [f32; 8], a: f32, w: &[f32]) {
    let w: &[f32; 8] = w[..8].try_into().unwrap();
    for l in 0..8 {
        acc[l] += a * w[l];
    }
}

/// Input pixel of output pixel `(oy, ox)` and tap `(ky, kx)`, if inside the image.
#[inline(always)]
fn tap(cv: &Conv, oy: usize, ox: usize, ky: usize, kx: usize, h: usize, w: usize) -> Option<usize> {
    let iy = (oy * cv.stride + ky) as isize - cv.pad as isize;
    let ix = (ox * cv.stride + kx) as isize - cv.pad as isize;
    (iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize)
        .then(|| iy as usize * w + ix as usize)
}

simd_fn! {
    /// One image: `y = conv(x)` (`x: [h, w, ci]`, `y: [oh, ow, co]`).
    fn conv_forward_image(x: &[f32], wt: &[f32], y: &mut [f32], h: usize, w: usize, cv: Conv) {
        let ow = (w + 2 * cv.pad - cv.k) / cv.stride + 1;
        let (ci, co, k) = (cv.ci, cv.co, cv.k);
        for (p, out) in y.chunks_exact_mut(co).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            for chunk in 0..co / 8 {
                let mut acc = [0.0f32; 8];
                for ky in 0..k {
                    for kx in 0..k {
                        let Some(q) = tap(&cv, oy, ox, ky, kx, h, w) else { continue };
                        let inp = &x[q * ci..(q + 1) * ci];
                        let wrow = &wt[(ky * k + kx) * ci * co + chunk * 8..];
                        for (c, &a) in inp.iter().enumerate() {
                            fma8(&mut acc, a, &wrow[c * co..]);
                        }
                    }
                }
                out[chunk * 8..chunk * 8 + 8].copy_from_slice(&acc);
            }
        }
    }
}

simd_fn! {
    /// One image: `dx += convᵀ(dy)`; `wt_t` is the weight transposed to `[k·k][co][ci]`.
    fn conv_input_grad_image(dy: &[f32], wt_t: &[f32], dx: &mut [f32], h: usize, w: usize, cv: Conv) {
        let ow = (w + 2 * cv.pad - cv.k) / cv.stride + 1;
        let (ci, co, k) = (cv.ci, cv.co, cv.k);
        for (p, d) in dy.chunks_exact(co).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            for ky in 0..k {
                for kx in 0..k {
                    let Some(q) = tap(&cv, oy, ox, ky, kx, h, w) else { continue };
                    let base = (ky * k + kx) * co * ci;
                    let dxp = &mut dx[q * ci..(q + 1) * ci];
                    for chunk in 0..ci / 8 {
                        let mut acc: [f32; 8] = dxp[chunk * 8..chunk * 8 + 8].try_into().unwrap();
                        for (o, &g) in d.iter().enumerate() {
                            fma8(&mut acc, g, &wt_t[base + o * ci + chunk * 8..]);
                        }
                        dxp[chunk * 8..chunk * 8 + 8].copy_from_slice(&acc);
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// One image: `dw += xᵀ ⋆ dy` (`dw: [k·k][ci][co]`). Zero inputs (after a ReLU, about half)
    /// are skipped.
    fn conv_weight_grad_image(x: &[f32], dy: &[f32], dw: &mut [f32], h: usize, w: usize, cv: Conv) {
        let ow = (w + 2 * cv.pad - cv.k) / cv.stride + 1;
        let (ci, co, k) = (cv.ci, cv.co, cv.k);
        for (p, d) in dy.chunks_exact(co).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            for ky in 0..k {
                for kx in 0..k {
                    let Some(q) = tap(&cv, oy, ox, ky, kx, h, w) else { continue };
                    let inp = &x[q * ci..(q + 1) * ci];
                    let base = (ky * k + kx) * ci * co;
                    for (c, &a) in inp.iter().enumerate() {
                        if a == 0.0 {
                            continue;
                        }
                        let row = &mut dw[base + c * co..base + (c + 1) * co];
                        for chunk in 0..co / 8 {
                            let mut acc: [f32; 8] = row[chunk * 8..chunk * 8 + 8].try_into().unwrap();
                            fma8(&mut acc, a, &d[chunk * 8..]);
                            row[chunk * 8..chunk * 8 + 8].copy_from_slice(&acc);
                        }
                    }
                }
            }
        }
    }
}

/// Tap tables of a convolution on an `h × w` image: for each output pixel and tap the input
/// pixel (forward), and for each input pixel and tap the output pixel reading it (transposed);
/// −1 where there is none.
pub fn tap_tables(h: usize, w: usize, cv: &Conv) -> (Vec<i32>, Vec<i32>) {
    let oh = (h + 2 * cv.pad - cv.k) / cv.stride + 1;
    let ow = (w + 2 * cv.pad - cv.k) / cv.stride + 1;
    let taps = cv.k * cv.k;
    let mut fwd = vec![-1i32; oh * ow * taps];
    let mut tr = vec![-1i32; h * w * taps];
    for oy in 0..oh {
        for ox in 0..ow {
            for ky in 0..cv.k {
                for kx in 0..cv.k {
                    if let Some(q) = tap(cv, oy, ox, ky, kx, h, w) {
                        let p = oy * ow + ox;
                        let t = ky * cv.k + kx;
                        fwd[p * taps + t] = q as i32;
                        tr[q * taps + t] = p as i32;
                    }
                }
            }
        }
    }
    (fwd, tr)
}

/// Resizes `v` to `n` values without reallocating when it is large enough (contents unspecified).
pub fn reuse(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// Panics unless `tables` are the tap tables of this image size and convolution (the unsafe
/// kernels index with them).
fn check_tables(tables: &(Vec<i32>, Vec<i32>), s: Shape, cv: &Conv) {
    let o = cv.out_shape(s);
    let taps = cv.k * cv.k;
    let (hw, ohw) = ((s.h * s.w) as i32, (o.h * o.w) as i32);
    assert!(
        tables.0.len() == o.h * o.w * taps && tables.1.len() == s.h * s.w * taps,
        "tap tables of another geometry"
    );
    assert!(
        tables.0.iter().all(|&q| q < hw) && tables.1.iter().all(|&p| p < ohw),
        "tap table out of range"
    );
}

/// `y = conv(x)` over a batch; `tables` are [`tap_tables`] of this geometry.
pub fn conv_forward(
    x: &[f32],
    s: Shape,
    wt: &[f32],
    cv: Conv,
    tables: &(Vec<i32>, Vec<i32>),
    y: &mut Vec<f32>,
) {
    assert!(
        cv.co.is_multiple_of(8)
            && s.c == cv.ci
            && wt.len() == cv.weight_len()
            && x.len() == s.len()
    );
    check_tables(tables, s, &cv);
    let o = cv.out_shape(s);
    let y = reuse(y, o.len());
    #[cfg(target_arch = "x86_64")]
    if crate::nn::linalg::has_avx2_fma() {
        let zero = vec![0.0f32; cv.ci];
        for (y, x) in y.chunks_exact_mut(o.image()).zip(x.chunks_exact(s.image())) {
            // SAFETY: AVX2/FMA present; tables index pixels of this image; sizes asserted above.
            unsafe {
                super::conv_avx2::gather_conv(
                    x,
                    cv.ci,
                    &tables.0,
                    cv.k * cv.k,
                    wt,
                    cv.co,
                    y,
                    o.h * o.w,
                    &zero,
                    false,
                )
            }
        }
        return;
    }
    let _ = tables;
    for (y, x) in y.chunks_exact_mut(o.image()).zip(x.chunks_exact(s.image())) {
        conv_forward_image(x, wt, y, s.h, s.w, cv);
    }
}

/// `[k·k][ci][co]` → `[k·k][co][ci]`.
pub fn transpose_taps(wt: &[f32], cv: Conv) -> Vec<f32> {
    let mut t = vec![0.0f32; wt.len()];
    for tp in 0..cv.k * cv.k {
        for c in 0..cv.ci {
            for o in 0..cv.co {
                t[(tp * cv.co + o) * cv.ci + c] = wt[(tp * cv.ci + c) * cv.co + o];
            }
        }
    }
    t
}

/// `dx += convᵀ(dy)` over a batch (`dx` has the input's shape); `wt_t` is the weight in the
/// layout of [`transpose_taps`].
pub fn conv_input_grad(
    dy: &[f32],
    s: Shape,
    wt_t: &[f32],
    cv: Conv,
    tables: &(Vec<i32>, Vec<i32>),
    dx: &mut [f32],
) {
    assert!(
        cv.ci.is_multiple_of(8) && cv.co.is_multiple_of(8),
        "input gradients need channels in multiples of 8"
    );
    let o = cv.out_shape(s);
    assert!(
        s.c == cv.ci && dy.len() == o.len() && dx.len() == s.len() && wt_t.len() == cv.weight_len()
    );
    check_tables(tables, s, &cv);
    #[cfg(target_arch = "x86_64")]
    if crate::nn::linalg::has_avx2_fma() {
        let zero = vec![0.0f32; cv.co];
        for (dx, dy) in dx
            .chunks_exact_mut(s.image())
            .zip(dy.chunks_exact(o.image()))
        {
            // SAFETY: as in conv_forward, with the transposed table over this image's pixels.
            unsafe {
                super::conv_avx2::gather_conv(
                    dy,
                    cv.co,
                    &tables.1,
                    cv.k * cv.k,
                    wt_t,
                    cv.ci,
                    dx,
                    s.h * s.w,
                    &zero,
                    true,
                )
            };
        }
        return;
    }
    let _ = tables;
    for (dx, dy) in dx
        .chunks_exact_mut(s.image())
        .zip(dy.chunks_exact(o.image()))
    {
        conv_input_grad_image(dy, wt_t, dx, s.h, s.w, cv);
    }
}

/// `dw += Σ_images xᵀ ⋆ dy`.
pub fn conv_weight_grad(
    x: &[f32],
    s: Shape,
    dy: &[f32],
    cv: Conv,
    tables: &(Vec<i32>, Vec<i32>),
    dw: &mut [f32],
) {
    let o = cv.out_shape(s);
    assert!(
        cv.co.is_multiple_of(8)
            && s.c == cv.ci
            && x.len() == s.len()
            && dy.len() == o.len()
            && dw.len() == cv.weight_len()
    );
    check_tables(tables, s, &cv);
    #[cfg(target_arch = "x86_64")]
    if crate::nn::linalg::has_avx2_fma() && cv.ci.is_multiple_of(8) {
        for (x, dy) in x.chunks_exact(s.image()).zip(dy.chunks_exact(o.image())) {
            // SAFETY: AVX2/FMA present, channel counts multiples of 8, tables of this shape.
            unsafe {
                super::conv_avx2::weight_grad(
                    x,
                    cv.ci,
                    &tables.0,
                    cv.k * cv.k,
                    dy,
                    cv.co,
                    dw,
                    o.h * o.w,
                )
            };
        }
        return;
    }
    let _ = tables;
    for (x, dy) in x.chunks_exact(s.image()).zip(dy.chunks_exact(o.image())) {
        conv_weight_grad_image(x, dy, dw, s.h, s.w, cv);
    }
}

simd_fn! {
    /// `a += b`.
    pub fn add_assign(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

simd_fn! {
    /// `y = max(x, 0)`.
    pub fn relu(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v.max(0.0);
        }
    }
}

simd_fn! {
    /// `dx += dy · [x > 0]`.
    pub fn relu_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((g, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
            if v > 0.0 {
                *g += d;
            }
        }
    }
}

/// Batch-norm statistics kept by the forward pass for the backward pass (which recomputes
/// `x̂ = (x − μ)·inv_std` from the input instead of storing it).
#[derive(Clone, Debug, Default)]
pub struct BnCache {
    pub inv_std: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// Per-channel sums of `x` and `x²` (`x` in rows of `c`): the moments a training-mode batch
/// norm needs, summed over shards before [`bn_apply_train`].
pub fn bn_moments(x: &[f32], c: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; 2 * c];
    let (sum, sq) = v.split_at_mut(c);
    channel_moments(x, sum, sq);
    v
}

/// Training-mode batch norm `y = γ (x − μ)/√(σ² + ε) + β` given the summed moments of the whole
/// batch (`m` rows in all); `cache` keeps what the backward pass needs.
#[allow(clippy::too_many_arguments)]
pub fn bn_apply_train(
    x: &[f32],
    c: usize,
    moments: &[f32],
    m: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut Vec<f32>,
    cache: &mut BnCache,
) {
    let mean: Vec<f32> = moments[..c].iter().map(|&s| s / m as f32).collect();
    let var: Vec<f32> = moments[c..]
        .iter()
        .zip(&mean)
        .map(|(&q, &mu)| (q / m as f32 - mu * mu).max(0.0))
        .collect();
    cache.inv_std = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let y = reuse(y, x.len());
    let scale: Vec<f32> = (0..c).map(|j| gamma[j] * cache.inv_std[j]).collect();
    let shift: Vec<f32> = (0..c).map(|j| beta[j] - mean[j] * scale[j]).collect();
    scale_shift(x, &scale, &shift, y);
    cache.mean = mean;
    cache.var = var;
}

/// Training-mode batch norm of a whole batch at once (one shard).
pub fn bn_forward_train(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut Vec<f32>,
    cache: &mut BnCache,
) {
    let mo = bn_moments(x, c);
    bn_apply_train(x, c, &mo, x.len() / c, gamma, beta, eps, y, cache);
}

simd_fn! {
    /// Per-channel sums of `x` and of `x²` over rows of `sum.len()` channels.
    fn channel_moments(x: &[f32], sum: &mut [f32], sq: &mut [f32]) {
        let c = sum.len();
        for row in x.chunks_exact(c) {
            for j in 0..c {
                sum[j] += row[j];
                sq[j] += row[j] * row[j];
            }
        }
    }
}

simd_fn! {
    /// `y = x·scale + shift` per channel.
    fn scale_shift(x: &[f32], scale: &[f32], shift: &[f32], y: &mut [f32]) {
        let c = scale.len();
        for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
            for j in 0..c {
                yr[j] = xr[j] * scale[j] + shift[j];
            }
        }
    }
}

/// Inference-mode batch norm with running statistics.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_eval(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    y: &mut Vec<f32>,
) {
    let scale: Vec<f32> = (0..c).map(|j| gamma[j] / (var[j] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|j| beta[j] - mean[j] * scale[j]).collect();
    let y = reuse(y, x.len());
    for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        for j in 0..c {
            yr[j] = xr[j] * scale[j] + shift[j];
        }
    }
}

/// Per-channel `Σ dy` and `Σ dy·x̂` of a shard (`x` is the batch norm's input), summed over
/// shards before [`bn_apply_backward`].
pub fn bn_backward_sums(dy: &[f32], x: &[f32], cache: &BnCache, c: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; 2 * c];
    let (sb, sg) = v.split_at_mut(c);
    bn_grad_sums(dy, x, &cache.mean, &cache.inv_std, sb, sg);
    v
}

/// Batch-norm input gradient from the summed `[Σ dy ; Σ dy·x̂]` of the whole batch (`m` rows).
pub fn bn_apply_backward(
    dy: &[f32],
    x: &[f32],
    cache: &BnCache,
    gamma: &[f32],
    sums: &[f32],
    m: usize,
    dx: &mut [f32],
) {
    let c = gamma.len();
    let (sb, sg) = sums.split_at(c);
    let mf = m as f32;
    let k: Vec<f32> = (0..c).map(|j| gamma[j] * cache.inv_std[j] / mf).collect();
    let a: Vec<f32> = sb.iter().zip(&k).map(|(&b, &kk)| kk * b).collect();
    let b: Vec<f32> = sg
        .iter()
        .zip(&k)
        .zip(&cache.inv_std)
        .map(|((&g, &kk), &is)| kk * g * is)
        .collect();
    bn_input_grad(dy, x, &cache.mean, &k, &a, &b, mf, dx);
}

/// Batch-norm backward of a whole batch at once: adds to `dx`, `dgamma`, `dbeta`.
pub fn bn_backward(
    dy: &[f32],
    x: &[f32],
    cache: &BnCache,
    gamma: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let c = gamma.len();
    let sums = bn_backward_sums(dy, x, cache, c);
    add_assign(dbeta, &sums[..c]);
    add_assign(dgamma, &sums[c..]);
    bn_apply_backward(dy, x, cache, gamma, &sums, dy.len() / c, dx);
}

simd_fn! {
    /// `sb += Σ dy`, `sg += Σ dy·(x − μ)·inv_std` per channel.
    fn bn_grad_sums(dy: &[f32], x: &[f32], mean: &[f32], inv_std: &[f32], sb: &mut [f32], sg: &mut [f32]) {
        let c = sb.len();
        let mut sd = vec![0.0f32; c];
        for (dr, xr) in dy.chunks_exact(c).zip(x.chunks_exact(c)) {
            for j in 0..c {
                sb[j] += dr[j];
                sd[j] += dr[j] * (xr[j] - mean[j]);
            }
        }
        for j in 0..c {
            sg[j] += sd[j] * inv_std[j];
        }
    }
}

simd_fn! {
    /// `dx += k·m·dy − a − (x − μ)·b` per channel (`b` already carries `inv_std`).
    #[allow(clippy::too_many_arguments)]
    fn bn_input_grad(dy: &[f32], x: &[f32], mean: &[f32], k: &[f32], a: &[f32], b: &[f32], m: f32, dx: &mut [f32]) {
        let c = k.len();
        for ((dr, xr), gr) in dy.chunks_exact(c).zip(x.chunks_exact(c)).zip(dx.chunks_exact_mut(c)) {
            for j in 0..c {
                gr[j] += k[j] * m * dr[j] - a[j] - (xr[j] - mean[j]) * b[j];
            }
        }
    }
}

/// 3×3 average pooling, stride 1, padding 1, not counting the padding (NAS-Bench-201's
/// `avg_pool_3x3`).
pub fn avg_pool3(x: &[f32], s: Shape, y: &mut Vec<f32>) {
    let y = reuse(y, x.len());
    y.fill(0.0);
    let (h, w, c) = (s.h, s.w, s.c);
    for (xi, yi) in x.chunks_exact(s.image()).zip(y.chunks_exact_mut(s.image())) {
        for oy in 0..h {
            for ox in 0..w {
                let out = &mut yi[(oy * w + ox) * c..(oy * w + ox + 1) * c];
                let mut cnt = 0.0;
                for iy in oy.saturating_sub(1)..(oy + 2).min(h) {
                    for ix in ox.saturating_sub(1)..(ox + 2).min(w) {
                        add_assign(out, &xi[(iy * w + ix) * c..(iy * w + ix + 1) * c]);
                        cnt += 1.0;
                    }
                }
                out.iter_mut().for_each(|v| *v /= cnt);
            }
        }
    }
}

/// Backward of [`avg_pool3`].
pub fn avg_pool3_grad(dy: &[f32], s: Shape, dx: &mut [f32]) {
    let (h, w, c) = (s.h, s.w, s.c);
    for (di, gi) in dy
        .chunks_exact(s.image())
        .zip(dx.chunks_exact_mut(s.image()))
    {
        for oy in 0..h {
            for ox in 0..w {
                let ys = oy.saturating_sub(1)..(oy + 2).min(h);
                let xs = ox.saturating_sub(1)..(ox + 2).min(w);
                let cnt = (ys.len() * xs.len()) as f32;
                let d: Vec<f32> = di[(oy * w + ox) * c..(oy * w + ox + 1) * c]
                    .iter()
                    .map(|v| v / cnt)
                    .collect();
                for iy in ys {
                    for ix in xs.clone() {
                        add_assign(&mut gi[(iy * w + ix) * c..(iy * w + ix + 1) * c], &d);
                    }
                }
            }
        }
    }
}

/// 2×2 average pooling, stride 2 (even sizes).
pub fn avg_pool2(x: &[f32], s: Shape, y: &mut Vec<f32>) {
    let (oh, ow, c) = (s.h / 2, s.w / 2, s.c);
    let y = reuse(y, s.n * oh * ow * c);
    y.fill(0.0);
    for (xi, yi) in x
        .chunks_exact(s.image())
        .zip(y.chunks_exact_mut(oh * ow * c))
    {
        for oy in 0..oh {
            for ox in 0..ow {
                let out = &mut yi[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let q = (2 * oy + dy) * s.w + 2 * ox + dx;
                    add_assign(out, &xi[q * c..(q + 1) * c]);
                }
                out.iter_mut().for_each(|v| *v *= 0.25);
            }
        }
    }
}

/// Backward of [`avg_pool2`].
pub fn avg_pool2_grad(dy: &[f32], s: Shape, dx: &mut [f32]) {
    let (oh, ow, c) = (s.h / 2, s.w / 2, s.c);
    for (di, gi) in dy
        .chunks_exact(oh * ow * c)
        .zip(dx.chunks_exact_mut(s.image()))
    {
        for oy in 0..oh {
            for ox in 0..ow {
                let d: Vec<f32> = di[(oy * ow + ox) * c..(oy * ow + ox + 1) * c]
                    .iter()
                    .map(|v| v * 0.25)
                    .collect();
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let q = (2 * oy + dy) * s.w + 2 * ox + dx;
                    add_assign(&mut gi[q * c..(q + 1) * c], &d);
                }
            }
        }
    }
}

/// Global average pooling: `[n, h, w, c]` → `[n, c]`.
pub fn gap(x: &[f32], s: Shape, y: &mut Vec<f32>) {
    let y = reuse(y, s.n * s.c);
    y.fill(0.0);
    let inv = 1.0 / (s.h * s.w) as f32;
    for (xi, yi) in x.chunks_exact(s.image()).zip(y.chunks_exact_mut(s.c)) {
        for px in xi.chunks_exact(s.c) {
            add_assign(yi, px);
        }
        yi.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Backward of [`gap`].
pub fn gap_grad(dy: &[f32], s: Shape, dx: &mut [f32]) {
    let inv = 1.0 / (s.h * s.w) as f32;
    for (di, gi) in dy.chunks_exact(s.c).zip(dx.chunks_exact_mut(s.image())) {
        let d: Vec<f32> = di.iter().map(|v| v * inv).collect();
        for px in gi.chunks_exact_mut(s.c) {
            add_assign(px, &d);
        }
    }
}

/// Mean softmax cross-entropy of `logits: [n, k]` against `labels`, its gradient with respect to
/// the logits, and the number of correct argmax predictions.
pub fn cross_entropy(logits: &[f32], labels: &[u32], k: usize) -> (f32, Vec<f32>, usize) {
    let n = labels.len();
    let mut grad = vec![0.0f32; logits.len()];
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (i, (row, g)) in logits
        .chunks_exact(k)
        .zip(grad.chunks_exact_mut(k))
        .enumerate()
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let l = labels[i] as usize;
        loss += sum.ln() - (row[l] - max) as f64;
        for (j, gj) in g.iter_mut().enumerate() {
            let p = ((row[j] - max) as f64).exp() / sum;
            *gj = ((p - if j == l { 1.0 } else { 0.0 }) / n as f64) as f32;
        }
        if crate::nn::linalg::argmax(row) == l {
            correct += 1;
        }
    }
    ((loss / n as f64) as f32, grad, correct)
}
