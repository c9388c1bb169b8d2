//! Dense kernels on row-major f32 slices: the matrix product against PyTorch-layout weights
//! (the engine's own kernel over packed weight panels, portable, AVX2+FMA and AVX-512, all
//! with the same bits; the `gemm` crate, which candle's CPU backend uses too, for the large
//! products of the image backbone and the trainer) and the activations.

// Index loops over lanes and vertex numbers read more clearly than iterator chains here.
#![allow(clippy::needless_range_loop)]

use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads large matrix products may use (0 = all available cores).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The thread count large products use.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Multiply-adds done so far by the matrix products, the head and edge dot products and the
/// set attention (feature `count-macs`; `examples/count_macs.rs`).
#[cfg(feature = "count-macs")]
pub static MACS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds `n` to `MACS` (nothing without feature `count-macs`).
#[inline(always)]
pub fn count_macs(n: usize) {
    #[cfg(feature = "count-macs")]
    MACS.fetch_add(n as u64, Ordering::Relaxed);
    #[cfg(not(feature = "count-macs"))]
    let _ = n;
}

/// Products below this many multiply-adds run on the calling thread: splitting them costs more
/// than it saves.
const PARALLEL_MACS: usize = 1 << 21;

/// Output columns of one packed weight panel: two AVX2 registers (and the portable build's
/// width)...
const PANEL: usize = 16;
/// ... or two AVX-512 registers, on CPUs that have AVX-512F.
const WIDE_PANEL: usize = 32;
/// Rows of `x` one kernel tile works on (6 x 16 accumulators: twelve AVX2 registers).
const TILE: usize = 6;

/// `y[m×n] (+)= x[m×k] · W[:, col..col+k]ᵀ`, where `W` is row-major with row stride `ldw`
/// (the PyTorch `Linear.weight` layout `[out, in]`, so `n` rows of `W` are used) and `x` has row
/// stride `ldx`. With `accumulate`, the product is added to `y`; otherwise `y` is overwritten.
///
/// Every element is one fused multiply-add chain over `k` in order, from zero, then added to
/// `y` (or stored): the same rounding whatever `m`, `n`, the batch a row sits in, the thread
/// split or the machine (the portable build uses `f32::mul_add`, the AVX2 build FMA
/// instructions; both round once per step). These are the bits `gemm`'s general path gives for
/// `k <= 512`. The weight is packed per call into panels of 16 or 32 columns ([`Panels`]), a
/// copy of `n·k` values against `m·n·k` multiply-adds; layers pack theirs once.
///
/// # Panics
/// If a slice is too short for the given sizes (a programming error inside the engine).
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    if !wt_product_needed(y, x, ldx, w, ldw, m, n, k, accumulate) {
        return;
    }
    PACKED.with(|cell| {
        let panels = Panels::pack_into(cell.take(), w, ldw, n, k, panel_width());
        let init = if accumulate { Init::Add } else { Init::Zero };
        matmul_panels(y, x, ldx, &panels, m, init);
        cell.set(panels.data);
    });
}

/// The checks both `matmul_wt` versions make: slices long enough for the sizes (panics
/// otherwise), and false when nothing is left to multiply (no outputs, or `k = 0`, where
/// `y` is then cleared unless accumulating).
#[allow(clippy::too_many_arguments)]
fn wt_product_needed(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(y.len() >= m * n, "matmul_wt: output too short");
    assert!(
        k == 0 || x.len() >= (m - 1) * ldx + k,
        "matmul_wt: input too short"
    );
    assert!(
        k == 0 || w.len() >= (n - 1) * ldw + k,
        "matmul_wt: weight too short"
    );
    if k == 0 {
        if !accumulate {
            y[..m * n].fill(0.0);
        }
        return false;
    }
    true
}

/// What a packed product starts each output element from.
#[derive(Clone, Copy, Debug)]
pub enum Init<'a> {
    /// Overwrite `y` with the product.
    Zero,
    /// Add the product to `y`.
    Add,
    /// `y[i][j] = bias[j] + product` (the same bits as filling `y` with the bias and adding).
    Bias(&'a [f32]),
}

/// A weight block `W[:n, col..col+k]` packed for [`matmul_panels`]: `ceil(n/width)` panels of
/// `k` x `width` values, `width` 16 or 32.
#[derive(Clone, Debug)]
pub struct Panels {
    data: Vec<f32>,
    n: usize,
    k: usize,
    /// Columns per panel: [`WIDE_PANEL`] when the AVX-512 kernel runs, else [`PANEL`].
    width: usize,
}

