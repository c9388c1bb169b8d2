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

// Dynamic shared memory; tests/cuda_emulated.rs compiles this file as C++ with one thread per
// block (tests/cuda_emu/emulate.h) and defines it otherwise.
#ifndef METAD2A_EMULATE
#define DYN_SHARED(name) extern __shared__ float name[]
#endif

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---------------------------------------------------------------------------------------------
// Set attention block (Set Transformer MAB as MetaD2A uses it: no LayerNorm, `heads` heads,
// scores scaled by 1/sqrt(dv) with dv the full width):
//   Q' = Q Wq^T + bq, K' = K Wk^T + bk, V' = K Wv^T + bv      (projections)
//   O_h = Q'_h + softmax(Q'_h K'_h^T / sqrt(dv)) V'_h          (per head, column blocks)
//   out = O + relu(O Wo^T + bo)                                  (rFF with residual)

// A block's weights: wq [dv, dq], bq [dv], wk [dv, dk], bk, wv [dv, dk], bv, wo [dv, dv], bo.
struct MabWeights {
    const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
};

// The weights of a block packed in that order (SetPool::packed on the host); `next` is set past
// them.
__device__ MabWeights packed_mab(const float* w, int dq, int dk, int dv, const float** next) {
    MabWeights m;
    m.wq = w;
    m.bq = m.wq + (size_t)dv * dq;
    m.wk = m.bq + dv;
    m.bk = m.wk + (size_t)dv * dk;
    m.wv = m.bk + dv;
    m.bv = m.wv + (size_t)dv * dk;
    m.wo = m.bv + dv;
    m.bo = m.wo + (size_t)dv * dv;
    *next = m.bo + dv;
    return m;
}

// The block on one set, block-cooperative. Row i of the queries is qin + qi(i) * dq with
// qi(i) = qidx ? qidx[i] : i, row j of the keys kin + ki(j) * dk likewise. scratch (shared):
// qp [nq, dv], kp [nk, dv], vp [nk, dv], o [nq, dv] and 2*heads*nq softmax statistics. out
// [nq, dv] may be shared or global and must not alias qin or kin. The attention weights are
// recomputed where they are used rather than stored, so a set of a hundred elements (the
// classes of CIFAR-100) needs no heads*nq*nk table.
__device__ void block_mab(const float* qin, const int* qidx, int nq, int dq, const float* kin,
                          const int* kidx, int nk, int dk, int dv, int heads,
                          const MabWeights& W, float* scratch, float* out) {
    const float *wq = W.wq, *bq = W.bq, *wk = W.wk, *bk = W.bk, *wv = W.wv, *bv = W.bv,
                *wo = W.wo, *bo = W.bo;
    float* qp = scratch;
    float* kp = qp + nq * dv;
    float* vp = kp + nk * dv;
    float* o = vp + nk * dv;
    float* st = o + nq * dv;
    const int tid = threadIdx.x, nt = blockDim.x;

    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = qin + (size_t)(qidx ? qidx[i] : i) * dq;
        const float* w = wq + (size_t)c * dq;
        float acc = bq[c];
        for (int j = 0; j < dq; ++j) acc += x[j] * w[j];
        qp[e] = acc;
    }
    for (int e = tid; e < nk * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = kin + (size_t)(kidx ? kidx[i] : i) * dk;
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
        float m = __int_as_float(0xff800000);  // -inf
        for (int j = 0; j < nk; ++j) {
            const float* kj = kp + j * dv + h * dh;
            float s = 0.0f;
            for (int c = 0; c < dh; ++c) s += qi[c] * kj[c];
            m = fmaxf(m, s * scale);
        }
        float sum = 0.0f;
        for (int j = 0; j < nk; ++j) {
            const float* kj = kp + j * dv + h * dh;
            float s = 0.0f;
            for (int c = 0; c < dh; ++c) s += qi[c] * kj[c];
            sum += expf(s * scale - m);
        }
        st[2 * p] = m;
        st[2 * p + 1] = 1.0f / sum;
    }
    __syncthreads();

    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv, h = c / dh, p = h * nq + i;
        const float* qi = qp + i * dv + h * dh;
        const float m = st[2 * p], inv = st[2 * p + 1];
        float acc = qp[e];
        for (int j = 0; j < nk; ++j) {
            const float* kj = kp + j * dv + h * dh;
            float s = 0.0f;
            for (int cc = 0; cc < dh; ++cc) s += qi[cc] * kj[cc];
            acc += (expf(s * scale - m) * inv) * vp[j * dv + c];
        }
        o[e] = acc;
    }
    __syncthreads();

    for (int e = tid; e < nq * dv; e += nt) {
        int i = e / dv, c = e % dv;
        const float* x = o + i * dv;
        const float* w = wo + (size_t)c * dv;
        float acc = bo[c];
        for (int j = 0; j < dv; ++j) acc += x[j] * w[j];
        out[e] = o[e] + fmaxf(acc, 0.0f);
    }
    __syncthreads();
}

