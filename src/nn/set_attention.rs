//! Set Transformer blocks (Lee et al., ICML 2019) as MetaD2A uses them: no LayerNorm, 4 heads,
//! and the attention scaled by `sqrt(d_V)` (the full width, not the head width; kept for
//! checkpoint compatibility).
//!
//! `MAB(Q, K)`: `Q' = Q W_qᵀ + b_q`, `K' = K W_kᵀ + b_k`, `V' = K W_vᵀ + b_v`, split into heads
//! by column blocks; per head `O_h = Q'_h + softmax(Q'_h K'_hᵀ / √d_V) V'_h`; heads concatenated;
//! `O = O + ReLU(O W_oᵀ + b_o)`. `SAB(X) = MAB(X, X)`; `PMA(X) = MAB(S, X)` with a learned seed.
//! `SetPool = SAB → SAB → PMA(1 seed) → Linear`, mapping a set `[n, d_in]` to `[d_out]`.
//!
//! Batches of equal-size sets are stored as `[nsets * n, d]`, set-major.

use std::sync::OnceLock;

use super::linalg::{add_relu, exp_normal, matmul_panels, Init, Panels};
use super::linear::Linear;
use crate::error::{Error, Result};
use crate::weights::{Param, WeightStore};

/// Multihead attention block with `heads` heads, output width `dim_v`. Its products use packed
/// copies of the weights made on first use (replace a block, not its layers' weights).
#[derive(Debug)]
pub struct Mab {
    pub fc_q: Linear,
    pub fc_k: Linear,
    pub fc_v: Linear,
    pub fc_o: Linear,
    pub dim_v: usize,
    pub heads: usize,
    /// `[W_q; W_k; W_v]` packed as one weight with its biases, on first use (self-attention
    /// blocks, where queries and keys are the same rows).
    qkv: OnceLock<(Panels, Vec<f32>)>,
}

impl Mab {
    /// Loads `{prefix}.fc_q`, `.fc_k`, `.fc_v` (`[dim_v, dim_q|dim_k]`) and `.fc_o` (`[dim_v, dim_v]`).
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        dim_q: usize,
        dim_k: usize,
        dim_v: usize,
        heads: usize,
    ) -> Result<Self> {
        if heads == 0 || !dim_v.is_multiple_of(heads) {
            return Err(Error::InconsistentModel {
                file: store.label().to_string(),
                reason: format!("{prefix}: width {dim_v} is not divisible by {heads} heads"),
            });
        }
        Ok(Mab {
            fc_q: Linear::load(store, &format!("{prefix}.fc_q"), dim_q, dim_v, true)?,
            fc_k: Linear::load(store, &format!("{prefix}.fc_k"), dim_k, dim_v, true)?,
            fc_v: Linear::load(store, &format!("{prefix}.fc_v"), dim_k, dim_v, true)?,
            fc_o: Linear::load(store, &format!("{prefix}.fc_o"), dim_v, dim_v, true)?,
            dim_v,
            heads,
            qkv: OnceLock::new(),
        })
    }

    /// `MAB(Q, K)` for `nsets` sets: `q: [nsets*nq, dim_q]`, `k: [nsets*nk, dim_k]`,
    /// returns `[nsets*nq, dim_v]`.
    pub fn forward(&self, q: &[f32], k: &[f32], nsets: usize, nq: usize, nk: usize) -> Vec<f32> {
        let qp = self.fc_q.forward(q, nsets * nq);
        let kp = self.fc_k.forward(k, nsets * nk);
        let vp = self.fc_v.forward(k, nsets * nk);
        self.attend(&qp, false, &kp, &vp, nsets, nq, nk)
    }

    /// The three input projections of the same rows in one product: `out[r]` is
    /// `[x_r W_qᵀ + b_q ; x_r W_kᵀ + b_k ; x_r W_vᵀ + b_v]` (`[rows, 3 dim_v]`; `x` with row stride
    /// `ldx`). Each value has the bits of its own layer's product.
    ///
    /// # Panics
    /// If the block's query and key widths differ (not a self-attention block).
    pub fn project_qkv(&self, x: &[f32], ldx: usize, rows: usize, out: &mut [f32]) {
        let (w, b) = self.qkv.get_or_init(|| {
            let (din, dv) = (self.fc_q.in_dim, self.dim_v);
            assert_eq!(
                din, self.fc_k.in_dim,
                "project_qkv: not a self-attention block"
            );
            let mut b = Vec::with_capacity(3 * dv);
            for l in [&self.fc_q, &self.fc_k, &self.fc_v] {
                match &l.bias {
                    Some(lb) => b.extend_from_slice(lb),
                    None => b.resize(b.len() + dv, 0.0),
                }
            }
            let w = [&self.fc_q, &self.fc_k, &self.fc_v].map(|l| &l.weight[..dv * din]);
            (Panels::pack_stacked(&w, din), b)
        });
        matmul_panels(out, x, ldx, w, rows, Init::Bias(b));
    }

    /// Appends the block's weights in the layout of the device kernels (`block_mab` in
    /// `kernels/metad2a.cu`): `W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o`, an absent bias as zeros.
    pub fn pack_into(&self, out: &mut Vec<f32>) {
        for l in [&self.fc_q, &self.fc_k, &self.fc_v, &self.fc_o] {
            out.extend_from_slice(&l.weight);
            match &l.bias {
                Some(b) => out.extend_from_slice(b),
                None => out.resize(out.len() + l.out_dim, 0.0),
            }
        }
    }

    /// The block after the input projections. `qp` is `[nsets*nq, dim_v]`, or `[nq, dim_v]`
    /// shared by every set when `q_shared` (PMA); `kp`, `vp` are `[nsets*nk, dim_v]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        qp: &[f32],
        q_shared: bool,
        kp: &[f32],
        vp: &[f32],
        nsets: usize,
        nq: usize,
        nk: usize,
    ) -> Vec<f32> {
        let dv = self.dim_v;
        let mut o = vec![0.0f32; nsets * nq * dv];
        attention_heads(qp, q_shared, kp, vp, nsets, nq, nk, dv, self.heads, &mut o);
        self.output_ff(&mut o, nsets * nq);
        o
    }

    /// `O = O + ReLU(O W_oᵀ + b_o)` in place.
    fn output_ff(&self, o: &mut [f32], rows: usize) {
        let ff = self.fc_o.forward(o, rows);
        add_relu(o, &ff);
    }
}