impl Panels {
    /// Packs `n` rows of `k` values of a row-major weight with row stride `ldw`, in panels as
    /// wide as this CPU's kernel takes.
    pub fn pack(w: &[f32], ldw: usize, n: usize, k: usize) -> Self {
        Self::pack_into(Vec::new(), w, ldw, n, k, panel_width())
    }

    /// [`Panels::pack`] into `buf` (its old content dropped, its allocation reused), in
    /// panels of `width` columns: column `j` of panel `c` is row `width c + j` of `W`, zero
    /// past `n`.
    fn pack_into(buf: Vec<f32>, w: &[f32], ldw: usize, n: usize, k: usize, width: usize) -> Self {
        assert!(
            k == 0 || n == 0 || w.len() >= (n - 1) * ldw + k,
            "Panels::pack: weight too short"
        );
        Self::pack_rows(buf, n, k, width, |r| &w[r * ldw..r * ldw + k])
    }

    /// Packs the weights `parts` stacked row after row (each row-major with rows of `k`
    /// values) as one weight, without copying them together first.
    pub fn pack_stacked(parts: &[&[f32]], k: usize) -> Self {
        assert!(
            k > 0 && parts.iter().all(|p| p.len().is_multiple_of(k)),
            "Panels::pack_stacked: parts are not whole rows of {k}"
        );
        let mut starts = Vec::with_capacity(parts.len());
        let mut n = 0;
        for p in parts {
            starts.push(n);
            n += p.len() / k;
        }
        Self::pack_rows(Vec::new(), n, k, panel_width(), |r| {
            let i = starts.partition_point(|&s| s <= r) - 1;
            let at = (r - starts[i]) * k;
            &parts[i][at..at + k]
        })
    }

    /// Packs `n` rows of `k` values, row `r` given by `row(r)`, in panels of `width`.
    fn pack_rows<'w>(
        mut buf: Vec<f32>,
        n: usize,
        k: usize,
        width: usize,
        row: impl Fn(usize) -> &'w [f32],
    ) -> Self {
        buf.clear();
        buf.resize(n.div_ceil(width) * k * width, 0.0);
        if k > 0 {
            for (c, panel) in buf.chunks_exact_mut(k * width).enumerate() {
                for j in 0..width.min(n - c * width) {
                    for (p, &v) in row(c * width + j)[..k].iter().enumerate() {
                        panel[p * width + j] = v;
                    }
                }
            }
        }
        Panels {
            data: buf,
            n,
            k,
            width,
        }
    }
}

/// `y[m×n] = init + x[m×k] · Wᵀ` for a packed `W` (see [`matmul_wt`] for the rounding).
///
/// # Panics
/// If a slice is too short for the given sizes (a programming error inside the engine).
pub fn matmul_panels(y: &mut [f32], x: &[f32], ldx: usize, w: &Panels, m: usize, init: Init) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    count_macs(m * n * k);
    assert!(y.len() >= m * n, "matmul_panels: output too short");
    assert!(
        k == 0 || x.len() >= (m - 1) * ldx + k,
        "matmul_panels: input too short"
    );
    if let Init::Bias(b) = init {
        assert!(b.len() >= n, "matmul_panels: bias too short");
    }
    let y = &mut y[..m * n];
    if k == 0 {
        for row in y.chunks_exact_mut(n) {
            match init {
                Init::Zero => row.fill(0.0),
                Init::Add => {}
                Init::Bias(b) => row.copy_from_slice(&b[..n]),
            }
        }
        return;
    }
    if m * n * k >= PARALLEL_MACS && m >= 2 * TILE && threads() > 1 {
        // Two halves on two threads, split at a tile boundary (the split changes no bits).
        let half = (m / 2).div_ceil(TILE) * TILE;
        let (ya, yb) = y.split_at_mut(half * n);
        let xb = &x[half * ldx..];
        rayon::join(
            || panels_times(ya, x, ldx, w, half, init),
            || panels_times(yb, xb, ldx, w, m - half, init),
        );
    } else {
        panels_times(y, x, ldx, w, m, init);
    }
}

/// The panel width of this CPU's kernel.
fn panel_width() -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        return WIDE_PANEL;
    }
    PANEL
}

