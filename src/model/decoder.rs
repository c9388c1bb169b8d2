//! The generator's graph decoder (D-VAE, Zhang et al. 2019, as modified by MetaD2A), batched
//! over many graphs per step.
//!
//! From a latent `z: [nz]`: `H0 = tanh(fc3(z))`, vertex 0 is START with `h_0 = GRU(e_START, H0)`.
//! Then for `idx = 1 .. max_n-1`:
//! 1. type: END when `idx = max_n-1`, else drawn from `softmax(add_vertex(h_last))` (or argmax),
//!    where `h_last` is the state of the graph's most recently added vertex;
//! 2. `h_idx = GRU(e_type, 0)`;
//! 3. an END vertex is connected from every vertex without successors and the graph is finished;
//!    otherwise, for `vi = idx-1 .. 0`, an edge `vi → idx` is added with probability
//!    `σ(add_edge([h_vi ; h_idx]))` (argmax: `p > 0.5`), and after each added edge
//!    `h_idx = GRU(e_type, Σ_{u ∈ pred(idx)} m_u)` with the gated messages `m_u`.
//!
//! Graphs that end early (END drawn before the last position) stay short; such graphs fail the
//! validity rules later, as in the official code.
//!
//! What is fused relative to the reference: a vertex's message `m_u` and its half of the first
//! `add_edge` layer (`W_a h_u + b`) are computed once when the vertex is final, not at every
//! step; the state is recomputed only when an edge was actually added (when none is, the
//! official recomputation yields the same state). What nothing reads is not computed: the END
//! vertex's state, and the message and `add_edge` half of the vertex at position `max_n-2`
//! (the next one is END for every graph).

use super::dims::GeneratorDims;
use crate::error::{Error, Result};
use crate::graph::{Dag, END_TYPE, START_TYPE};
use crate::nn::linalg::{argmax, dot_relu, relu_inplace, sigmoid, softmax_inplace, tanh_inplace};
use crate::nn::{GatedMessage, GruCell, Linear};
use crate::rng::Rng;
use crate::weights::WeightStore;

/// How each decision is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeMode {
    /// The most likely type; an edge when its probability exceeds 0.5.
    Argmax,
    /// Types from the categorical distribution, edges from Bernoulli draws.
    Sample,
}

#[derive(Debug)]
pub struct GraphDecoder {
    pub fc3: Linear,
    pub grud: GruCell,
    pub add_vertex: [Linear; 2],
    pub add_edge: [Linear; 2],
    pub message: GatedMessage,
    pub nz: usize,
    pub hs: usize,
    pub nvt: usize,
    pub max_n: usize,
    /// The new vertex's half of the first `add_edge` layer for its state before any edge,
    /// `[nvt, 4 hs]` by type (that state depends on the type alone), made on first use.
    fresh_edge_half: std::sync::OnceLock<Vec<f32>>,
}

impl GraphDecoder {
    /// Loads `fc3`, `grud`, `add_vertex.{0,2}`, `add_edge.{0,2}`, `decoding_gate.0`,
    /// `decoding_mapper.0`.
    pub fn load(store: &WeightStore, d: &GeneratorDims) -> Result<Self> {
        let hs = d.hs;
        Ok(GraphDecoder {
            fc3: Linear::load(store, "fc3", d.nz, hs, true)?,
            grud: GruCell::load(store, "grud", d.nvt, hs)?,
            add_vertex: [
                Linear::load(store, "add_vertex.0", hs, 2 * hs, true)?,
                Linear::load(store, "add_vertex.2", 2 * hs, d.nvt, true)?,
            ],
            add_edge: [
                Linear::load(store, "add_edge.0", 2 * hs, 4 * hs, true)?,
                Linear::load(store, "add_edge.2", 4 * hs, 1, true)?,
            ],
            message: GatedMessage::load(
                store,
                "decoding_gate.0",
                "decoding_mapper.0",
                hs,
                d.max_n,
            )?,
            nz: d.nz,
            hs,
            nvt: d.nvt,
            max_n: d.max_n,
            fresh_edge_half: std::sync::OnceLock::new(),
        })
    }

