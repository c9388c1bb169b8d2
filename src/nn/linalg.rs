//! Dense kernels on row-major f32 slices: the matrix product against PyTorch-layout weights
//! (through the `gemm` crate, which candle's CPU backend uses too) and the activations.

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

/// Products below this many multiply-adds run on the calling thread: splitting them costs more
/// than it saves.
const PARALLEL_MACS: usize = 1 << 21;

/// `y[m×n] (+)= x[m×k] · W[:, col..col+k]ᵀ`, where `W` is row-major with row stride `ldw`
/// (the PyTorch `Linear.weight` layout `[out, in]`, so `n` rows of `W` are used) and `x` has row
/// stride `ldx`. With `accumulate`, the product is added to `y`; otherwise `y` is overwritten.
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
    if m == 0 || n == 0 {
        return;
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
        return;
    }
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

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline]
pub fn relu_inplace(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// In-place softmax of one row; returns nothing, leaves probabilities that sum to 1.
#[inline]
pub fn softmax_inplace(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn softmax_and_argmax() {
        let mut v = vec![1.0, 3.0, 3.0, -2.0];
        assert_eq!(argmax(&v), 1);
        softmax_inplace(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((v[1] - v[2]).abs() < 1e-7 && v[1] > v[0]);
    }
}