/// Runs the kernel for `w`'s panel width: AVX-512 for wide panels, else AVX2+FMA or portable.
fn panels_times(y: &mut [f32], x: &[f32], ldx: usize, w: &Panels, m: usize, init: Init) {
    let (n, k) = (w.n, w.k);
    #[cfg(target_arch = "x86_64")]
    if w.width == WIDE_PANEL {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512(
            y: &mut [f32],
            x: &[f32],
            ldx: usize,
            packed: &[f32],
            m: usize,
            n: usize,
            k: usize,
            init: Init,
        ) {
            tiles::<WIDE_PANEL>(y, x, ldx, packed, m, n, k, init)
        }
        assert!(std::is_x86_feature_detected!("avx512f"));
        // SAFETY: the CPU has AVX-512F (checked when the panels were packed, and above).
        unsafe { avx512(y, x, ldx, &w.data, m, n, k, init) };
        return;
    }
    panel_product(y, x, ldx, &w.data, m, n, k, init);
}

/// [`matmul_wt`] through the `gemm` crate (cache-blocked, packed, threaded): for the large
/// products of the image backbone and the trainer, where blocking pays. Its rounding depends
/// on the shape (the path `gemm` takes) and on the machine's cache sizes for `k > 512`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_wt_blocked(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    if !wt_product_needed(y, x, ldx, w, ldw, m, n, k, accumulate) {
        return;
    }
    count_macs(m * n * k);
    let par = if m * n * k >= PARALLEL_MACS && threads() > 1 {
        gemm::Parallelism::Rayon(threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the product touches:
    // y[i*n + j], x[i*ldx + p], w[j*ldw + p] for i < m, j < n, p < k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            ldx as isize,
            w.as_ptr(),
            ldw as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// True when the CPU has AVX2 and FMA (checked once; the standard library caches it).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled twice, portably and for AVX2+FMA, and picks the
/// second at run time when the CPU has it. The bodies are plain loops over slices that the
/// compiler vectorises; one binary serves every x86-64 machine.
#[macro_export]
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                if $crate::nn::linalg::has_avx2_fma() {
                    // SAFETY: the CPU supports the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

thread_local! {
    /// The panel buffer of this thread's last product (kept to avoid an allocation per call).
    static PACKED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

simd_fn! {
    /// [`tiles`] over 16-column panels, portable or AVX2+FMA.
    #[allow(clippy::too_many_arguments)]
    fn panel_product(
        y: &mut [f32],
        x: &[f32],
        ldx: usize,
        packed: &[f32],
        m: usize,
        n: usize,
        k: usize,
        init: Init,
    ) {
        tiles::<PANEL>(y, x, ldx, packed, m, n, k, init)
    }
}

/// The tiles of a product over panels `W` columns wide: rows in blocks of [`TILE`], then
/// the rest.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<const W: usize>(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    packed: &[f32],
    m: usize,
    n: usize,
    k: usize,
    init: Init,
) {
    let mut i = 0;
    while i + TILE <= m {
        tile::<TILE, W>(y, x, ldx, packed, i, n, k, init);
        i += TILE;
    }
    match m - i {
        0 => {}
        1 => tile::<1, W>(y, x, ldx, packed, i, n, k, init),
        2 => tile::<2, W>(y, x, ldx, packed, i, n, k, init),
        3 => tile::<3, W>(y, x, ldx, packed, i, n, k, init),
        4 => tile::<4, W>(y, x, ldx, packed, i, n, k, init),
        _ => tile::<5, W>(y, x, ldx, packed, i, n, k, init),
    }
}

/// Rows `i..i+R` of the product, every panel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const R: usize, const W: usize>(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    packed: &[f32],
    i: usize,
    n: usize,
    k: usize,
    init: Init,
) {
    assert!(x.len() >= (i + R - 1) * ldx + k && packed.len() >= n.div_ceil(W) * k * W);
    let xp = x[i * ldx..].as_ptr();
    for (c, panel) in packed.chunks_exact(k * W).enumerate() {
        let mut acc = [[0.0f32; W]; R];
        let wp = panel.as_ptr();
        for p in 0..k {
            // SAFETY: p < k, r < R: inside x (asserted above) and inside the panel (k x W).
            let wv: &[f32; W] = unsafe { &*(wp.add(p * W) as *const [f32; W]) };
            for r in 0..R {
                let xv = unsafe { *xp.add(r * ldx + p) };
                for l in 0..W {
                    acc[r][l] = xv.mul_add(wv[l], acc[r][l]);
                }
            }
        }
        let cols = W.min(n - c * W);
        for r in 0..R {
            let out = &mut y[(i + r) * n + c * W..(i + r) * n + c * W + cols];
            match init {
                Init::Zero => out.copy_from_slice(&acc[r][..cols]),
                Init::Add => {
                    for (o, a) in out.iter_mut().zip(&acc[r]) {
                        *o += a;
                    }
                }
                Init::Bias(b) => {
                    for ((o, a), b) in out.iter_mut().zip(&acc[r]).zip(&b[c * W..]) {
                        *o = b + a;
                    }
                }
            }
        }
    }
}

/// The logistic function, `1 / (1 + e^-x)`, branch-free.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_normal(-x))
}

/// `e^x` for `x` clamped to the normal range `[-87.33, 88.72]`: as [`fast_exp`] but without
/// branches (so loops over it vectorise). Below the range it returns about 1.2e-38, not 0.
#[inline(always)]
pub fn exp_normal(x: f32) -> f32 {
    let (n, p) = exp_reduced(x.clamp(-87.336_54, 88.722_83));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `x = n ln2 + r` with `n` rounded to nearest (the 1.5 * 2^23 trick: no SSE4.1 rounding
/// instruction needed) and `|r| <= ln2 / 2`; returns `n` and `e^r` by its Taylor polynomial
/// to degree 6 (error < 3e-8 relative on the reduced range).
#[inline(always)]
fn exp_reduced(x: f32) -> (f32, f32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = n * -LN2_HI + x;
    let r = n * -LN2_LO + r;
    let p = r * (1.0 / 720.0) + 1.0 / 120.0;
    let p = r * p + 1.0 / 24.0;
    let p = r * p + 1.0 / 6.0;
    let p = r * p + 0.5;
    let p = r * p + 1.0;
    let p = r * p + 1.0;
    (n, p)
}

/// `e^x` to about 2 ulp, branch-free (vectorisable): `x = n ln2 + r`, `|r| <= ln2 / 2`, a
/// degree-6 polynomial for `e^r` and the exponent bits for `2^n` (two steps for subnormal
/// results). Inputs below -103.9 give 0, above 88.7 give `f32::MAX`-range values.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    if x < -103.9 {
        return 0.0;
    }
    let (n, p) = exp_reduced(x.min(88.722_83));
    let bits = ((n as i32 + 127).max(0) as u32) << 23;
    if n < -126.0 {
        // Subnormal results: scale in two steps.
        return p
            * f32::from_bits(((n as i32 + 127 + 64).max(0) as u32) << 23)
            * f32::from_bits(((127 - 64) as u32) << 23);
    }
    p * f32::from_bits(bits)
}

simd_fn! {
    /// In-place `max(x, 0)`.
    pub fn relu_inplace(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = x.max(0.0);
        }
    }
}