    /// Decodes one graph per latent row of `z` (`[n, nz]`). In [`DecodeMode::Sample`], graph
    /// `i` draws from `rngs[i]` only, so results do not depend on how graphs are batched.
    pub fn decode(&self, z: &[f32], mode: DecodeMode, rngs: &mut [Rng]) -> Result<Vec<Dag>> {
        if z.is_empty() || !z.len().is_multiple_of(self.nz) {
            return Err(Error::invalid(format!(
                "latent batch of {} values is not a positive multiple of nz = {}",
                z.len(),
                self.nz
            )));
        }
        let n = z.len() / self.nz;
        if mode == DecodeMode::Sample && rngs.len() != n {
            return Err(Error::invalid(format!(
                "stochastic decoding of {n} graphs needs {n} random streams, got {}",
                rngs.len()
            )));
        }
        let mut st = State::take(self, n);
        let result = self.decode_in(&mut st, z, n, mode, rngs);
        State::put_back(st);
        Ok(result)
    }

    /// [`decode`](Self::decode) in a prepared state.
    fn decode_in(
        &self,
        st: &mut State,
        z: &[f32],
        n: usize,
        mode: DecodeMode,
        rngs: &mut [Rng],
    ) -> Vec<Dag> {
        let hs = self.hs;
        // Vertex 0: START, its hidden input comes from the latent.
        let mut h0 = self.fc3.forward(z, n);
        tanh_inplace(&mut h0);
        let mut out = vec![0.0; n * hs];
        self.grud
            .step_onehot(&vec![START_TYPE; n], Some(&h0), &mut out, &mut st.scratch);
        let mut rows = std::mem::take(&mut st.b.rows);
        rows.clear();
        rows.extend(0..n);
        for g in 0..n {
            st.types[g].push(START_TYPE);
            st.preds[g].push(0);
            st.h_mut(g, 0).copy_from_slice(&out[g * hs..(g + 1) * hs]);
        }
        self.finalize(st, 0, &rows);

        let mut active = std::mem::take(&mut st.b.active);
        let mut new_types = std::mem::take(&mut st.b.new_types);
        let mut cont = std::mem::take(&mut st.b.cont);
        let mut hc = std::mem::take(&mut st.b.hc);
        for idx in 1..self.max_n {
            active.clear();
            active.extend((0..n).filter(|&g| !st.finished[g]));
            if active.is_empty() {
                break;
            }
            self.choose_types(st, idx, &active, mode, rngs, &mut new_types);
            for (&g, &t) in active.iter().zip(&new_types) {
                st.types[g].push(t);
                st.preds[g].push(0);
            }
            // Every row is written (from the zero-state table).
            hc.resize(active.len() * hs, 0.0);
            self.grud
                .step_onehot(&new_types, None, &mut hc, &mut st.scratch);

            cont.clear();
            for (i, &g) in active.iter().enumerate() {
                if new_types[i] == END_TYPE {
                    // Connect every loose end (no successor yet) to the new END vertex.
                    let mut has_succ = 0u64;
                    for v in 0..idx {
                        has_succ |= st.preds[g][v];
                    }
                    // (The END vertex's state is not computed: nothing reads it.)
                    st.preds[g][idx] = !has_succ & ((1u64 << idx) - 1);
                    st.finished[g] = true;
                } else {
                    cont.push(i);
                }
            }
            if !cont.is_empty() {
                self.decide_edges(st, idx, &active, &new_types, &cont, &mut hc, mode, rngs);
            }
            for (i, &g) in active.iter().enumerate() {
                st.h_mut(g, idx).copy_from_slice(&hc[i * hs..(i + 1) * hs]);
            }
            // The next position, when there is one, is END for every graph: it reads no
            // vertex's message or `add_edge` half.
            if idx + 2 < self.max_n {
                rows.clear();
                rows.extend(active.iter().copied().filter(|&g| !st.finished[g]));
                self.finalize(st, idx, &rows);
            }
        }
        st.b.rows = rows;
        st.b.active = active;
        st.b.new_types = new_types;
        st.b.cont = cont;
        st.b.hc = hc;
        (0..n)
            .map(|g| Dag {
                types: std::mem::take(&mut st.types[g]),
                preds: std::mem::take(&mut st.preds[g]),
            })
            .collect()
    }