// MAB(Q, K) of one set per thread block.
// q: [nsets*nq, dq], or [nq, dq] shared by every set when q_shared (PMA seeds);
// k: [nsets*nk, dk]; out: [nsets*nq, dv].
// Dynamic shared memory: (2*nq + 2*nk) * dv + 2*heads*nq floats.
extern "C" __global__ void mab_fused(const float* __restrict__ q, int q_shared,
                                     const float* __restrict__ k, int nq, int nk, int dq, int dk,
                                     int dv, int heads, const float* __restrict__ wq,
                                     const float* __restrict__ bq, const float* __restrict__ wk,
                                     const float* __restrict__ bk, const float* __restrict__ wv,
                                     const float* __restrict__ bv, const float* __restrict__ wo,
                                     const float* __restrict__ bo, float* __restrict__ out) {
    DYN_SHARED(smem);
    const int set = blockIdx.x;
    const MabWeights W = {wq, bq, wk, bk, wv, bv, wo, bo};
    block_mab(q + (q_shared ? 0 : (size_t)set * nq * dq), 0, nq, dq, k + (size_t)set * nk * dk,
              0, nk, dk, dv, heads, W, smem, out + (size_t)set * nq * dv);
}

// Component c of the gated message of a vertex with state h and index v:
// sigmoid(Wg[c] . [h ; e_v] + bg[c]) * (Wm[c] . [h ; e_v]); wg, wm: [hs, hs + max_n].
__device__ __forceinline__ float gated_message(const float* h, int v, int c, int hs, int max_n,
                                               const float* wg, const float* bg,
                                               const float* wm) {
    const int ld = hs + max_n;
    const float* g = wg + (size_t)c * ld;
    const float* m = wm + (size_t)c * ld;
    float ag = bg[c] + g[hs + v], am = m[hs + v];
    for (int j = 0; j < hs; ++j) {
        ag += h[j] * g[j];
        am += h[j] * m[j];
    }
    return sigmoidf_(ag) * am;
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
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * hs;
         e += gridDim.x * blockDim.x) {
        int r = e / hs, c = e % hs;
        out[e] = gated_message(h + (size_t)r * hs, vid[r], c, hs, max_n, wg, bg, wm);
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
    DYN_SHARED(m);
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

// ---------------------------------------------------------------------------------------------
// The whole stochastic D-VAE decode of a graph in one thread block (one launch decodes a batch
// of graphs: no launch per step, no host round trip per decision). Block b decodes graph b from
// its latent z[b] with its own random stream state[b] (xoshiro256**, as src/rng.rs), following
// src/model/decoder.rs step for step:
//   h_0 = GRU(e_START, tanh(fc3 z)); then for idx = 1 .. max_n-1 while not finished:
//   type = END at idx = max_n-1, else a draw from softmax(av2 relu(av0 h_{idx-1} + b) + b);
//   h = GRU(e_type, 0); END: connect every vertex without successors, finish, and when any
//   was connected h = GRU(e_END, sum of their messages); otherwise for vi = idx-1 .. 0 an edge
//   vi -> idx with probability sigmoid(ae2 relu(ae0 [h_vi ; h]) + b), and after each added edge
//   h = GRU(e_type, sum of the messages of idx's predecessors).
// Messages m_v = sigmoid(Wg [h_v ; e_v] + bg) * (Wm [h_v ; e_v]) and the h_v half of ae0 are
// computed once per vertex. argmax != 0 takes the most likely type and edges with p > 0.5.
// Out: types[b, max_n] (0xff past the end), preds[b, max_n] (bit u of preds[b, v]: edge u -> v).
// Dynamic shared memory (floats): 2*max_n*hs + max_n*eh + 3*hs + eh + 2*hs + nvt + blockDim.x.

struct DecodeWeights {
    const float *fc3_w, *fc3_b;                  // [hs, nz], [hs]
    const float *gru_in, *gru_whh, *gru_bhh;     // [nvt, 3hs] (W_ih^T + b_ih), [3hs, hs], [3hs]
    const float *av0_w, *av0_b, *av2_w, *av2_b;  // [2hs, hs], [2hs], [nvt, 2hs], [nvt]
    const float *ae0_w, *ae0_b, *ae2_w, *ae2_b;  // [eh, 2hs], [eh], [1, eh], [1]
    const float *gate_w, *gate_b, *map_w;        // [hs, hs + max_n], [hs], [hs, hs + max_n]
};

// out[o] = (b ? b[o] : 0) + sum_j w[o*ld + j] * x[j] for o < n_out (block-cooperative).
__device__ void block_matvec(const float* w, int ld, const float* b, const float* x, int n_in,
                             int n_out, float* out) {
    for (int o = threadIdx.x; o < n_out; o += blockDim.x) {
        const float* wr = w + (size_t)o * ld;
        float acc = b ? b[o] : 0.0f;
        for (int j = 0; j < n_in; ++j) acc += wr[j] * x[j];
        out[o] = acc;
    }
    __syncthreads();
}

// out = GRU(e_type, x) (x == 0 when null); out may not alias x.
__device__ void block_gru(const DecodeWeights& W, int hs, int type, const float* x, float* out) {
    const float* gi = W.gru_in + (size_t)type * 3 * hs;
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        float ar = W.gru_bhh[c], az = W.gru_bhh[hs + c], an = W.gru_bhh[2 * hs + c];
        if (x) {
            const float* wr = W.gru_whh + (size_t)c * hs;
            const float* wz = W.gru_whh + (size_t)(hs + c) * hs;
            const float* wn = W.gru_whh + (size_t)(2 * hs + c) * hs;
            for (int j = 0; j < hs; ++j) {
                ar += wr[j] * x[j];
                az += wz[j] * x[j];
                an += wn[j] * x[j];
            }
        }
        float rg = sigmoidf_(gi[c] + ar);
        float zg = sigmoidf_(gi[hs + c] + az);
        float ng = tanhf(gi[2 * hs + c] + rg * an);
        out[c] = (1.0f - zg) * ng + zg * (x ? x[c] : 0.0f);
    }
    __syncthreads();
}

