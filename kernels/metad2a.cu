// Fused CUDA kernels of the MetaD2A engine (feature `cuda`).
//
// Conventions: row-major f32; a Linear's weight is [out, in] as in PyTorch; every kernel reads
// its sizes from its arguments (nothing is specialised at compile time), so one PTX serves
// every model size. The CPU counterparts, with the same semantics, are in src/nn (fused) and
// src/nn/reference.rs (composed); src/cuda/ops.rs launches these.
//
// PTX: kernels/metad2a.ptx, made by scripts/build-ptx.sh (NVRTC 12.4, compute_90, PTX ISA 8.4,
// which drivers from R550 on can load); `scripts/build-ptx.sh --check` regenerates it and fails
// when the committed file is stale, then assembles it for sm_90 with ptxas.

typedef unsigned long long u64;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---------------------------------------------------------------------------------------------
// Set attention block (Set Transformer MAB as MetaD2A uses it: no LayerNorm, `heads` heads,
// scores scaled by 1/sqrt(dv) with dv the full width), one thread block per set:
//   Q' = Q Wq^T + bq, K' = K Wk^T + bk, V' = K Wv^T + bv      (projections)
//   O_h = Q'_h + softmax(Q'_h K'_h^T / sqrt(dv)) V'_h          (per head, column blocks)
//   out = O + relu(O Wo^T + bo)                                  (rFF with residual)
// q: [nsets*nq, dq], or [nq, dq] shared by every set when q_shared (PMA seeds);
// k: [nsets*nk, dk]; out: [nsets*nq, dv].
// Dynamic shared memory: (2*nq + 2*nk) * dv + heads*nq*nk floats.
extern "C" __global__ void mab_fused(const float* __restrict__ q, int q_shared,
                                     const float* __restrict__ k, int nq, int nk, int dq, int dk,
                                     int dv, int heads, const float* __restrict__ wq,
                                     const float* __restrict__ bq, const float* __restrict__ wk,
                                     const float* __restrict__ bk, const float* __restrict__ wv,
                                     const float* __restrict__ bv, const float* __restrict__ wo,
                                     const float* __restrict__ bo, float* __restrict__ out) {
    extern __shared__ float smem[];
    const int set = blockIdx.x;
    const int tid = threadIdx.x, nt = blockDim.x;
    float* qp = smem;                 // [nq, dv]
    float* kp = qp + nq * dv;         // [nk, dv]
    float* vp = kp + nk * dv;         // [nk, dv]
    float* o = vp + nk * dv;          // [nq, dv]
    float* att = o + nq * dv;         // [heads, nq, nk]
    const float* qs = q + (q_shared ? 0 : (size_t)set * nq * dq);
    const float* ks = k + (size_t)set * nk * dk;

    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = qs + (size_t)i * dq;
        const float* w = wq + (size_t)c * dq;
        float acc = bq[c];
        for (int j = 0; j < dq; ++j) acc += x[j] * w[j];
        qp[e] = acc;
    }
    for (int e = tid; e < nk * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = ks + (size_t)i * dk;
        const float* w1 = wk + (size_t)c * dk;
        const float* w2 = wv + (size_t)c * dk;
        float a1 = bk[c], a2 = bv[c];
        for (int j = 0; j < dk; ++j) {
            a1 += x[j] * w1[j];
            a2 += x[j] * w2[j];
        }
        kp[e] = a1;
        vp[e] = a2;
    }
    __syncthreads();

    const int dh = dv / heads;
    const float scale = rsqrtf((float)dv);
    for (int p = tid; p < heads * nq; p += nt) {
        int h = p / nq, i = p % nq;
        const float* qi = qp + i * dv + h * dh;
        float* a = att + (size_t)p * nk;
        float m = __int_as_float(0xff800000);  // -inf
        for (int j = 0; j < nk; ++j) {
            const float* kj = kp + j * dv + h * dh;
            float s = 0.0f;
            for (int c = 0; c < dh; ++c) s += qi[c] * kj[c];
            s *= scale;
            a[j] = s;
            m = fmaxf(m, s);
        }
        float sum = 0.0f;
        for (int j = 0; j < nk; ++j) {
            a[j] = expf(a[j] - m);
            sum += a[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < nk; ++j) a[j] *= inv;
    }
    __syncthreads();

    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv, h = c / dh;
        const float* a = att + ((size_t)h * nq + i) * nk;
        float acc = qp[e];
        for (int j = 0; j < nk; ++j) acc += a[j] * vp[j * dv + c];
        o[e] = acc;
    }
    __syncthreads();

    float* os = out + (size_t)set * nq * dv;
    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = o + i * dv;
        const float* w = wo + (size_t)c * dv;
        float acc = bo[c];
        for (int j = 0; j < dv; ++j) acc += x[j] * w[j];
        os[e] = o[e] + fmaxf(acc, 0.0f);
    }
}