    /// Vertex types for position `idx` of the `active` graphs, into `out`.
    fn choose_types(
        &self,
        st: &mut State,
        idx: usize,
        active: &[usize],
        mode: DecodeMode,
        rngs: &mut [Rng],
        out: &mut Vec<u8>,
    ) {
        out.clear();
        if idx == self.max_n - 1 {
            out.resize(active.len(), END_TYPE);
            return;
        }
        let hs = self.hs;
        let na = active.len();
        let mut hg = std::mem::take(&mut st.b.gather);
        hg.resize(na * hs, 0.0);
        for (i, &g) in active.iter().enumerate() {
            let last = st.types[g].len() - 1;
            hg[i * hs..(i + 1) * hs].copy_from_slice(st.h(g, last));
        }
        let mut hidden = std::mem::take(&mut st.b.hidden);
        hidden.resize(na * self.add_vertex[0].out_dim, 0.0);
        self.add_vertex[0].forward_into(&hg, na, &mut hidden);
        relu_inplace(&mut hidden);
        let mut logits = std::mem::take(&mut st.b.logits);
        logits.resize(na * self.nvt, 0.0);
        self.add_vertex[1].forward_into(&hidden, na, &mut logits);
        out.extend(
            logits
                .chunks_exact_mut(self.nvt)
                .zip(active)
                .map(|(row, &g)| match mode {
                    DecodeMode::Argmax => argmax(row) as u8,
                    DecodeMode::Sample => {
                        softmax_inplace(row);
                        sample_categorical(row, &mut rngs[g]) as u8
                    }
                }),
        );
        st.b.gather = hg;
        st.b.hidden = hidden;
        st.b.logits = logits;
    }

    /// Edge decisions `vi → idx` for `vi = idx-1 .. 0`, for the rows `cont` of `active`.
    #[allow(clippy::too_many_arguments)]
    fn decide_edges(
        &self,
        st: &mut State,
        idx: usize,
        active: &[usize],
        new_types: &[u8],
        cont: &[usize],
        hc: &mut [f32],
        mode: DecodeMode,
        rngs: &mut [Rng],
    ) {
        let (hs, eh) = (self.hs, self.add_edge[0].out_dim);
        let nc = cont.len();
        let mut graphs = std::mem::take(&mut st.b.graphs);
        graphs.clear();
        graphs.extend(cont.iter().map(|&i| active[i]));
        let mut types = std::mem::take(&mut st.b.types);
        types.clear();
        types.extend(cont.iter().map(|&i| new_types[i]));
        let mut cur = std::mem::take(&mut st.b.cur);
        cur.resize(nc * hs, 0.0);
        for (r, &i) in cont.iter().enumerate() {
            cur[r * hs..(r + 1) * hs].copy_from_slice(&hc[i * hs..(i + 1) * hs]);
        }
        let w2 = &self.add_edge[1].weight;
        let b2 = self.add_edge[1].bias.as_ref().map_or(0.0, |b| b[0]);
        // The h_idx half of add_edge.0 for each row (the h_vi half, with the bias, was cached at
        // finalize); recomputed only for rows whose state changed.
        // Every row of `cur` is still its type's zero-state row: its half comes from a table.
        let table = self.fresh_edge_half.get_or_init(|| {
            let mut t = vec![0.0; self.nvt * eh];
            self.add_edge[0].forward_cols_into(
                self.grud.zero_state(),
                hs,
                self.nvt,
                hs,
                hs,
                &mut t,
                false,
            );
            t
        });
        let mut eb = std::mem::take(&mut st.b.eb);
        eb.clear();
        for &ty in &types {
            eb.extend_from_slice(&table[ty as usize * eh..(ty as usize + 1) * eh]);
        }
        let mut fresh = std::mem::take(&mut st.b.fresh);
        let mut fresh_eb = std::mem::take(&mut st.b.fresh_eb);
        let mut changed = std::mem::take(&mut st.b.changed);
        let mut cg = std::mem::take(&mut st.b.changed_graphs);
        let mut ct = std::mem::take(&mut st.b.changed_types);
        for vi in (0..idx).rev() {
            changed.clear();
            for (r, &g) in graphs.iter().enumerate() {
                let logit = b2 + dot_relu(&eb[r * eh..(r + 1) * eh], st.ea(g, vi), w2);
                let p = sigmoid(logit);
                let add = match mode {
                    DecodeMode::Argmax => p > 0.5,
                    DecodeMode::Sample => rngs[g].next_f32() < p,
                };
                if add {
                    st.preds[g][idx] |= 1 << vi;
                    changed.push(r);
                }
            }
            if !changed.is_empty() {
                cg.clear();
                cg.extend(changed.iter().map(|&r| graphs[r]));
                ct.clear();
                ct.extend(changed.iter().map(|&r| types[r]));
                // Every row is written by the GRU step.
                fresh.resize(changed.len() * hs, 0.0);
                self.refresh(st, &cg, idx, &ct, &mut fresh[..changed.len() * hs]);
                for (k, &r) in changed.iter().enumerate() {
                    cur[r * hs..(r + 1) * hs].copy_from_slice(&fresh[k * hs..(k + 1) * hs]);
                }
                if vi > 0 {
                    fresh_eb.resize(changed.len() * eh, 0.0);
                    self.add_edge[0].forward_cols_into(
                        &fresh,
                        hs,
                        changed.len(),
                        hs,
                        hs,
                        &mut fresh_eb,
                        false,
                    );
                    for (k, &r) in changed.iter().enumerate() {
                        eb[r * eh..(r + 1) * eh].copy_from_slice(&fresh_eb[k * eh..(k + 1) * eh]);
                    }
                }
            }
        }
        for (r, &i) in cont.iter().enumerate() {
            hc[i * hs..(i + 1) * hs].copy_from_slice(&cur[r * hs..(r + 1) * hs]);
        }
        st.b.graphs = graphs;
        st.b.types = types;
        st.b.cur = cur;
        st.b.eb = eb;
        st.b.fresh = fresh;
        st.b.fresh_eb = fresh_eb;
        st.b.changed = changed;
        st.b.changed_graphs = cg;
        st.b.changed_types = ct;
    }