// sum[c] = sum of msg[u, c] over the bits u of mask.
__device__ void block_msg_sum(const float* msg, int hs, u64 mask, int n, float* sum) {
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        float s = 0.0f;
        for (int u = 0; u < n; ++u)
            if ((mask >> u) & 1ull) s += msg[u * hs + c];
        sum[c] = s;
    }
    __syncthreads();
}

// The message and the h_v half of ae0 (with its bias) of vertex v.
__device__ void block_finalize(const DecodeWeights& W, int hs, int eh, int max_n, int v,
                               const float* h, float* msg, float* ea) {
    for (int c = threadIdx.x; c < hs; c += blockDim.x)
        msg[c] = gated_message(h, v, c, hs, max_n, W.gate_w, W.gate_b, W.map_w);
    block_matvec(W.ae0_w, 2 * hs, W.ae0_b, h, hs, eh, ea);
}

// b2 + sum_k w2[k] * relu(ea[k] + eb[k]), reduced over the block; every thread gets it.
__device__ float block_edge_logit(const DecodeWeights& W, int eh, const float* ea,
                                  const float* eb, float* red) {
    float part = 0.0f;
    for (int k = threadIdx.x; k < eh; k += blockDim.x)
        part += W.ae2_w[k] * fmaxf(ea[k] + eb[k], 0.0f);
    red[threadIdx.x] = part;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    float logit = W.ae2_b[0] + red[0];
    __syncthreads();
    return logit;
}