// ---------------------------------------------------------------------------------------------
// D-VAE gated messages of final vertices: for row r with state h[r] and vertex index vid[r],
//   out[r] = sigmoid(Wg [h ; e_vid] + bg) * (Wm [h ; e_vid])
// (the one-hot half is a weight column). wg, wm: [hs, hs + max_n]; one thread per output.
extern "C" __global__ void gated_messages(const float* __restrict__ h,
                                          const int* __restrict__ vid, int rows, int hs,
                                          int max_n, const float* __restrict__ wg,
                                          const float* __restrict__ bg,
                                          const float* __restrict__ wm, float* __restrict__ out) {
    const int ld = hs + max_n;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * hs;
         e += gridDim.x * blockDim.x) {
        int r = e / hs, c = e % hs, v = vid[r];
        const float* x = h + (size_t)r * hs;
        const float* g = wg + (size_t)c * ld;
        const float* m = wm + (size_t)c * ld;
        float ag = bg[c] + g[hs + v], am = m[hs + v];
        for (int j = 0; j < hs; ++j) {
            ag += x[j] * g[j];
            am += x[j] * m[j];
        }
        out[e] = sigmoidf_(ag) * am;
    }
}

// ---------------------------------------------------------------------------------------------
// GRU cell step on one-hot inputs fused with the gated-sum aggregation, one thread block per
// row: the hidden input is the sum of the messages of the row's predecessors,
//   m = sum_{u : bit u of preds[r]} msgs[r, u, :]
// and then (PyTorch GRUCell, weights packed r | z | n)
//   r = s(gi_r + Whr m + bhr), z = s(gi_z + Whz m + bhz), n = tanh(gi_n + r*(Whn m + bhn)),
//   h' = (1 - z) n + z m
// with gi = input_rows[type] = W_ih e_type + b_ih ([nvt, 3H]). msgs: [rows, max_n, hs];
// whh: [3H, H]. Dynamic shared memory: hs floats.
extern "C" __global__ void gru_gated_step(const unsigned char* __restrict__ types,
                                          const u64* __restrict__ preds,
                                          const float* __restrict__ msgs, int hs, int max_n,
                                          const float* __restrict__ input_rows,
                                          const float* __restrict__ whh,
                                          const float* __restrict__ bhh,
                                          float* __restrict__ hout) {
    extern __shared__ float m[];
    const int r = blockIdx.x;
    const u64 mask = preds[r];
    const float* mr = msgs + (size_t)r * max_n * hs;
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        float s = 0.0f;
        for (int u = 0; u < max_n; ++u)
            if ((mask >> u) & 1ull) s += mr[u * hs + c];
        m[c] = s;
    }
    __syncthreads();
    const float* gi = input_rows + (size_t)types[r] * 3 * hs;
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        const float* wr = whh + (size_t)c * hs;
        const float* wz = whh + (size_t)(hs + c) * hs;
        const float* wn = whh + (size_t)(2 * hs + c) * hs;
        float ar = bhh[c], az = bhh[hs + c], an = bhh[2 * hs + c];
        for (int j = 0; j < hs; ++j) {
            ar += wr[j] * m[j];
            az += wz[j] * m[j];
            an += wn[j] * m[j];
        }
        float rg = sigmoidf_(gi[c] + ar);
        float zg = sigmoidf_(gi[hs + c] + az);
        float ng = tanhf(gi[2 * hs + c] + rg * an);
        hout[(size_t)r * hs + c] = (1.0f - zg) * ng + zg * m[c];
    }
}

// ---------------------------------------------------------------------------------------------
// On-device sampling with the engine's random streams: xoshiro256** with the state of each
// graph's stream kept on the device (4 words per row), advanced exactly as src/rng.rs does, so
// the GPU draws the same numbers as the CPU for the same stream.

__device__ __forceinline__ u64 rotl64(u64 x, int k) { return (x << k) | (x >> (64 - k)); }

__device__ __forceinline__ u64 xoshiro_next(u64* s) {
    u64 result = rotl64(s[1] * 5ull, 7) * 9ull;
    u64 t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

// Vertex types: softmax of each row of logits [rows, nvt], then the inverse CDF at
// u = next_f64() * total, accumulated in double (as the CPU does). One thread per row.
extern "C" __global__ void sample_types(const float* __restrict__ logits, int rows, int nvt,
                                        u64* __restrict__ state,
                                        unsigned char* __restrict__ out) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* l = logits + (size_t)r * nvt;
    float mx = __int_as_float(0xff800000);  // -inf
    for (int t = 0; t < nvt; ++t) mx = fmaxf(mx, l[t]);
    float sum = 0.0f;
    for (int t = 0; t < nvt; ++t) sum += expf(l[t] - mx);
    float inv = 1.0f / sum;
    double total = 0.0;
    for (int t = 0; t < nvt; ++t) total += (double)(expf(l[t] - mx) * inv);
    u64* s = state + (size_t)r * 4;
    double u = (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0) * total;
    double acc = 0.0;
    int pick = -1, last = 0;
    for (int t = 0; t < nvt; ++t) {
        float p = expf(l[t] - mx) * inv;
        if (p > 0.0f) last = t;
        acc += (double)p;
        if (pick < 0 && u < acc) pick = t;
    }
    out[r] = (unsigned char)(pick < 0 ? last : pick);
}

// Edges: add[r] = next_f32() < sigmoid(logit[r]). One thread per row.
extern "C" __global__ void sample_edges(const float* __restrict__ logit, int rows,
                                        u64* __restrict__ state,
                                        unsigned char* __restrict__ add) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float p = sigmoidf_(logit[r]);
    u64* s = state + (size_t)r * 4;
    float u = (float)(xoshiro_next(s) >> 40) * (1.0f / 16777216.0f);
    add[r] = u < p ? 1 : 0;
}