    /// `h_idx = GRU(e_type, Σ_{u ∈ pred(idx)} m_u)` for each graph of `graphs` (with its type in
    /// `types`), written row by row into `out` (`[graphs.len(), hs]`).
    fn refresh(&self, st: &mut State, graphs: &[usize], idx: usize, types: &[u8], out: &mut [f32]) {
        let hs = self.hs;
        let mut hsum = std::mem::take(&mut st.b.hsum);
        hsum.clear();
        hsum.resize(graphs.len() * hs, 0.0);
        for (r, &g) in graphs.iter().enumerate() {
            let preds = st.preds[g][idx];
            let row = &mut hsum[r * hs..(r + 1) * hs];
            for u in 0..idx {
                if preds >> u & 1 == 1 {
                    for (a, b) in row.iter_mut().zip(st.msg(g, u)) {
                        *a += b;
                    }
                }
            }
        }
        self.grud
            .step_onehot(types, Some(&hsum), out, &mut st.scratch);
        st.b.hsum = hsum;
    }

    /// Caches the message and the `add_edge` half of vertex `v` of each graph in `rows`.
    fn finalize(&self, st: &mut State, v: usize, rows: &[usize]) {
        if rows.is_empty() {
            return;
        }
        let (hs, eh) = (self.hs, self.add_edge[0].out_dim);
        let nr = rows.len();
        let mut hb = std::mem::take(&mut st.b.gather);
        hb.resize(nr * hs, 0.0);
        for (r, &g) in rows.iter().enumerate() {
            hb[r * hs..(r + 1) * hs].copy_from_slice(st.h(g, v));
        }
        // Every row of both is written by the products.
        let mut m = std::mem::take(&mut st.b.msg);
        m.resize(nr * hs, 0.0);
        let mut scratch = std::mem::take(&mut st.scratch);
        self.message
            .messages(&hb, nr, v, &mut m[..nr * hs], &mut scratch);
        st.scratch = scratch;
        let mut ea = std::mem::take(&mut st.b.ea);
        ea.resize(nr * eh, 0.0);
        self.add_edge[0].forward_cols_into(&hb, hs, nr, 0, hs, &mut ea, true);
        for (r, &g) in rows.iter().enumerate() {
            st.msg_mut(g, v).copy_from_slice(&m[r * hs..(r + 1) * hs]);
            st.ea_mut(g, v).copy_from_slice(&ea[r * eh..(r + 1) * eh]);
        }
        st.b.gather = hb;
        st.b.msg = m;
        st.b.ea = ea;
    }
}