/// `y += a x` over whole blocks of eight (lengths are multiples of 8).
#[inline(always)]
fn axpy8(y: &mut [f32], a: f32, x: &[f32]) {
    for (y8, x8) in y.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
        let y8: &mut [f32; 8] = y8.try_into().unwrap();
        let x8: &[f32; 8] = x8.try_into().unwrap();
        for l in 0..8 {
            y8[l] += a * x8[l];
        }
    }
}

/// Per set and head: `o = q + softmax(q kᵀ / √dv) v`, written into `o` (`[nsets*nq, dv]`).
///
/// Dispatches to the AVX2+FMA kernel when the CPU has it; both follow the same layout.
#[allow(clippy::too_many_arguments)]
fn attention_heads(
    qp: &[f32],
    q_shared: bool,
    kp: &[f32],
    vp: &[f32],
    nsets: usize,
    nq: usize,
    nk: usize,
    dv: usize,
    heads: usize,
    o: &mut [f32],
) {
    assert!(qp.len() >= if q_shared { nq * dv } else { nsets * nq * dv });
    assert!(
        kp.len() >= nsets * nk * dv && vp.len() >= nsets * nk * dv && o.len() >= nsets * nq * dv
    );
    assert!(heads > 0 && dv.is_multiple_of(heads) && nk > 0);
    super::linalg::count_macs(2 * nsets * nq * nk * dv);
    #[cfg(target_arch = "x86_64")]
    {
        if super::linalg::has_avx2_fma() && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA; the asserts above bound every access.
            unsafe { avx512::attention_heads(qp, q_shared, kp, vp, nsets, nq, nk, dv, heads, o) };
            return;
        }
        if super::linalg::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA; the asserts above bound every access.
            unsafe { avx2::attention_heads(qp, q_shared, kp, vp, nsets, nq, nk, dv, heads, o) };
            return;
        }
    }
    attention_heads_portable(qp, q_shared, kp, vp, nsets, nq, nk, dv, heads, o);
}