extern "C" __global__ void decode_graphs(
    const float* __restrict__ z, int nz, int hs, int eh, int nvt, int max_n, int start_type,
    int end_type, int argmax, const float* fc3_w, const float* fc3_b, const float* gru_in,
    const float* gru_whh, const float* gru_bhh, const float* av0_w, const float* av0_b,
    const float* av2_w, const float* av2_b, const float* ae0_w, const float* ae0_b,
    const float* ae2_w, const float* ae2_b, const float* gate_w, const float* gate_b,
    const float* map_w, u64* __restrict__ state, unsigned char* __restrict__ types_out,
    u64* __restrict__ preds_out) {
    const DecodeWeights W = {fc3_w, fc3_b, gru_in, gru_whh, gru_bhh, av0_w, av0_b, av2_w,
                             av2_b, ae0_w, ae0_b, ae2_w, ae2_b, gate_w, gate_b, map_w};
    DYN_SHARED(smem);
    const int g = blockIdx.x;
    float* h = smem;                 // [max_n, hs]
    float* msg = h + max_n * hs;     // [max_n, hs]
    float* ea = msg + max_n * hs;    // [max_n, eh]
    float* cur = ea + max_n * eh;    // [hs]
    float* sum = cur + hs;           // [hs]
    float* h0 = sum + hs;            // [hs]
    float* eb = h0 + hs;             // [eh]
    float* hid = eb + eh;            // [2hs]
    float* logits = hid + 2 * hs;    // [nvt]
    float* red = logits + nvt;       // [blockDim.x]
    __shared__ u64 preds[64];
    __shared__ int types[64];
    __shared__ int decision;
    u64* st = state + (size_t)g * 4;
    const bool lead = threadIdx.x == 0;

    // vertex 0
    block_matvec(W.fc3_w, nz, W.fc3_b, z + (size_t)g * nz, nz, hs, h0);
    for (int c = threadIdx.x; c < hs; c += blockDim.x) h0[c] = tanhf(h0[c]);
    __syncthreads();
    block_gru(W, hs, start_type, h0, h);
    if (lead) {
        for (int v = 0; v < max_n; ++v) {
            preds[v] = 0;
            types[v] = -1;
        }
        types[0] = start_type;
    }
    __syncthreads();
    block_finalize(W, hs, eh, max_n, 0, h, msg, ea);

    for (int idx = 1; idx < max_n; ++idx) {
        // the type of vertex idx
        if (idx == max_n - 1) {
            if (lead) decision = end_type;
        } else {
            block_matvec(W.av0_w, hs, W.av0_b, h + (idx - 1) * hs, hs, 2 * hs, hid);
            for (int k = threadIdx.x; k < 2 * hs; k += blockDim.x) hid[k] = fmaxf(hid[k], 0.0f);
            __syncthreads();
            block_matvec(W.av2_w, 2 * hs, W.av2_b, hid, 2 * hs, nvt, logits);
            if (lead) {
                if (argmax) {
                    int best = 0;
                    for (int t = 1; t < nvt; ++t)
                        if (logits[t] > logits[best]) best = t;
                    decision = best;
                } else {
                    float mx = logits[0];
                    for (int t = 1; t < nvt; ++t) mx = fmaxf(mx, logits[t]);
                    float s = 0.0f;
                    for (int t = 0; t < nvt; ++t) s += expf(logits[t] - mx);
                    float inv = 1.0f / s;
                    double total = 0.0;
                    for (int t = 0; t < nvt; ++t) total += (double)(expf(logits[t] - mx) * inv);
                    double u = (double)(xoshiro_next(st) >> 11) * (1.0 / 9007199254740992.0) * total;
                    double acc = 0.0;
                    int pick = -1, last = 0;
                    for (int t = 0; t < nvt; ++t) {
                        float p = expf(logits[t] - mx) * inv;
                        if (p > 0.0f) last = t;
                        acc += (double)p;
                        if (pick < 0 && u < acc) pick = t;
                    }
                    decision = pick < 0 ? last : pick;
                }
            }
        }
        __syncthreads();
        const int type = decision;
        if (lead) types[idx] = type;
        block_gru(W, hs, type, 0, cur);

        bool finished = false;
        if (type == end_type) {
            u64 has_succ = 0;
            for (int v = 0; v < idx; ++v) has_succ |= preds[v];
            u64 loose = ~has_succ & ((1ull << idx) - 1ull);
            if (lead) preds[idx] = loose;
            __syncthreads();
            finished = true;
            if (loose != 0) {
                block_msg_sum(msg, hs, loose, idx, sum);
                block_gru(W, hs, type, sum, cur);
            }
        } else {
            block_matvec(W.ae0_w + hs, 2 * hs, 0, cur, hs, eh, eb);
            for (int vi = idx - 1; vi >= 0; --vi) {
                float logit = block_edge_logit(W, eh, ea + vi * eh, eb, red);
                if (lead) {
                    float p = sigmoidf_(logit);
                    int add;
                    if (argmax) {
                        add = p > 0.5f;
                    } else {
                        float u = (float)(xoshiro_next(st) >> 40) * (1.0f / 16777216.0f);
                        add = u < p;
                    }
                    decision = add;
                    if (add) preds[idx] |= 1ull << vi;
                }
                __syncthreads();
                if (decision) {
                    block_msg_sum(msg, hs, preds[idx], idx, sum);
                    block_gru(W, hs, type, sum, cur);
                    if (vi > 0) block_matvec(W.ae0_w + hs, 2 * hs, 0, cur, hs, eh, eb);
                }
            }
        }
        for (int c = threadIdx.x; c < hs; c += blockDim.x) h[idx * hs + c] = cur[c];
        __syncthreads();
        if (finished) break;
        if (idx + 1 < max_n) block_finalize(W, hs, eh, max_n, idx, h + idx * hs, msg + idx * hs, ea + idx * eh);
    }
    if (lead) {
        for (int v = 0; v < max_n; ++v) {
            types_out[(size_t)g * max_n + v] = types[v] < 0 ? 0xff : (unsigned char)types[v];
            preds_out[(size_t)g * max_n + v] = preds[v];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Set encoding and ranking on the device: a search's set samples are pooled by `set_pool`
// (twice per set encoder: inside each class, then across the class prototypes), the generator's
// latents and the predictor head's dataset half come from `linear_cols`, and `rank_cells` scores
// every candidate cell against the resident table of the head's graph half in one launch.

// SetPool (SAB -> SAB -> PMA with one seed -> Linear), one set per thread block. Set s has the
// n rows x + rows[s*n + i] * din when gather != 0, else the n rows from x + s*n*din. W packs
// the first SAB (dq = dk = din, dv = dh), the second SAB and the PMA (all dh) as block_mab
// reads them, then the seed [dh], then the output Linear: w [dout, dh], b [dout].
// out: [nsets, dout]. Dynamic shared memory (floats): 6*n*dh + dh + 2*heads*n.
extern "C" __global__ void set_pool(const float* __restrict__ x, const int* __restrict__ rows,
                                    int gather, int n, int din, int dh, int dout, int heads,
                                    const float* __restrict__ W, float* __restrict__ out) {
    DYN_SHARED(smem);
    const int set = blockIdx.x;
    const int tid = threadIdx.x, nt = blockDim.x;
    float* a = smem;               // [n, dh]: first SAB
    float* b = a + n * dh;         // [n, dh]: second SAB
    float* pooled = b + n * dh;    // [dh]: PMA
    float* scratch = pooled + dh;  // 4*n*dh + 2*heads*n
    const int* idx = gather ? rows + (size_t)set * n : 0;
    const float* xs = gather ? x : x + (size_t)set * n * din;
    const float* seed;
    const MabWeights w1 = packed_mab(W, din, din, dh, &seed);
    const MabWeights w2 = packed_mab(seed, dh, dh, dh, &seed);
    const MabWeights w3 = packed_mab(seed, dh, dh, dh, &seed);
    const float* ow = seed + dh;
    const float* ob = ow + (size_t)dout * dh;
    block_mab(xs, idx, n, din, xs, idx, n, din, dh, heads, w1, scratch, a);
    block_mab(a, 0, n, dh, a, 0, n, dh, dh, heads, w2, scratch, b);
    block_mab(seed, 0, 1, dh, b, 0, n, dh, dh, heads, w3, scratch, pooled);
    for (int c = tid; c < dout; c += nt) {
        const float* w = ow + (size_t)c * dh;
        float acc = ob[c];
        for (int j = 0; j < dh; ++j) acc += pooled[j] * w[j];
        out[(size_t)set * dout + c] = acc;
    }
}

// A Linear on a column block of its input: y[r, o] = (has_bias ? b[o] : 0)
//   + sum_{j < cols} x[r*ldx + j] * w[o*ldw + col + j]
// for r < rows, o < out_dim (the generator's latent head, and the predictor head's dataset and
// graph halves). One thread per output.
extern "C" __global__ void linear_cols(const float* __restrict__ x, int rows, int ldx,
                                       const float* __restrict__ w, int ldw, int col, int cols,
                                       const float* __restrict__ b, int has_bias, int out_dim,
                                       float* __restrict__ y) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         e < (long long)rows * out_dim; e += (long long)gridDim.x * blockDim.x) {
        int r = (int)(e / out_dim), o = (int)(e % out_dim);
        const float* xr = x + (size_t)r * ldx;
        const float* wr = w + (size_t)o * ldw + col;
        float acc = has_bias ? b[o] : 0.0f;
        for (int j = 0; j < cols; ++j) acc += xr[j] * wr[j];
        y[e] = acc;
    }
}

// Scores of candidate cells, one thread block per candidate i with cell code k = codes[i]:
//   score = sum_r wts[r] * (sum_c w2[c] * tanh(a[k, c] + cd[r, c])) + b2
//           (+ prior[k] when has_prior) (+ sum_s mixv[s*types + ops[k*slots + s]] when has_mix)
// a: [cells, p], the head's graph half of every cell (bias included); cd: [r, p], its dataset
// half of each distinct set sample; wts: [r], the samples' weights. blockDim.x must be a power
// of two. Dynamic shared memory: blockDim.x floats.
extern "C" __global__ void rank_cells(const float* __restrict__ a, const int* __restrict__ codes,
                                      int p, const float* __restrict__ cd,
                                      const float* __restrict__ wts, int r,
                                      const float* __restrict__ w2, float b2,
                                      const float* __restrict__ prior, int has_prior,
                                      const float* __restrict__ mixv,
                                      const unsigned char* __restrict__ ops, int slots, int types,
                                      int has_mix, float* __restrict__ out) {
    DYN_SHARED(red);
    const int i = blockIdx.x;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int k = codes[i];
    const float* ak = a + (size_t)k * p;
    float total = 0.0f;
    for (int rr = 0; rr < r; ++rr) {
        const float* c = cd + (size_t)rr * p;
        float part = 0.0f;
        for (int j = tid; j < p; j += nt) part += w2[j] * tanhf(ak[j] + c[j]);
        red[tid] = part;
        __syncthreads();
        for (int s = nt / 2; s > 0; s >>= 1) {
            if (tid < s) red[tid] += red[tid + s];
            __syncthreads();
        }
        total += wts[rr] * red[0];
        __syncthreads();
    }
    if (tid == 0) {
        float s = total + b2;
        if (has_prior) s += prior[k];
        if (has_mix) {
            float m = 0.0f;
            for (int t = 0; t < slots; ++t) m += mixv[t * types + ops[(size_t)k * slots + t]];
            s += m;
        }
        out[i] = s;
    }
}