/// In-place softmax of one row; returns nothing, leaves probabilities that sum to 1.
#[inline]
pub fn softmax_inplace(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = exp_normal(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x *= inv;
    }
}

/// Index of the first maximum (ties resolve to the lowest index, as `torch.argmax` does).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Beyond this, `tanh` rounds to ±1 in f32.
const TANH_CLAMP: f32 = 7.905_311;
/// Numerator coefficients of [`fast_tanh`] (odd powers 1..13).
const TANH_A: [f32; 7] = [
    4.893_524_6e-3,
    6.372_619_3e-4,
    1.485_722_4e-5,
    5.122_297e-8,
    -8.604_672e-11,
    2.000_188e-13,
    -2.760_768_5e-16,
];
/// Denominator coefficients of [`fast_tanh`] (even powers 0..6).
const TANH_B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];

/// `tanh` as a rational function (the minimax approximation Eigen and XLA use for f32), accurate
/// to a few units in the last place, branch-free so that loops over it vectorise.
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP);
    let x2 = x * x;
    let mut p = x2 * TANH_A[6] + TANH_A[5];
    for k in (0..5).rev() {
        p = x2 * p + TANH_A[k];
    }
    let p = x * p;
    let q = x2 * TANH_B[3] + TANH_B[2];
    let q = x2 * q + TANH_B[1];
    let q = x2 * q + TANH_B[0];
    p / q
}

/// `Σ_j w[j] · tanh(a[j] + c[j])`: the predictor head's output layer over one hidden row.
/// The hot loop of ranking; hand-vectorised for AVX2+FMA, portable otherwise.
pub fn dot_tanh(a: &[f32], c: &[f32], w: &[f32]) -> f32 {
    count_macs(a.len());
    let n = a.len().min(c.len()).min(w.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the slices hold at least `n` values.
            return unsafe { dot_tanh_avx512(&a[..n], &c[..n], &w[..n]) };
        }
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA; the slices hold at least `n` values.
            return unsafe { dot_tanh_avx2(&a[..n], &c[..n], &w[..n]) };
        }
    }
    dot_tanh_portable(&a[..n], &c[..n], &w[..n])
}