/// Index drawn from a probability row (inverse CDF; a draw past the rounded total picks the
/// last type with nonzero probability).
pub fn sample_categorical(probs: &[f32], rng: &mut Rng) -> usize {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let u = rng.next_f64() * total;
    let mut acc = 0.0f64;
    for (i, &p) in probs.iter().enumerate() {
        acc += p as f64;
        if u < acc {
            return i;
        }
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// Per-batch decoding state: types and predecessor masks per graph, per-vertex caches, and the
/// working buffers of the steps (kept, with the caches, for the thread's next batch).
#[derive(Default)]
struct State {
    types: Vec<Vec<u8>>,
    preds: Vec<Vec<u64>>,
    finished: Vec<bool>,
    h: Vec<f32>,
    msg: Vec<f32>,
    ea: Vec<f32>,
    scratch: Vec<f32>,
    b: Buffers,
    hs: usize,
    eh: usize,
    max_n: usize,
}

/// The steps' working buffers (taken out of the state while a step fills them).
#[derive(Default)]
struct Buffers {
    rows: Vec<usize>,
    active: Vec<usize>,
    new_types: Vec<u8>,
    cont: Vec<usize>,
    graphs: Vec<usize>,
    types: Vec<u8>,
    changed: Vec<usize>,
    changed_graphs: Vec<usize>,
    changed_types: Vec<u8>,
    hc: Vec<f32>,
    gather: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    cur: Vec<f32>,
    eb: Vec<f32>,
    fresh: Vec<f32>,
    fresh_eb: Vec<f32>,
    hsum: Vec<f32>,
    msg: Vec<f32>,
    ea: Vec<f32>,
}

thread_local! {
    /// This thread's last decoding state, reused by its next batch (fresh memory costs a page
    /// fault per 4 kB on first write).
    static SPARE: std::cell::Cell<Option<State>> = const { std::cell::Cell::new(None) };
}

/// The most per-vertex cache values (`h`, `msg`, `ea`) a thread keeps between batches (4 MB;
/// a search's half batch of 50 NB201 graphs needs 0.5 MB).
const SPARE_VALUES: usize = 1 << 20;

impl State {
    /// A state for `n` graphs: this thread's spare one when there is one, else a new one. The
    /// per-vertex caches start zeroed either way.
    fn take(d: &GraphDecoder, n: usize) -> Self {
        let (hs, eh, mn) = (d.hs, d.add_edge[0].out_dim, d.max_n);
        let mut st = SPARE.with(|s| s.take()).unwrap_or_default();
        st.types.clear();
        st.types.resize_with(n, || Vec::with_capacity(mn));
        st.preds.clear();
        st.preds.resize_with(n, || Vec::with_capacity(mn));
        st.finished.clear();
        st.finished.resize(n, false);
        for (v, w) in [(&mut st.h, hs), (&mut st.msg, hs), (&mut st.ea, eh)] {
            v.clear();
            v.resize(n * mn * w, 0.0);
        }
        (st.hs, st.eh, st.max_n) = (hs, eh, mn);
        st
    }

    /// Keeps `self` for the thread's next batch, unless its caches are large.
    fn put_back(self) {
        if self.h.len() + self.msg.len() + self.ea.len() <= SPARE_VALUES {
            SPARE.with(|s| s.set(Some(self)));
        }
    }
    fn at(&self, g: usize, v: usize, w: usize) -> std::ops::Range<usize> {
        let o = (g * self.max_n + v) * w;
        o..o + w
    }
    fn h(&self, g: usize, v: usize) -> &[f32] {
        &self.h[self.at(g, v, self.hs)]
    }
    fn h_mut(&mut self, g: usize, v: usize) -> &mut [f32] {
        let r = self.at(g, v, self.hs);
        &mut self.h[r]
    }
    fn msg(&self, g: usize, v: usize) -> &[f32] {
        &self.msg[self.at(g, v, self.hs)]
    }
    fn msg_mut(&mut self, g: usize, v: usize) -> &mut [f32] {
        let r = self.at(g, v, self.hs);
        &mut self.msg[r]
    }
    fn ea(&self, g: usize, v: usize) -> &[f32] {
        &self.ea[self.at(g, v, self.eh)]
    }
    fn ea_mut(&mut self, g: usize, v: usize) -> &mut [f32] {
        let r = self.at(g, v, self.eh);
        &mut self.ea[r]
    }
}
