//! AVX2+FMA convolution kernels for training, over tap index tables.
//!
//! A table lists, for each destination pixel and tap, the source pixel (or −1 for padding):
//! the forward table maps output pixels to input pixels; its transpose maps input pixels to the
//! output pixels that read them. With it, the forward pass and the input gradient are the same
//! "gather" kernel (`out[i] = Σ_t Σ_c src[idx(i,t)][c] · W[t][c][·]`), and the weight gradient is
//! `dW[t][c][·] += Σ_i src[idx(i,t)][c] · g[i][·]`. Register blocking: eight destination pixels
//! per block in the gather kernel, eight (input channel × output lane group) accumulators in the
//! weight-gradient kernel; padding taps read a row of zeros, so there are no branches inside.

#![allow(clippy::too_many_arguments)]

use std::arch::x86_64::*;

/// Destination pixels per block of the gather kernel.
const PX: usize = 8;

/// `out[i][0..n_out] (+)= Σ_t Σ_c src[idx[i·taps + t]][c] · w[(t·n_in + c)·n_out + ·]` for
/// `n_rows` destination rows (added to `out` when `accumulate`); `n_out` a multiple of 8.
///
/// # Safety
/// The CPU has AVX2 and FMA; every non-negative index addresses a full row of `src`;
/// `w` holds `taps·n_in·n_out` values and `out` `n_rows·n_out`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gather_conv(
    src: &[f32],
    n_in: usize,
    idx: &[i32],
    taps: usize,
    w: &[f32],
    n_out: usize,
    out: &mut [f32],
    n_rows: usize,
    zero: &[f32],
    accumulate: bool,
) {
    debug_assert!(n_out.is_multiple_of(8) && zero.len() >= n_in);
    if n_out >= 16 {
        gather_conv_4x2(
            src, n_in, idx, taps, w, n_out, out, n_rows, zero, accumulate,
        )
    } else {
        gather_conv_8x1(
            src, n_in, idx, taps, w, n_out, out, n_rows, zero, accumulate,
        )
    }
}

/// Row pointer of destination row `i`, tap `t` (the zero row for padding or `i >= n_rows`).
#[inline(always)]
unsafe fn row_ptr(
    src: &[f32],
    n_in: usize,
    idx: &[i32],
    taps: usize,
    i: usize,
    t: usize,
    n_rows: usize,
    zero: &[f32],
) -> *const f32 {
    if i >= n_rows {
        return zero.as_ptr();
    }
    let q = *idx.get_unchecked(i * taps + t);
    if q < 0 {
        zero.as_ptr()
    } else {
        src.as_ptr().add(q as usize * n_in)
    }
}

/// Eight destination rows × one group of eight outputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_conv_8x1(
    src: &[f32],
    n_in: usize,
    idx: &[i32],
    taps: usize,
    w: &[f32],
    n_out: usize,
    out: &mut [f32],
    n_rows: usize,
    zero: &[f32],
    accumulate: bool,
) {
    let mut rows = [std::ptr::null::<f32>(); PX];
    let mut i0 = 0;
    while i0 < n_rows {
        let np = PX.min(n_rows - i0);
        for chunk in 0..n_out / 8 {
            let mut acc = [_mm256_setzero_ps(); PX];
            if accumulate {
                for (p, a) in acc.iter_mut().enumerate().take(np) {
                    *a = _mm256_loadu_ps(out.as_ptr().add((i0 + p) * n_out + chunk * 8));
                }
            }
            for t in 0..taps {
                for (p, r) in rows.iter_mut().enumerate() {
                    *r = row_ptr(src, n_in, idx, taps, i0 + p, t, n_rows, zero);
                }
                let wt = w.as_ptr().add(t * n_in * n_out + chunk * 8);
                for c in 0..n_in {
                    let wv = _mm256_loadu_ps(wt.add(c * n_out));
                    acc[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[0].add(c)), wv, acc[0]);
                    acc[1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[1].add(c)), wv, acc[1]);
                    acc[2] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[2].add(c)), wv, acc[2]);
                    acc[3] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[3].add(c)), wv, acc[3]);
                    acc[4] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[4].add(c)), wv, acc[4]);
                    acc[5] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[5].add(c)), wv, acc[5]);
                    acc[6] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[6].add(c)), wv, acc[6]);
                    acc[7] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*rows[7].add(c)), wv, acc[7]);
                }
            }
            for (p, a) in acc.iter().enumerate().take(np) {
                _mm256_storeu_ps(out.as_mut_ptr().add((i0 + p) * n_out + chunk * 8), *a);
            }
        }
        i0 += PX;
    }
}