/// The portable kernel.
///
/// Laid out for vector units: per set and head the keys are transposed (`[dh][nk8]`, keys
/// padded to a multiple of 8) so a query's scores are `dh` multiply-adds over the key axis,
/// and the values are copied into rows padded to a multiple of 8 so the weighted sum is
/// whole-vector multiply-adds.
#[allow(clippy::too_many_arguments)]
fn attention_heads_portable(
    qp: &[f32],
    q_shared: bool,
    kp: &[f32],
    vp: &[f32],
    nsets: usize,
    nq: usize,
    nk: usize,
    dv: usize,
    heads: usize,
    o: &mut [f32],
) {
    let dh = dv / heads;
    let scale = 1.0 / (dv as f32).sqrt();
    let nk8 = nk.div_ceil(8) * 8;
    let dh8 = dh.div_ceil(8) * 8;
    let mut kt = vec![0.0f32; dh * nk8];
    let mut vpad = vec![0.0f32; nk * dh8];
    let mut sc = vec![0.0f32; nk8];
    let mut acc = vec![0.0f32; dh8];
    for s in 0..nsets {
        let kbase = s * nk;
        for h in 0..heads {
            let c0 = h * dh;
            for j in 0..nk {
                let krow = &kp[(kbase + j) * dv + c0..(kbase + j) * dv + c0 + dh];
                for (d, &x) in krow.iter().enumerate() {
                    kt[d * nk8 + j] = x;
                }
                vpad[j * dh8..j * dh8 + dh]
                    .copy_from_slice(&vp[(kbase + j) * dv + c0..(kbase + j) * dv + c0 + dh]);
            }
            for i in 0..nq {
                let qrow = if q_shared { i } else { s * nq + i };
                let q = &qp[qrow * dv + c0..qrow * dv + c0 + dh];
                sc.iter_mut().for_each(|x| *x = 0.0);
                for (d, &qd) in q.iter().enumerate() {
                    axpy8(&mut sc, qd * scale, &kt[d * nk8..(d + 1) * nk8]);
                }
                // Padding keys get a score that vanishes under the softmax.
                sc[nk..].iter_mut().for_each(|x| *x = -1e30);
                // Max and sum as eight-lane partial reductions, so they vectorise too.
                let mut m8 = [f32::NEG_INFINITY; 8];
                for c in sc.chunks_exact(8) {
                    for l in 0..8 {
                        m8[l] = m8[l].max(c[l]);
                    }
                }
                let max = m8.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                sc.iter_mut().for_each(|x| *x = exp_normal(*x - max));
                let mut s8 = [0.0f32; 8];
                for c in sc.chunks_exact(8) {
                    for l in 0..8 {
                        s8[l] += c[l];
                    }
                }
                let inv = 1.0 / s8.iter().sum::<f32>();
                acc.iter_mut().for_each(|x| *x = 0.0);
                for (j, &a) in sc[..nk].iter().enumerate() {
                    axpy8(&mut acc, a * inv, &vpad[j * dh8..(j + 1) * dh8]);
                }
                let out = &mut o[(s * nq + i) * dv + c0..(s * nq + i) * dv + c0 + dh];
                for ((x, &qv), &a) in out.iter_mut().zip(q).zip(&acc) {
                    *x = qv + a;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` on eight lanes, `x` clamped to the normal range (as `linalg::exp_normal`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.336_54)),
            _mm256_set1_ps(88.722_83),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0 / 720.0), _mm256_set1_ps(1.0 / 120.0));
        for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(c));
        }
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The AVX2+FMA kernel: the portable kernel's layout with explicit eight-lane operations.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the slices must hold the sizes the caller asserted.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attention_heads(
        qp: &[f32],
        q_shared: bool,
        kp: &[f32],
        vp: &[f32],
        nsets: usize,
        nq: usize,
        nk: usize,
        dv: usize,
        heads: usize,
        o: &mut [f32],
    ) {
        let dh = dv / heads;
        let scale = 1.0 / (dv as f32).sqrt();
        let (b8, d8) = (nk.div_ceil(8), dh.div_ceil(8));
        let (nk8, dh8) = (b8 * 8, d8 * 8);
        let mut kt = vec![0.0f32; dh * nk8];
        let mut vpad = vec![0.0f32; nk * dh8];
        let mut sc = vec![0.0f32; nk8];
        let mut acc = vec![0.0f32; dh8];
        let mut qs = vec![0.0f32; dh];
        for s in 0..nsets {
            let kbase = s * nk;
            for h in 0..heads {
                let c0 = h * dh;
                for j in 0..nk {
                    let at = (kbase + j) * dv + c0;
                    for d in 0..dh {
                        kt[d * nk8 + j] = kp[at + d];
                    }
                    vpad[j * dh8..j * dh8 + dh].copy_from_slice(&vp[at..at + dh]);
                }
                for i in 0..nq {
                    let qrow = if q_shared { i } else { s * nq + i };
                    let q = &qp[qrow * dv + c0..qrow * dv + c0 + dh];
                    for (x, &v) in qs.iter_mut().zip(q) {
                        *x = v * scale;
                    }
                    // scores, eight keys at a time
                    let scp = sc.as_mut_ptr();
                    for b in 0..b8 {
                        // two independent chains hide the multiply-add latency
                        let (mut x0, mut x1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                        let kb = kt.as_ptr().add(b * 8);
                        let mut d = 0;
                        while d + 1 < dh {
                            x0 = _mm256_fmadd_ps(
                                _mm256_set1_ps(qs[d]),
                                _mm256_loadu_ps(kb.add(d * nk8)),
                                x0,
                            );
                            x1 = _mm256_fmadd_ps(
                                _mm256_set1_ps(qs[d + 1]),
                                _mm256_loadu_ps(kb.add((d + 1) * nk8)),
                                x1,
                            );
                            d += 2;
                        }
                        if d < dh {
                            x0 = _mm256_fmadd_ps(
                                _mm256_set1_ps(qs[d]),
                                _mm256_loadu_ps(kb.add(d * nk8)),
                                x0,
                            );
                        }
                        _mm256_storeu_ps(scp.add(b * 8), _mm256_add_ps(x0, x1));
                    }
                    for x in &mut sc[nk..] {
                        *x = -1e30;
                    }
                    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
                    for b in 0..b8 {
                        m = _mm256_max_ps(m, _mm256_loadu_ps(scp.add(b * 8)));
                    }
                    let max = _mm256_set1_ps(hmax(m));
                    let mut sum = _mm256_setzero_ps();
                    for b in 0..b8 {
                        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scp.add(b * 8)), max));
                        _mm256_storeu_ps(scp.add(b * 8), e);
                        sum = _mm256_add_ps(sum, e);
                    }
                    let inv = 1.0 / hsum(sum);
                    // weighted sum of the padded value rows
                    // accumulators stay in registers: one block of eight columns at a time
                    let accp = acc.as_mut_ptr();
                    for b in 0..d8 {
                        let (mut y0, mut y1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                        let vb = vpad.as_ptr().add(b * 8);
                        let mut j = 0;
                        while j + 1 < nk {
                            y0 = _mm256_fmadd_ps(
                                _mm256_set1_ps(*scp.add(j)),
                                _mm256_loadu_ps(vb.add(j * dh8)),
                                y0,
                            );
                            y1 = _mm256_fmadd_ps(
                                _mm256_set1_ps(*scp.add(j + 1)),
                                _mm256_loadu_ps(vb.add((j + 1) * dh8)),
                                y1,
                            );
                            j += 2;
                        }
                        if j < nk {
                            y0 = _mm256_fmadd_ps(
                                _mm256_set1_ps(*scp.add(j)),
                                _mm256_loadu_ps(vb.add(j * dh8)),
                                y0,
                            );
                        }
                        _mm256_storeu_ps(
                            accp.add(b * 8),
                            _mm256_mul_ps(_mm256_add_ps(y0, y1), _mm256_set1_ps(inv)),
                        );
                    }
                    let out = &mut o[(s * nq + i) * dv + c0..(s * nq + i) * dv + c0 + dh];
                    for d in 0..dh {
                        out[d] = q[d] + acc[d];
                    }
                }
            }
        }
    }
}

/// The AVX-512 kernel: the AVX2 kernel's arithmetic, value for value, on sixteen lanes. Each
/// score is the same two multiply-add chains (even and odd head dimensions) and each output the
/// same two chains (even and odd keys); the softmax's sum is taken eight lanes at a time in the
/// AVX2 kernel's order, over the same padding keys. Sixteen keys (scores) or sixteen head
/// dimensions (the weighted sum) take one instruction where the AVX2 kernel takes two or three
/// for MetaD2A's 20 keys and 14-wide heads. Same bits as the AVX2 kernel (a test compares
/// them).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `e^x` on sixteen lanes: `avx2::exp8`'s operations.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.336_54)),
            _mm512_set1_ps(88.722_83),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0 / 720.0), _mm512_set1_ps(1.0 / 120.0));
        for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(c));
        }
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(e))
    }

    /// Eight-lane halves of a sixteen-lane vector.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn halves(v: __m512) -> (__m256, __m256) {
        (
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        )
    }

    /// For each of `G` coefficient rows `c[g]` (`len` values), the two multiply-add chains of
    /// `Σ_t c[g][t] · rows[t]` over sixteen lanes, `rows[t]` at `rows + t * stride`: even `t`
    /// in the first, odd `t` in the second, each from zero in order (the AVX2 kernel's two
    /// chains, for scores over head dimensions and for outputs over keys).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `c[g]` must hold `len` values and each `rows[t]` sixteen.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn two_chains<const G: usize>(
        c: [*const f32; G],
        rows: *const f32,
        stride: usize,
        len: usize,
    ) -> ([__m512; G], [__m512; G]) {
        let mut x0 = [_mm512_setzero_ps(); G];
        let mut x1 = [_mm512_setzero_ps(); G];
        let mut t = 0;
        while t + 1 < len {
            let (r0, r1) = (
                _mm512_loadu_ps(rows.add(t * stride)),
                _mm512_loadu_ps(rows.add((t + 1) * stride)),
            );
            for g in 0..G {
                x0[g] = _mm512_fmadd_ps(_mm512_set1_ps(*c[g].add(t)), r0, x0[g]);
                x1[g] = _mm512_fmadd_ps(_mm512_set1_ps(*c[g].add(t + 1)), r1, x1[g]);
            }
            t += 2;
        }
        if t < len {
            let r0 = _mm512_loadu_ps(rows.add(t * stride));
            for g in 0..G {
                x0[g] = _mm512_fmadd_ps(_mm512_set1_ps(*c[g].add(t)), r0, x0[g]);
            }
        }
        (x0, x1)
    }

    /// One (set, head)'s keys transposed and values padded as the kernel reads them.
    struct Head {
        kt: Vec<f32>,
        vpad: Vec<f32>,
        nk: usize,
        nk16: usize,
        dh: usize,
        dh16: usize,
        /// Keys in blocks of eight as the AVX2 kernel counts them (its softmax sum runs
        /// over them, padding included).
        b8: usize,
        pad_max: f32,
        scale: f32,
    }

    /// The scratch of `G` queries: each one's scaled query, scores and weighted sum.
    struct Group<const G: usize> {
        qs: [Vec<f32>; G],
        sc: [Vec<f32>; G],
        acc: [Vec<f32>; G],
    }

    impl Head {
        fn new(nk: usize, dh: usize, scale: f32) -> Self {
            let (nk16, dh16) = (nk.div_ceil(16) * 16, dh.div_ceil(16) * 16);
            Head {
                kt: vec![0.0; dh * nk16],
                vpad: vec![0.0; nk * dh16],
                nk,
                nk16,
                dh,
                dh16,
                b8: nk.div_ceil(8),
                // Scores of padding keys: as the AVX2 kernel's, where it has them.
                pad_max: if !nk.is_multiple_of(8) {
                    -1e30
                } else {
                    f32::NEG_INFINITY
                },
                scale,
            }
        }

        /// Keys and values of one (set, head): rows `at + j * dv`, `dh` wide.
        fn load(&mut self, kp: &[f32], vp: &[f32], at: usize, dv: usize) {
            let (nk, nk16, dh16, dh) = (self.nk, self.nk16, self.dh16, self.dh);
            let keys = &kp[at..at + (nk - 1) * dv + dh];
            // Row by row of the transpose: contiguous stores, strided loads.
            for (d, row) in self.kt.chunks_exact_mut(nk16).enumerate() {
                for (x, k) in row[..nk].iter_mut().zip(keys[d..].iter().step_by(dv)) {
                    *x = *k;
                }
            }
            for (j, row) in self.vpad.chunks_exact_mut(dh16).enumerate() {
                row[..dh].copy_from_slice(&vp[at + j * dv..at + j * dv + dh]);
            }
        }
    }

    impl<const G: usize> Group<G> {
        fn new(head: &Head) -> Self {
            Group {
                qs: std::array::from_fn(|_| vec![0.0; head.dh]),
                sc: std::array::from_fn(|_| vec![0.0; head.nk16]),
                acc: std::array::from_fn(|_| vec![0.0; head.dh16]),
            }
        }

        /// `out[g] = q[g] + softmax(q[g] kᵀ / √dv) v` for the `G` queries of a group against
        /// `head`, their independent chains interleaved.
        ///
        /// # Safety
        /// The CPU must have AVX-512F, AVX2 and FMA; each query and output is `dh` long.
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn queries(&mut self, head: &Head, q: [&[f32]; G], out: [&mut [f32]; G]) {
            let (nk, nk16, dh, dh16) = (head.nk, head.nk16, head.dh, head.dh16);
            let scale = head.scale;
            for (qs, q) in self.qs.iter_mut().zip(q) {
                for (x, &v) in qs.iter_mut().zip(q) {
                    *x = v * scale;
                }
            }
            // Raw pointers held in registers: no reloads through `self` in the loops.
            let qs: [*const f32; G] = std::array::from_fn(|g| self.qs[g].as_ptr());
            let sc: [*mut f32; G] = std::array::from_fn(|g| self.sc[g].as_mut_ptr());
            let (kt, vpad) = (head.kt.as_ptr(), head.vpad.as_ptr());
            // Scores, sixteen keys at a time: two chains per query (even and odd dimensions).
            let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); G];
            for b in 0..nk16 / 16 {
                let (x0, x1) = two_chains(qs, kt.add(b * 16), nk16, dh);
                // Lanes past the last key hold the padding score; they take no part in the max.
                let live = nk - b * 16;
                let keep: __mmask16 = if live < 16 {
                    ((1u32 << live) - 1) as u16
                } else {
                    u16::MAX
                };
                for g in 0..G {
                    let x = _mm512_add_ps(x0[g], x1[g]);
                    let x = _mm512_mask_blend_ps(keep, _mm512_set1_ps(-1e30), x);
                    m[g] = _mm512_mask_max_ps(m[g], keep, m[g], x);
                    _mm512_storeu_ps(sc[g].add(b * 16), x);
                }
            }
            // e^(score - max), and the softmax's sum over the first `b8` blocks of eight, in
            // order.
            let mut inv = [_mm512_setzero_ps(); G];
            for g in 0..G {
                let max = _mm512_set1_ps(_mm512_reduce_max_ps(m[g]).max(head.pad_max));
                let mut sum = _mm256_setzero_ps();
                for b in 0..nk16 / 16 {
                    let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sc[g].add(b * 16)), max));
                    _mm512_storeu_ps(sc[g].add(b * 16), e);
                    let (lo, hi) = halves(e);
                    sum = _mm256_add_ps(sum, lo);
                    if 2 * b + 1 < head.b8 {
                        sum = _mm256_add_ps(sum, hi);
                    }
                }
                inv[g] = _mm512_set1_ps(1.0 / super::avx2::hsum(sum));
            }
            // The weighted sum of the values: two chains per query (even and odd keys).
            let weights = sc.map(|p| p as *const f32);
            for b in 0..dh16 / 16 {
                let (y0, y1) = two_chains(weights, vpad.add(b * 16), dh16, nk);
                for g in 0..G {
                    let a = _mm512_mul_ps(_mm512_add_ps(y0[g], y1[g]), inv[g]);
                    _mm512_storeu_ps(self.acc[g].as_mut_ptr().add(b * 16), a);
                }
            }
            for (g, out) in out.into_iter().enumerate() {
                for ((o, &qv), &a) in out.iter_mut().zip(q[g]).zip(&self.acc[g]) {
                    *o = qv + a;
                }
            }
        }
    }

    /// As `avx2::attention_heads`, four queries at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2 and FMA; the slices must hold the sizes the caller
    /// asserted.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn attention_heads(
        qp: &[f32],
        q_shared: bool,
        kp: &[f32],
        vp: &[f32],
        nsets: usize,
        nq: usize,
        nk: usize,
        dv: usize,
        heads: usize,
        o: &mut [f32],
    ) {
        const G: usize = 4;
        let dh = dv / heads;
        let scale = 1.0 / (dv as f32).sqrt();
        let mut head = Head::new(nk, dh, scale);
        let (mut four, mut one) = (Group::<G>::new(&head), Group::<1>::new(&head));
        let query = |s: usize, i: usize, c0: usize| {
            let row = if q_shared { i } else { s * nq + i };
            &qp[row * dv + c0..row * dv + c0 + dh]
        };
        for s in 0..nsets {
            // The outputs of this set's queries, one `dh` block per (query, head).
            let os = &mut o[s * nq * dv..(s + 1) * nq * dv];
            for h in 0..heads {
                let c0 = h * dh;
                let mut blocks: Vec<&mut [f32]> = os
                    .chunks_exact_mut(dv)
                    .map(|row| &mut row[c0..c0 + dh])
                    .collect();
                head.load(kp, vp, s * nk * dv + c0, dv);
                let mut rest = blocks.as_mut_slice();
                let mut i = 0;
                while rest.len() >= G {
                    let (group, tail) = rest.split_at_mut(G);
                    let mut it = group.iter_mut();
                    let outs: [&mut [f32]; G] =
                        std::array::from_fn(|_| &mut **it.next().expect("G blocks"));
                    four.queries(&head, std::array::from_fn(|g| query(s, i + g, c0)), outs);
                    rest = tail;
                    i += G;
                }
                for out in rest.iter_mut() {
                    one.queries(&head, [query(s, i, c0)], [&mut **out]);
                    i += 1;
                }
            }
        }
    }
}

/// `SetPool` in MetaD2A's `sabPF` mode: `SAB(d_in→d_h) → SAB(d_h→d_h) → PMA(d_h, 1 seed) →
/// Linear(d_h→d_out)`; a set `[n, d_in]` becomes one vector `[d_out]`.
#[derive(Debug)]
pub struct SetPool {
    pub sab1: Mab,
    pub sab2: Mab,
    pub pma: Mab,
    /// The PMA seed `S: [1, 1, d_h]`.
    pub seed: Param,
    /// `S W_qᵀ + b_q` of the PMA: the same for every set, so computed once at load.
    pma_query: Vec<f32>,
    pub out: Linear,
    pub dim_in: usize,
    pub dim_hidden: usize,
    pub dim_out: usize,
}

impl SetPool {
    /// Loads `{prefix}.enc.0.mab.*`, `{prefix}.enc.1.mab.*`, `{prefix}.dec.0.S`,
    /// `{prefix}.dec.0.mab.*`, `{prefix}.dec.1.*`.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        dim_in: usize,
        dim_hidden: usize,
        dim_out: usize,
        heads: usize,
    ) -> Result<Self> {
        let (di, dh) = (dim_in, dim_hidden);
        let sab1 = Mab::load(store, &format!("{prefix}.enc.0.mab"), di, di, dh, heads)?;
        let sab2 = Mab::load(store, &format!("{prefix}.enc.1.mab"), dh, dh, dh, heads)?;
        let pma = Mab::load(store, &format!("{prefix}.dec.0.mab"), dh, dh, dh, heads)?;
        let seed = store.param(&format!("{prefix}.dec.0.S"), &[1, 1, dh])?;
        let out = Linear::load(store, &format!("{prefix}.dec.1"), dh, dim_out, true)?;
        let pma_query = pma.fc_q.forward(&seed, 1);
        Ok(SetPool {
            sab1,
            sab2,
            pma,
            seed,
            pma_query,
            out,
            dim_in,
            dim_hidden,
            dim_out,
        })
    }

    /// All weights in the layout of the device kernel `set_pool` (`kernels/metad2a.cu`): the
    /// two SABs and the PMA as [`Mab::pack_into`] writes them, the seed, then the output
    /// Linear's weight and bias.
    pub fn packed(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for m in [&self.sab1, &self.sab2, &self.pma] {
            m.pack_into(&mut out);
        }
        out.extend_from_slice(&self.seed);
        out.extend_from_slice(&self.out.weight);
        match &self.out.bias {
            Some(b) => out.extend_from_slice(b),
            None => out.resize(out.len() + self.out.out_dim, 0.0),
        }
        out
    }

    /// Pools `nsets` sets of `n` elements: `x: [nsets*n, d_in]` → `[nsets, d_out]`.
    pub fn forward(&self, x: &[f32], nsets: usize, n: usize) -> Vec<f32> {
        let rows = nsets * n;
        let q = self.sab1.fc_q.forward(x, rows);
        let k = self.sab1.fc_k.forward(x, rows);
        let v = self.sab1.fc_v.forward(x, rows);
        self.forward_projected(&q, &k, &v, nsets, n)
    }

    /// As [`forward`](Self::forward), starting from the first block's input projections
    /// (`[nsets*n, d_h]` each), which callers may have computed once for many sets.
    pub fn forward_projected(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        nsets: usize,
        n: usize,
    ) -> Vec<f32> {
        let h1 = self.sab1.attend(q, false, k, v, nsets, n, n);
        let h2 = self.sab2.forward(&h1, &h1, nsets, n, n);
        let kp = self.pma.fc_k.forward(&h2, nsets * n);
        let vp = self.pma.fc_v.forward(&h2, nsets * n);
        let pooled = self
            .pma
            .attend(&self.pma_query, true, &kp, &vp, nsets, 1, n);
        self.out.forward(&pooled, nsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Inputs of one attention call: scaled normal projections, so that the softmax is neither
    /// flat nor one-hot.
    fn inputs(rows_q: usize, rows_k: usize, dv: usize, seed: u64) -> [Vec<f32>; 3] {
        let mut rng = Rng::new(seed, 1);
        let mut v = |n: usize| -> Vec<f32> { (0..n).map(|_| 2.0 * rng.normal() as f32).collect() };
        [v(rows_q * dv), v(rows_k * dv), v(rows_k * dv)]
    }

    /// Shapes: MetaD2A's (20 keys, 4 heads of 14; the inter-class pool's 100 keys; the PMA's
    /// one shared query), and keys or head widths on and off multiples of 8 and 16.
    const SHAPES: [(usize, usize, usize, usize, usize, bool); 9] = [
        // (nsets, nq, nk, dv, heads, q_shared)
        (3, 20, 20, 56, 4, false),
        (1, 100, 100, 56, 4, false),
        (5, 1, 20, 56, 4, true),
        (2, 3, 8, 32, 2, false),
        (2, 4, 16, 64, 2, false),
        (2, 5, 17, 20, 1, false),
        (1, 7, 3, 12, 4, false),
        (2, 2, 33, 72, 2, true),
        (1, 9, 24, 40, 1, false),
    ];

    fn run(
        kernel: impl Fn(&[f32], bool, &[f32], &[f32], usize, usize, usize, usize, usize, &mut [f32]),
        shape: (usize, usize, usize, usize, usize, bool),
        seed: u64,
    ) -> Vec<f32> {
        let (nsets, nq, nk, dv, heads, shared) = shape;
        let [q, k, v] = inputs(if shared { nq } else { nsets * nq }, nsets * nk, dv, seed);
        let mut o = vec![f32::NAN; nsets * nq * dv];
        kernel(&q, shared, &k, &v, nsets, nq, nk, dv, heads, &mut o);
        o
    }

    /// The dispatched kernel agrees with the portable one to rounding; where the CPU has
    /// AVX-512 (and so the dispatched kernel is the AVX-512 one), it also has the AVX2
    /// kernel's bits, so that the two x86 paths rank alike.
    #[test]
    fn attention_paths_agree_with_the_portable_one() {
        for (t, &shape) in SHAPES.iter().enumerate() {
            let want = run(attention_heads_portable, shape, t as u64);
            let got = run(attention_heads, shape, t as u64);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{shape:?}: {a} vs {b}"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if crate::nn::linalg::has_avx2_fma() && std::is_x86_feature_detected!("avx512f") {
                // SAFETY (both): the CPU has the features; `run` sizes the slices.
                let a = run(
                    |a, b, c, d, e, f, g, h, i, j| unsafe {
                        avx2::attention_heads(a, b, c, d, e, f, g, h, i, j)
                    },
                    shape,
                    t as u64,
                );
                let b = run(
                    |a, b, c, d, e, f, g, h, i, j| unsafe {
                        avx512::attention_heads(a, b, c, d, e, f, g, h, i, j)
                    },
                    shape,
                    t as u64,
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{shape:?}");
                assert_eq!(bits(&got), bits(&b), "{shape:?}: not the AVX-512 kernel");
            }
        }
    }
}
