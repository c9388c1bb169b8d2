// Runs one kernel of kernels/metad2a.cu, emulated (see emulate.h), on inputs from a file:
//   harness KERNEL IN OUT
// IN: int32 header values, then arrays, each an u64 element count and its little-endian data,
// in the order the kernel's section below reads them. OUT: the results, in the same format.
#include "emulate.h"
#include "../../kernels/metad2a.cu"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static FILE* in;
static FILE* out;

static int rd_int() {
    int v;
    if (fread(&v, 4, 1, in) != 1) exit(3);
    return v;
}
template <class T> static std::vector<T> rd() {
    uint64_t n;
    if (fread(&n, 8, 1, in) != 1) exit(3);
    std::vector<T> v(n);
    if (n && fread(v.data(), sizeof(T), n, in) != n) exit(3);
    return v;
}
template <class T> static void wr(const std::vector<T>& v) {
    uint64_t n = v.size();
    fwrite(&n, 8, 1, out);
    fwrite(v.data(), sizeof(T), n, out);
}

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    std::string k = argv[1];
    in = fopen(argv[2], "rb");
    out = fopen(argv[3], "wb");
    if (!in || !out) return 2;
    std::vector<float> shared(1 << 20);
    emu_shared = shared.data();
    if (k == "mab_fused") {
        int q_shared = rd_int(), nsets = rd_int(), nq = rd_int(), nk = rd_int(), dq = rd_int(),
            dk = rd_int(), dv = rd_int(), heads = rd_int();
        auto q = rd<float>(), kk = rd<float>(), wq = rd<float>(), bq = rd<float>(),
             wk = rd<float>(), bk = rd<float>(), wv = rd<float>(), bv = rd<float>(),
             wo = rd<float>(), bo = rd<float>();
        std::vector<float> o((size_t)nsets * nq * dv);
        for (int b = 0; b < nsets; ++b) {
            blockIdx.x = b;
            mab_fused(q.data(), q_shared, kk.data(), nq, nk, dq, dk, dv, heads, wq.data(),
                      bq.data(), wk.data(), bk.data(), wv.data(), bv.data(), wo.data(),
                      bo.data(), o.data());
        }
        wr(o);
    } else if (k == "decode_graphs") {
        int nz = rd_int(), hs = rd_int(), eh = rd_int(), nvt = rd_int(), max_n = rd_int(),
            start = rd_int(), end = rd_int(), argmax = rd_int(), n = rd_int();
        auto z = rd<float>();
        std::vector<std::vector<float>> w;
        for (int i = 0; i < 16; ++i) w.push_back(rd<float>());
        auto state = rd<u64>();
        std::vector<unsigned char> types((size_t)n * max_n);
        std::vector<u64> preds((size_t)n * max_n);
        for (int b = 0; b < n; ++b) {
            blockIdx.x = b;
            decode_graphs(z.data(), nz, hs, eh, nvt, max_n, start, end, argmax, w[0].data(),
                          w[1].data(), w[2].data(), w[3].data(), w[4].data(), w[5].data(),
                          w[6].data(), w[7].data(), w[8].data(), w[9].data(), w[10].data(),
                          w[11].data(), w[12].data(), w[13].data(), w[14].data(), w[15].data(),
                          state.data(), types.data(), preds.data());
        }
        wr(types);
        wr(preds);
        wr(state);
    } else if (k == "gru_gated_step") {
        int rows = rd_int(), hs = rd_int(), max_n = rd_int();
        auto types = rd<unsigned char>();
        auto preds = rd<u64>();
        auto msgs = rd<float>(), gi = rd<float>(), whh = rd<float>(), bhh = rd<float>();
        std::vector<float> o((size_t)rows * hs);
        for (int b = 0; b < rows; ++b) {
            blockIdx.x = b;
            gru_gated_step(types.data(), preds.data(), msgs.data(), hs, max_n, gi.data(),
                           whh.data(), bhh.data(), o.data());
        }
        wr(o);
    } else if (k == "gated_messages") {
        int rows = rd_int(), hs = rd_int(), max_n = rd_int();
        auto h = rd<float>();
        auto vid = rd<int>();
        auto wg = rd<float>(), bg = rd<float>(), wm = rd<float>();
        std::vector<float> o((size_t)rows * hs);
        gated_messages(h.data(), vid.data(), rows, hs, max_n, wg.data(), bg.data(), wm.data(),
                       o.data());
        wr(o);
    } else if (k == "set_pool") {
        int gather = rd_int(), nsets = rd_int(), n = rd_int(), din = rd_int(), dh = rd_int(),
            dout = rd_int(), heads = rd_int();
        auto x = rd<float>();
        auto rows = rd<int>();
        auto w = rd<float>();
        std::vector<float> o((size_t)nsets * dout);
        for (int b = 0; b < nsets; ++b) {
            blockIdx.x = b;
            set_pool(x.data(), rows.data(), gather, n, din, dh, dout, heads, w.data(), o.data());
        }
        wr(o);
    } else if (k == "linear_cols") {
        int rows = rd_int(), ldx = rd_int(), ldw = rd_int(), col = rd_int(), cols = rd_int(),
            has_bias = rd_int(), out_dim = rd_int();
        auto x = rd<float>(), w = rd<float>(), b = rd<float>();
        std::vector<float> o((size_t)rows * out_dim);
        linear_cols(x.data(), rows, ldx, w.data(), ldw, col, cols, b.data(), has_bias, out_dim,
                    o.data());
        wr(o);
    } else if (k == "rank_cells") {
        int n = rd_int(), p = rd_int(), r = rd_int(), has_prior = rd_int(), slots = rd_int(),
            types = rd_int(), has_mix = rd_int();
        auto a = rd<float>();
        auto codes = rd<int>();
        auto cd = rd<float>(), wts = rd<float>(), w2 = rd<float>(), b2 = rd<float>(),
             prior = rd<float>(), mixv = rd<float>();
        auto ops = rd<unsigned char>();
        std::vector<float> o(n);
        for (int b = 0; b < n; ++b) {
            blockIdx.x = b;
            rank_cells(a.data(), codes.data(), p, cd.data(), wts.data(), r, w2.data(), b2[0],
                       prior.data(), has_prior, mixv.data(), ops.data(), slots, types, has_mix,
                       o.data());
        }
        wr(o);
    } else if (k == "sample_types") {
        int rows = rd_int(), nvt = rd_int();
        auto logits = rd<float>();
        auto state = rd<u64>();
        std::vector<unsigned char> o(rows);
        for (int r = 0; r < rows; ++r) {
            blockIdx.x = r;
            sample_types(logits.data(), rows, nvt, state.data(), o.data());
        }
        wr(o);
        wr(state);
    } else if (k == "sample_edges") {
        int rows = rd_int();
        auto logits = rd<float>();
        auto state = rd<u64>();
        std::vector<unsigned char> o(rows);
        for (int r = 0; r < rows; ++r) {
            blockIdx.x = r;
            sample_edges(logits.data(), rows, state.data(), o.data());
        }
        wr(o);
        wr(state);
    } else {
        return 2;
    }
    fclose(out);
    return 0;
}