/// Four destination rows × two groups of eight outputs: fewer loads per multiply-add when
/// there are 16 or more outputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_conv_4x2(
    src: &[f32],
    n_in: usize,
    idx: &[i32],
    taps: usize,
    w: &[f32],
    n_out: usize,
    out: &mut [f32],
    n_rows: usize,
    zero: &[f32],
    accumulate: bool,
) {
    let mut i0 = 0;
    while i0 < n_rows {
        let np = 4.min(n_rows - i0);
        let mut chunk = 0;
        while chunk < n_out / 8 {
            let two = chunk + 1 < n_out / 8;
            let mut a0 = [_mm256_setzero_ps(); 4];
            let mut a1 = [_mm256_setzero_ps(); 4];
            if accumulate {
                for p in 0..np {
                    let o = out.as_ptr().add((i0 + p) * n_out + chunk * 8);
                    a0[p] = _mm256_loadu_ps(o);
                    if two {
                        a1[p] = _mm256_loadu_ps(o.add(8));
                    }
                }
            }
            for t in 0..taps {
                let r0 = row_ptr(src, n_in, idx, taps, i0, t, n_rows, zero);
                let r1 = row_ptr(src, n_in, idx, taps, i0 + 1, t, n_rows, zero);
                let r2 = row_ptr(src, n_in, idx, taps, i0 + 2, t, n_rows, zero);
                let r3 = row_ptr(src, n_in, idx, taps, i0 + 3, t, n_rows, zero);
                let wt = w.as_ptr().add(t * n_in * n_out + chunk * 8);
                if two {
                    for c in 0..n_in {
                        let w0 = _mm256_loadu_ps(wt.add(c * n_out));
                        let w1 = _mm256_loadu_ps(wt.add(c * n_out + 8));
                        let b0 = _mm256_broadcast_ss(&*r0.add(c));
                        let b1 = _mm256_broadcast_ss(&*r1.add(c));
                        let b2 = _mm256_broadcast_ss(&*r2.add(c));
                        let b3 = _mm256_broadcast_ss(&*r3.add(c));
                        a0[0] = _mm256_fmadd_ps(b0, w0, a0[0]);
                        a1[0] = _mm256_fmadd_ps(b0, w1, a1[0]);
                        a0[1] = _mm256_fmadd_ps(b1, w0, a0[1]);
                        a1[1] = _mm256_fmadd_ps(b1, w1, a1[1]);
                        a0[2] = _mm256_fmadd_ps(b2, w0, a0[2]);
                        a1[2] = _mm256_fmadd_ps(b2, w1, a1[2]);
                        a0[3] = _mm256_fmadd_ps(b3, w0, a0[3]);
                        a1[3] = _mm256_fmadd_ps(b3, w1, a1[3]);
                    }
                } else {
                    for c in 0..n_in {
                        let w0 = _mm256_loadu_ps(wt.add(c * n_out));
                        a0[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*r0.add(c)), w0, a0[0]);
                        a0[1] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*r1.add(c)), w0, a0[1]);
                        a0[2] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*r2.add(c)), w0, a0[2]);
                        a0[3] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*r3.add(c)), w0, a0[3]);
                    }
                }
            }
            for p in 0..np {
                let o = out.as_mut_ptr().add((i0 + p) * n_out + chunk * 8);
                _mm256_storeu_ps(o, a0[p]);
                if two {
                    _mm256_storeu_ps(o.add(8), a1[p]);
                }
            }
            chunk += 2;
        }
        i0 += 4;
    }
}

/// `dw[(t·n_in + c)·n_out + ·] += Σ_i src[idx[i·taps + t]][c] · g[i][·]` over `n_rows`
/// destination rows; `n_in` and `n_out` multiples of 8.
///
/// # Safety
/// As [`gather_conv`]; `g` holds `n_rows·n_out` values and `dw` `taps·n_in·n_out`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn weight_grad(
    src: &[f32],
    n_in: usize,
    idx: &[i32],
    taps: usize,
    g: &[f32],
    n_out: usize,
    dw: &mut [f32],
    n_rows: usize,
) {
    debug_assert!(n_in.is_multiple_of(8) && n_out.is_multiple_of(8));
    debug_assert!(
        g.len() >= n_rows * n_out && dw.len() >= taps * n_in * n_out && idx.len() >= n_rows * taps
    );
    let groups = n_out / 8;
    for t in 0..taps {
        let mut chunk = 0;
        while chunk < groups {
            // Blocks of (input channels × output groups) with eight accumulators: 4 × 2 while two
            // output groups remain, 8 × 1 for a last single group.
            let ob = if chunk + 1 < groups { 2 } else { 1 };
            let cb = 8 / ob;
            let mut c0 = 0;
            while c0 < n_in {
                let mut acc = [_mm256_setzero_ps(); 8];
                for i in 0..n_rows {
                    let q = *idx.get_unchecked(i * taps + t);
                    if q < 0 {
                        continue;
                    }
                    let s = src.as_ptr().add(q as usize * n_in + c0);
                    let gp = g.as_ptr().add(i * n_out + chunk * 8);
                    if ob == 2 {
                        let g0 = _mm256_loadu_ps(gp);
                        let g1 = _mm256_loadu_ps(gp.add(8));
                        for cc in 0..4 {
                            let a = _mm256_broadcast_ss(&*s.add(cc));
                            acc[2 * cc] = _mm256_fmadd_ps(a, g0, acc[2 * cc]);
                            acc[2 * cc + 1] = _mm256_fmadd_ps(a, g1, acc[2 * cc + 1]);
                        }
                    } else {
                        let g0 = _mm256_loadu_ps(gp);
                        for (cc, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(_mm256_broadcast_ss(&*s.add(cc)), g0, *a);
                        }
                    }
                }
                for cc in 0..cb {
                    for o in 0..ob {
                        let dst = dw
                            .as_mut_ptr()
                            .add((t * n_in + c0 + cc) * n_out + (chunk + o) * 8);
                        _mm256_storeu_ps(
                            dst,
                            _mm256_add_ps(_mm256_loadu_ps(dst), acc[cc * ob + o]),
                        );
                    }
                }
                c0 += cb;
            }
            chunk += ob;
        }
    }
}