fn dot_tanh_portable(a: &[f32], c: &[f32], w: &[f32]) -> f32 {
    // Eight independent partial sums over fixed-size blocks, so the compiler keeps them in
    // vector lanes with no bounds checks.
    let mut acc = [0.0f32; 8];
    let blocks = a
        .chunks_exact(8)
        .zip(c.chunks_exact(8))
        .zip(w.chunks_exact(8));
    for ((a8, c8), w8) in blocks {
        let (a8, c8, w8): (&[f32; 8], &[f32; 8], &[f32; 8]) = (
            a8.try_into().unwrap(),
            c8.try_into().unwrap(),
            w8.try_into().unwrap(),
        );
        for l in 0..8 {
            acc[l] += w8[l] * fast_tanh(a8[l] + c8[l]);
        }
    }
    let n = a.len();
    let mut tail = 0.0;
    for j in n / 8 * 8..n {
        tail += w[j] * fast_tanh(a[j] + c[j]);
    }
    acc.iter().sum::<f32>() + tail
}

/// The AVX versions of [`dot_tanh`]: [`fast_tanh`]'s rational function on `$lanes` lanes with
/// fused multiply-adds, and the quotient through the reciprocal estimate and one Newton step,
/// cheaper than a division (about 23 bits from AVX2's 12-bit estimate, more from AVX-512's
/// 14-bit one, so the two agree to rounding, not bit for bit, as neither does with the
/// portable version). Two accumulators take alternate blocks; then the lanes are summed in
/// order and the tail added.
#[cfg(target_arch = "x86_64")]
macro_rules! dot_tanh_lanes {
    ($(#[$m:meta])* $name:ident, $feature:literal, $lanes:literal,
     set1 = $set1:ident, zero = $zero:ident, load = $load:ident, store = $store:ident,
     add = $add:ident, mul = $mul:ident, min = $min:ident, max = $max:ident,
     fmadd = $fmadd:ident, fnmadd = $fnmadd:ident, rcp = $rcp:ident) => {
        $(#[$m])*
        #[target_feature(enable = $feature)]
        unsafe fn $name(a: &[f32], c: &[f32], w: &[f32]) -> f32 {
            use std::arch::x86_64::*;
            let n = a.len();
            let whole = n / $lanes * $lanes;
            let k = |v: f32| $set1(v);
            let (lo, hi) = (k(-TANH_CLAMP), k(TANH_CLAMP));
            let mut acc = [$zero(), $zero()];
            let mut i = 0;
            while i < whole {
                // SAFETY: i + $lanes <= n for every slice.
                let x = $add($load(a.as_ptr().add(i)), $load(c.as_ptr().add(i)));
                let x = $min($max(x, lo), hi);
                let x2 = $mul(x, x);
                let mut p = $fmadd(x2, k(TANH_A[6]), k(TANH_A[5]));
                for &coef in TANH_A[..5].iter().rev() {
                    p = $fmadd(x2, p, k(coef));
                }
                let p = $mul(x, p);
                let mut q = $fmadd(x2, k(TANH_B[3]), k(TANH_B[2]));
                q = $fmadd(x2, q, k(TANH_B[1]));
                q = $fmadd(x2, q, k(TANH_B[0]));
                let r = $rcp(q);
                let r = $mul(r, $fnmadd(q, r, k(2.0)));
                let t = $mul(p, r);
                let j = (i / $lanes) & 1;
                acc[j] = $fmadd($load(w.as_ptr().add(i)), t, acc[j]);
                i += $lanes;
            }
            let mut lanes = [0.0f32; $lanes];
            $store(lanes.as_mut_ptr(), $add(acc[0], acc[1]));
            let mut total = lanes.iter().sum::<f32>();
            for j in whole..n {
                total += w[j] * fast_tanh(a[j] + c[j]);
            }
            total
        }
    };
}

#[cfg(target_arch = "x86_64")]
dot_tanh_lanes!(
    /// [`dot_tanh`] on eight lanes (AVX2 and FMA).
    dot_tanh_avx2, "avx2,fma", 8,
    set1 = _mm256_set1_ps, zero = _mm256_setzero_ps, load = _mm256_loadu_ps,
    store = _mm256_storeu_ps, add = _mm256_add_ps, mul = _mm256_mul_ps, min = _mm256_min_ps,
    max = _mm256_max_ps, fmadd = _mm256_fmadd_ps, fnmadd = _mm256_fnmadd_ps, rcp = _mm256_rcp_ps
);

#[cfg(target_arch = "x86_64")]
dot_tanh_lanes!(
    /// [`dot_tanh`] on sixteen lanes (AVX-512F).
    dot_tanh_avx512, "avx512f", 16,
    set1 = _mm512_set1_ps, zero = _mm512_setzero_ps, load = _mm512_loadu_ps,
    store = _mm512_storeu_ps, add = _mm512_add_ps, mul = _mm512_mul_ps, min = _mm512_min_ps,
    max = _mm512_max_ps, fmadd = _mm512_fmadd_ps, fnmadd = _mm512_fnmadd_ps,
    rcp = _mm512_rcp14_ps
);

simd_fn! {
    /// `Σ_j w[j] · max(a[j] + b[j], 0)`.
    pub fn dot_relu(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
        dot_relu_n([a], [b], w)[0]
    }
}

simd_fn! {
    /// [`dot_relu`] of one `w` with four pairs `(a[i], b[i])` at once: the same operations in
    /// the same order for each pair (so the same bits as four calls), as four independent
    /// chains.
    pub fn dot_relu4(a: [&[f32]; 4], b: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
        dot_relu_n(a, b, w)
    }
}

/// [`dot_relu`] of one `w` with `N` pairs, each summed in eight lanes over whole blocks of
/// eight, then the lanes in order, then the tail: `N` independent chains.
#[inline(always)]
fn dot_relu_n<const N: usize>(a: [&[f32]; N], b: [&[f32]; N], w: &[f32]) -> [f32; N] {
    let mut n = w.len();
    for i in 0..N {
        n = n.min(a[i].len()).min(b[i].len());
    }
    count_macs(N * n);
    let w = &w[..n];
    let mut acc = [[0.0f32; 8]; N];
    for (blk, w8) in w.chunks_exact(8).enumerate() {
        let w8: &[f32; 8] = w8.try_into().unwrap();
        for i in 0..N {
            let a8: &[f32; 8] = a[i][blk * 8..blk * 8 + 8].try_into().unwrap();
            let b8: &[f32; 8] = b[i][blk * 8..blk * 8 + 8].try_into().unwrap();
            for l in 0..8 {
                acc[i][l] += w8[l] * (a8[l] + b8[l]).max(0.0);
            }
        }
    }
    let mut out = [0.0; N];
    for i in 0..N {
        let mut tail = 0.0;
        for j in n / 8 * 8..n {
            tail += w[j] * (a[i][j] + b[i][j]).max(0.0);
        }
        out[i] = acc[i].iter().sum::<f32>() + tail;
    }
    out
}

simd_fn! {
    /// `o[j] += f[j]`.
    pub fn add_inplace(o: &mut [f32], f: &[f32]) {
        for (a, &b) in o.iter_mut().zip(f) {
            *a += b;
        }
    }
}

simd_fn! {
    /// `o[j] += max(f[j], 0)`: the MAB's residual feed-forward step.
    pub fn add_relu(o: &mut [f32], f: &[f32]) {
        for (a, &b) in o.iter_mut().zip(f) {
            *a += b.max(0.0);
        }
    }
}

simd_fn! {
    /// In-place `tanh`.
    pub fn tanh_inplace(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = fast_tanh(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_way_dot_relu_has_the_bits_of_four_calls() {
        for n in [0, 5, 8, 13, 224] {
            let v = |seed: f32| -> Vec<f32> {
                (0..n)
                    .map(|j| ((j as f32 + seed) * 0.731).sin() * 3.0)
                    .collect()
            };
            let (a, b) = (
                [v(1.0), v(2.0), v(3.0), v(4.0)],
                [v(5.0), v(6.0), v(7.0), v(8.0)],
            );
            let w = v(9.0);
            let got = dot_relu4(
                [&a[0], &a[1], &a[2], &a[3]],
                [&b[0], &b[1], &b[2], &b[3]],
                &w,
            );
            for i in 0..4 {
                let want = dot_relu(&a[i], &b[i], &w);
                assert_eq!(got[i].to_bits(), want.to_bits(), "n = {n}, pair {i}");
                if n > 0 {
                    assert_ne!(
                        want, 0.0,
                        "n = {n}: a test on all-zero sums would show nothing"
                    );
                }
            }
        }
    }

    #[test]
    fn stacked_parts_pack_as_their_concatenation() {
        let k = 7;
        let parts: Vec<Vec<f32>> = [3usize, 40, 1]
            .iter()
            .enumerate()
            .map(|(p, &rows)| (0..rows * k).map(|i| (p * 1000 + i) as f32).collect())
            .collect();
        let whole: Vec<f32> = parts.concat();
        let refs: Vec<&[f32]> = parts.iter().map(Vec::as_slice).collect();
        let stacked = Panels::pack_stacked(&refs, k);
        let packed = Panels::pack(&whole, k, 44, k);
        assert_eq!((stacked.n, stacked.k), (44, k));
        assert_eq!(stacked.data, packed.data);
    }

    #[test]
    fn matmul_matches_naive_with_strides_and_accumulation() {
        let (m, n, k, ldx, ldw) = (5, 7, 3, 4, 6);
        let x: Vec<f32> = (0..m * ldx).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * ldw).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut y = vec![1.0f32; m * n];
        matmul_wt(&mut y, &x[1..], ldx, &w[2..], ldw, m, n, k, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0
                    + (0..k)
                        .map(|p| x[1 + i * ldx + p] * w[2 + j * ldw + p])
                        .sum::<f32>();
                assert!((y[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    /// The definition [`matmul_panels`] must meet bit for bit: one fused multiply-add chain per
    /// element over `k` in order, from zero, then added to the start value.
    #[allow(clippy::too_many_arguments)]
    fn fma_chain(
        x: &[f32],
        ldx: usize,
        w: &[f32],
        ldw: usize,
        m: usize,
        n: usize,
        k: usize,
        start: &[f32],
    ) -> Vec<f32> {
        let mut y = start.to_vec();
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc = x[i * ldx + p].mul_add(w[j * ldw + p], acc);
                }
                y[i * n + j] += acc;
            }
        }
        y
    }

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + seed) * 0.7311).sin() * 1.7)
            .collect()
    }

    #[test]
    fn packed_products_equal_the_fma_chain_bit_for_bit() {
        for &m in &[1usize, 2, 5, 6, 7, 13, 40] {
            for &n in &[1usize, 15, 16, 17, 33, 168] {
                for &k in &[0usize, 1, 3, 56, 129, 512] {
                    let (ldx, ldw) = (k + 3, k + 5);
                    let x = values(m * ldx, 0.5);
                    let w = values(n * ldw + 2, 1.5);
                    let bias = values(n, 2.5);
                    let panels = Panels::pack(&w[2..], ldw, n, k);
                    let start = values(m * n, 3.5);
                    let want_add = fma_chain(&x, ldx, &w[2..], ldw, m, n, k, &start);
                    let mut y = start.clone();
                    matmul_panels(&mut y, &x, ldx, &panels, m, Init::Add);
                    let same = |a: &[f32], b: &[f32]| {
                        a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
                    };
                    assert!(same(&y, &want_add), "add {m}x{n}x{k}");
                    let zeros = vec![0.0; m * n];
                    let want_zero = fma_chain(&x, ldx, &w[2..], ldw, m, n, k, &zeros);
                    let mut y = start.clone();
                    matmul_panels(&mut y, &x, ldx, &panels, m, Init::Zero);
                    assert!(same(&y, &want_zero), "zero {m}x{n}x{k}");
                    let rows: Vec<f32> = (0..m).flat_map(|_| bias.iter().copied()).collect();
                    let want_bias = fma_chain(&x, ldx, &w[2..], ldw, m, n, k, &rows);
                    let mut y = start.clone();
                    matmul_panels(&mut y, &x, ldx, &panels, m, Init::Bias(&bias));
                    assert!(same(&y, &want_bias), "bias {m}x{n}x{k}");
                    // The unpacked entry point packs per call: the same bits.
                    let mut y = start.clone();
                    matmul_wt(&mut y, &x, ldx, &w[2..], ldw, m, n, k, true);
                    assert!(same(&y, &want_add), "matmul_wt {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    fn every_kernel_version_gives_the_chains_bits() {
        // The portable version (what a CPU without AVX2 runs, and every non-x86 build), the
        // AVX2 one (16-column panels) and, where the CPU has it, the AVX-512 one (32 columns).
        let (m, n, k) = (13, 37, 129);
        let x = values(m * k, 0.9);
        let w = values(n * k, 1.9);
        let bias = values(n, 2.9);
        let rows: Vec<f32> = (0..m).flat_map(|_| bias.iter().copied()).collect();
        let want = fma_chain(&x, k, &w, k, m, n, k, &rows);
        let same = |y: &[f32]| y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        let narrow = Panels::pack_into(Vec::new(), &w, k, n, k, PANEL);
        let mut y = vec![0.0; m * n];
        tiles::<PANEL>(&mut y, &x, k, &narrow.data, m, n, k, Init::Bias(&bias));
        assert!(same(&y), "portable");
        let mut y = vec![0.0; m * n];
        panels_times(&mut y, &x, k, &narrow, m, Init::Bias(&bias));
        assert!(same(&y), "16-column panels (AVX2 where the CPU has it)");
        let mut y = vec![0.0; m * n];
        matmul_panels(
            &mut y,
            &x,
            k,
            &Panels::pack(&w, k, n, k),
            m,
            Init::Bias(&bias),
        );
        assert!(same(&y), "this CPU's widest kernel");
    }

    #[test]
    fn a_product_split_across_threads_has_the_bits_of_one_thread() {
        // Above PARALLEL_MACS, with an odd row count: the two halves meet inside no tile.
        let (m, n, k) = (301, 40, 512);
        assert!(m * n * k >= PARALLEL_MACS);
        let x = values(m * k, 0.25);
        let w = values(n * k, 0.75);
        let mut y = vec![0.0; m * n];
        matmul_wt(&mut y, &x, k, &w, k, m, n, k, false);
        let want = fma_chain(&x, k, &w, k, m, n, k, &vec![0.0; m * n]);
        assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn packed_products_equal_gemm_on_its_general_path() {
        // gemm's general path (more than 16 x 16 outputs, more than one row and column, k
        // from 3 to 512) is one FMA chain per element too; its small-size paths are not.
        for &(m, n, k) in &[
            (72, 168, 56),
            (20, 224, 56),
            (200, 56, 512),
            (3, 168, 56),
            (40, 7, 112),
        ] {
            let x = values(m * k, 0.1);
            let w = values(n * k, 0.2);
            let start = values(m * n, 0.3);
            let (mut a, mut b) = (start.clone(), start);
            matmul_wt(&mut a, &x, k, &w, k, m, n, k, true);
            matmul_wt_blocked(&mut b, &x, k, &w, k, m, n, k, true);
            assert!(
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{m}x{n}x{k}"
            );
        }
    }

    #[test]
    fn softmax_and_argmax() {
        let mut v = vec![1.0, 3.0, 3.0, -2.0];
        assert_eq!(argmax(&v), 1);
        softmax_inplace(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((v[1] - v[2]).abs() < 1e-7 && v[1] > v[0]);
    }

    #[test]
    fn fast_tanh_is_accurate() {
        let mut worst = 0.0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.001;
            worst = worst.max((fast_tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-6, "max error {worst}");
        assert!((fast_tanh(50.0) - 1.0).abs() < 1e-6 && (fast_tanh(-50.0) + 1.0).abs() < 1e-6);
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin() * 3.0).collect();
        let c: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
        let w: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let want: f32 = (0..37).map(|j| w[j] * (a[j] + c[j]).tanh()).sum();
        assert!((dot_tanh(&a, &c, &w) - want).abs() < 1e-5);
    }

    #[test]
    fn dot_tanh_paths_agree_with_the_portable_one() {
        for &n in &[5usize, 37, 56, 512, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.31).sin() * 4.0).collect();
            let c: Vec<f32> = (0..n).map(|i| (i as f32 * 0.17).cos()).collect();
            let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin()).collect();
            let want = dot_tanh_portable(&a, &c, &w);
            let scale: f32 = w.iter().map(|v| v.abs()).sum();
            let close = |got: f32| (got - want).abs() <= 2e-6 * scale;
            assert!(close(dot_tanh(&a, &c, &w)), "dispatched, n = {n}");
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2_fma() {
                    // SAFETY: the CPU has the features.
                    assert!(close(unsafe { dot_tanh_avx2(&a, &c, &w) }), "avx2, n = {n}");
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features.
                    assert!(
                        close(unsafe { dot_tanh_avx512(&a, &c, &w) }),
                        "avx512, n = {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 0.00088;
            let want = (x as f64).exp();
            worst = worst.max(((fast_exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert_eq!(fast_exp(-200.0), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
        assert!((sigmoid(0.3) - 1.0 / (1.0 + (-0.3f32).exp())).abs() < 1e-7);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) == 1.0);
    }
}
