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
//!
//! Graphs with equal latents share their work: graphs that have drawn the same types and edges
//! so far from the same latent have the same states, so each such group is computed once and
//! splits when a draw differs (see `decode_in`). A search whose set samples are all the whole
//! dataset decodes every graph from one latent; most of its graphs repeat earlier ones, and a
//! [`DrawTree`] of what its decoded graphs drew lets later graphs that draw the same be
//! replayed without decoding.

use super::dims::GeneratorDims;
use crate::error::{Error, Result};
use crate::graph::{Dag, END_TYPE, START_TYPE};
use crate::nn::linalg::{
    add_inplace, argmax, dot_relu, dot_relu4, relu_inplace, sigmoid, softmax_inplace, tanh_inplace,
};
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
    /// `i` draws from `rngs[i]` only, so results do not depend on how graphs are batched;
    /// graphs with bit-for-bit equal latents share the computation of what they drew alike.
    pub fn decode(&self, z: &[f32], mode: DecodeMode, rngs: &mut [Rng]) -> Result<Vec<Dag>> {
        Ok(self.decode_with(z, mode, rngs, false)?.0)
    }

    /// [`decode`](Self::decode) in [`DecodeMode::Sample`], with each graph's *trace*: the
    /// probabilities it drew from, in the order it drew (a row of type probabilities per drawn
    /// type, then one probability per edge decision), for a [`DrawTree`].
    pub fn decode_traced(&self, z: &[f32], rngs: &mut [Rng]) -> Result<(Vec<Dag>, Vec<Vec<f32>>)> {
        self.decode_with(z, DecodeMode::Sample, rngs, true)
    }

    fn decode_with(
        &self,
        z: &[f32],
        mode: DecodeMode,
        rngs: &mut [Rng],
        traced: bool,
    ) -> Result<(Vec<Dag>, Vec<Vec<f32>>)> {
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
        let mut traces: Vec<Vec<f32>> = if traced {
            // At most a type row per position before the last, and an edge draw per pair.
            let most = self.max_n.saturating_sub(2) * self.nvt + self.max_n * self.max_n / 2;
            (0..n).map(|_| Vec::with_capacity(most)).collect()
        } else {
            Vec::new()
        };
        let mut st = State::take(self, n);
        let result = self.decode_in(&mut st, z, n, mode, rngs, &mut traces);
        State::put_back(st);
        Ok((result, traces))
    }

    /// [`decode`](Self::decode) in a prepared state.
    ///
    /// Graphs whose latents are bit for bit equal (every set sample the same, as when each
    /// class has no more rows than a sample takes) compute the same states until their random
    /// draws set them apart. Each group of graphs that has drawn the same so far (same latent,
    /// same types, same edges) is computed once, on its lowest-numbered graph, its *lead*;
    /// every graph still draws from its own random stream, from its lead's probabilities.
    /// A graph whose draw differs from its lead's starts a group of its own with a copy of the
    /// lead's caches. The products are row by row independent, so each graph gets the bits
    /// it would get decoded alone.
    ///
    /// `traces` is empty, or holds one trace per graph to append to (see
    /// [`decode_traced`](Self::decode_traced)).
    fn decode_in(
        &self,
        st: &mut State,
        z: &[f32],
        n: usize,
        mode: DecodeMode,
        rngs: &mut [Rng],
        traces: &mut [Vec<f32>],
    ) -> Vec<Dag> {
        let hs = self.hs;
        let State {
            c,
            step,
            choose,
            edges,
            fin,
        } = st;
        c.group_equal_latents(z, self.nz);
        // Vertex 0: START, its hidden input comes from the latent.
        step.rows.clear();
        step.rows.extend((0..n).filter(|&g| c.lead[g] == g));
        let nl = step.rows.len();
        step.zl.clear();
        for &g in &step.rows {
            step.zl
                .extend_from_slice(&z[g * self.nz..(g + 1) * self.nz]);
        }
        let out = self.start_states(&step.zl, nl, &mut c.scratch);
        for g in 0..n {
            c.types[g].push(START_TYPE);
            c.preds[g].push(0);
        }
        for (r, &g) in step.rows.iter().enumerate() {
            c.h_mut(g, 0).copy_from_slice(&out[r * hs..(r + 1) * hs]);
        }
        self.finalize(c, fin, 0, &step.rows);

        for idx in 1..self.max_n {
            step.active.clear();
            step.active.extend((0..n).filter(|&g| !c.finished[g]));
            if step.active.is_empty() {
                break;
            }
            self.choose_types(
                c,
                choose,
                idx,
                &step.active,
                mode,
                rngs,
                traces,
                &mut step.new_types,
            );
            for (&g, &t) in step.active.iter().zip(&step.new_types) {
                c.types[g].push(t);
                c.preds[g].push(0);
            }
            c.regroup(
                &mut step.firsts,
                &step.active,
                &step.new_types,
                self.nvt,
                idx,
                None,
            );
            // Each lead's state from the zero-state table.
            step.lead_types.clear();
            step.lead_types.extend(
                step.active
                    .iter()
                    .zip(&step.new_types)
                    .filter(|&(&g, _)| c.lead[g] == g)
                    .map(|(_, &t)| t),
            );
            step.hc.resize(step.lead_types.len() * hs, 0.0);
            self.grud
                .step_onehot(&step.lead_types, None, &mut step.hc, &mut c.scratch);
            let mut r = 0;
            for &g in &step.active {
                if c.lead[g] == g {
                    c.h_mut(g, idx)
                        .copy_from_slice(&step.hc[r * hs..(r + 1) * hs]);
                    r += 1;
                }
            }

            step.cont.clear();
            for (i, &g) in step.active.iter().enumerate() {
                if step.new_types[i] == END_TYPE {
                    // (The END vertex's state is not computed: nothing reads it.)
                    c.preds[g][idx] = end_preds(&c.preds[g][..idx]);
                    c.finished[g] = true;
                } else {
                    step.cont.push(g);
                }
            }
            if !step.cont.is_empty() {
                self.decide_edges(c, edges, idx, &step.cont, mode, rngs, traces);
            }
            // The next position, when there is one, is END for every graph: it reads no
            // vertex's message or `add_edge` half.
            if idx + 2 < self.max_n {
                step.rows.clear();
                step.rows
                    .extend(step.cont.iter().copied().filter(|&g| c.lead[g] == g));
                self.finalize(c, fin, idx, &step.rows);
            }
        }
        (0..n)
            .map(|g| Dag {
                types: std::mem::take(&mut c.types[g]),
                preds: std::mem::take(&mut c.preds[g]),
            })
            .collect()
    }

    /// The START vertex's state for each latent row of `zl` (`[nl, nz]`): `[nl, hs]`.
    fn start_states(&self, zl: &[f32], nl: usize, scratch: &mut Vec<f32>) -> Vec<f32> {
        let mut h0 = self.fc3.forward(zl, nl);
        tanh_inplace(&mut h0);
        let mut out = vec![0.0; nl * self.hs];
        self.grud
            .step_onehot(&vec![START_TYPE; nl], Some(&h0), &mut out, scratch);
        out
    }

    /// The next vertex's type scores for each last state of `hg` (`[nl, hs]`) into `logits`
    /// (`[nl, nvt]`): probabilities in [`DecodeMode::Sample`], logits otherwise.
    fn type_scores(
        &self,
        hg: &[f32],
        nl: usize,
        mode: DecodeMode,
        hidden: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) {
        hidden.resize(nl * self.add_vertex[0].out_dim, 0.0);
        self.add_vertex[0].forward_into(hg, nl, hidden);
        relu_inplace(hidden);
        logits.resize(nl * self.nvt, 0.0);
        self.add_vertex[1].forward_into(hidden, nl, logits);
        if mode == DecodeMode::Sample {
            for row in logits.chunks_exact_mut(self.nvt) {
                softmax_inplace(row);
            }
        }
    }

    /// The type each graph of `z` (`[n, nz]`) draws for its first vertex after START when
    /// [`decode`](Self::decode) samples it with `rngs` (left as they are: the draws use
    /// copies), or `None` when no two latents are equal (then no graphs share work). The work
    /// of one decoding step per distinct latent; callers use it to split a batch where the
    /// graphs' shared work parts ways.
    pub fn first_types(&self, z: &[f32], rngs: &[Rng]) -> Option<Vec<u8>> {
        let n = z.len() / self.nz;
        let lead = first_equal_rows(z, self.nz);
        // The distinct latents in order, and each graph's row among them.
        let mut zl = Vec::new();
        let mut row = vec![0; n];
        let mut nl = 0;
        for g in 0..n {
            if lead[g] == g {
                zl.extend_from_slice(&z[g * self.nz..(g + 1) * self.nz]);
                row[g] = nl;
                nl += 1;
            } else {
                row[g] = row[lead[g]];
            }
        }
        if nl == n {
            return None;
        }
        if self.max_n <= 2 {
            return Some(vec![END_TYPE; n]);
        }
        let h = self.start_states(&zl, nl, &mut Vec::new());
        let (mut hidden, mut probs) = (Vec::new(), Vec::new());
        self.type_scores(&h, nl, DecodeMode::Sample, &mut hidden, &mut probs);
        let types = row
            .iter()
            .zip(rngs)
            .map(|(&r, rng)| {
                let p = &probs[r * self.nvt..(r + 1) * self.nvt];
                sample_categorical(p, &mut rng.clone()) as u8
            })
            .collect();
        Some(types)
    }

    /// Vertex types for position `idx` of the `active` graphs, into `out`.
    #[allow(clippy::too_many_arguments)]
    fn choose_types(
        &self,
        c: &Caches,
        b: &mut ChooseBuffers,
        idx: usize,
        active: &[usize],
        mode: DecodeMode,
        rngs: &mut [Rng],
        traces: &mut [Vec<f32>],
        out: &mut Vec<u8>,
    ) {
        out.clear();
        if idx == self.max_n - 1 {
            out.resize(active.len(), END_TYPE);
            return;
        }
        // The leads' states (each graph's last vertex is at `idx - 1`).
        b.row.resize(c.lead.len(), 0);
        b.hg.clear();
        let mut nl = 0;
        for &g in active {
            if c.lead[g] == g {
                b.hg.extend_from_slice(c.h(g, idx - 1));
                b.row[g] = nl;
                nl += 1;
            }
        }
        self.type_scores(&b.hg, nl, mode, &mut b.hidden, &mut b.logits);
        out.extend(active.iter().map(|&g| {
            let r = b.row[c.lead[g]];
            let row = &b.logits[r * self.nvt..(r + 1) * self.nvt];
            if let Some(t) = traces.get_mut(g) {
                t.extend_from_slice(row);
            }
            match mode {
                DecodeMode::Argmax => argmax(row) as u8,
                DecodeMode::Sample => sample_categorical(row, &mut rngs[g]) as u8,
            }
        }));
    }

    /// Edge decisions `vi → idx` for `vi = idx-1 .. 0`, for the graphs `cont` (ascending),
    /// whose leads' states for vertex `idx` are in the caches.
    #[allow(clippy::too_many_arguments)]
    fn decide_edges(
        &self,
        c: &mut Caches,
        b: &mut EdgeBuffers,
        idx: usize,
        cont: &[usize],
        mode: DecodeMode,
        rngs: &mut [Rng],
        traces: &mut [Vec<f32>],
    ) {
        let (hs, eh) = (self.hs, self.add_edge[0].out_dim);
        let w2 = &self.add_edge[1].weight;
        let b2 = self.add_edge[1].bias.as_ref().map_or(0.0, |b| b[0]);
        // The h_idx half of add_edge.0 of each lead (the h_vi half, with the bias, was cached
        // at finalize), by slot; recomputed only for leads whose state changed.
        // Every lead's state is still its type's zero-state row: its half comes from a table.
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
        b.eb.resize(c.nslots * eh, 0.0);
        for &g in cont {
            if c.lead[g] == g {
                let (ty, s) = (c.types[g][idx] as usize, c.slot[g]);
                b.eb[s * eh..(s + 1) * eh].copy_from_slice(&table[ty * eh..(ty + 1) * eh]);
            }
        }
        for vi in (0..idx).rev() {
            // Each lead's edge probability, by slot (four leads at a time: independent
            // chains); each graph draws from its lead's.
            b.prob.resize(c.nslots, 0.0);
            b.lead_slots.clear();
            b.lead_slots
                .extend(cont.iter().filter(|&&g| c.lead[g] == g).map(|&g| c.slot[g]));
            let eb = |s: usize| &b.eb[s * eh..(s + 1) * eh];
            let mut quads = b.lead_slots.chunks_exact(4);
            for q in &mut quads {
                let ea = |k: usize| c.slot_ea(q[k], vi);
                let d = dot_relu4(
                    [eb(q[0]), eb(q[1]), eb(q[2]), eb(q[3])],
                    [ea(0), ea(1), ea(2), ea(3)],
                    w2,
                );
                for (&s, d) in q.iter().zip(d) {
                    b.prob[s] = sigmoid(b2 + d);
                }
            }
            for &s in quads.remainder() {
                b.prob[s] = sigmoid(b2 + dot_relu(eb(s), c.slot_ea(s, vi), w2));
            }
            b.adds.clear();
            for &g in cont {
                let p = b.prob[c.slot[c.lead[g]]];
                if let Some(t) = traces.get_mut(g) {
                    t.push(p);
                }
                let add = match mode {
                    DecodeMode::Argmax => p > 0.5,
                    DecodeMode::Sample => rngs[g].next_f32() < p,
                };
                if add {
                    c.preds[g][idx] |= 1 << vi;
                }
                b.adds.push(add as u8);
            }
            c.regroup(&mut b.firsts, cont, &b.adds, 2, idx, Some((&mut b.eb, eh)));
            b.changed.clear();
            b.changed.extend(
                cont.iter()
                    .zip(&b.adds)
                    .filter(|&(&g, &a)| a == 1 && c.lead[g] == g)
                    .map(|(&g, _)| g),
            );
            if b.changed.is_empty() {
                continue;
            }
            let nch = b.changed.len();
            b.changed_types.clear();
            b.changed_types
                .extend(b.changed.iter().map(|&g| c.types[g][idx]));
            // Every row is written by the GRU step.
            b.fresh.resize(nch * hs, 0.0);
            self.refresh(
                c,
                &mut b.hsum,
                &b.changed,
                idx,
                &b.changed_types,
                &mut b.fresh,
            );
            for (k, &g) in b.changed.iter().enumerate() {
                c.h_mut(g, idx)
                    .copy_from_slice(&b.fresh[k * hs..(k + 1) * hs]);
            }
            if vi > 0 {
                b.fresh_eb.resize(nch * eh, 0.0);
                self.add_edge[0].forward_cols_into(
                    &b.fresh,
                    hs,
                    nch,
                    hs,
                    hs,
                    &mut b.fresh_eb,
                    false,
                );
                for (k, &g) in b.changed.iter().enumerate() {
                    let s = c.slot[g];
                    b.eb[s * eh..(s + 1) * eh].copy_from_slice(&b.fresh_eb[k * eh..(k + 1) * eh]);
                }
            }
        }
    }

    /// `h_idx = GRU(e_type, Σ_{u ∈ pred(idx)} m_u)` for each graph of `graphs` (with its type in
    /// `types`), written row by row into `out` (`[graphs.len(), hs]`); `hsum` is working memory.
    fn refresh(
        &self,
        c: &mut Caches,
        hsum: &mut Vec<f32>,
        graphs: &[usize],
        idx: usize,
        types: &[u8],
        out: &mut [f32],
    ) {
        let hs = self.hs;
        hsum.clear();
        hsum.resize(graphs.len() * hs, 0.0);
        for (r, &g) in graphs.iter().enumerate() {
            let preds = c.preds[g][idx];
            let row = &mut hsum[r * hs..(r + 1) * hs];
            for u in 0..idx {
                if preds >> u & 1 == 1 {
                    add_inplace(row, c.msg(g, u));
                }
            }
        }
        self.grud
            .step_onehot(types, Some(hsum.as_slice()), out, &mut c.scratch);
    }

    /// Caches the message and the `add_edge` half of vertex `v` of each graph in `rows`.
    fn finalize(&self, c: &mut Caches, b: &mut FinalizeBuffers, v: usize, rows: &[usize]) {
        if rows.is_empty() {
            return;
        }
        let (hs, eh) = (self.hs, self.add_edge[0].out_dim);
        let nr = rows.len();
        b.hb.resize(nr * hs, 0.0);
        for (r, &g) in rows.iter().enumerate() {
            b.hb[r * hs..(r + 1) * hs].copy_from_slice(c.h(g, v));
        }
        // Every row of both is written by the products.
        b.m.resize(nr * hs, 0.0);
        self.message
            .messages(&b.hb, nr, v, &mut b.m, &mut c.scratch);
        b.ea.resize(nr * eh, 0.0);
        self.add_edge[0].forward_cols_into(&b.hb, hs, nr, 0, hs, &mut b.ea, true);
        for (r, &g) in rows.iter().enumerate() {
            c.msg_mut(g, v).copy_from_slice(&b.m[r * hs..(r + 1) * hs]);
            c.ea_mut(g, v).copy_from_slice(&b.ea[r * eh..(r + 1) * eh]);
        }
    }
}

/// The predecessors of an END vertex added after the vertices whose predecessor masks are
/// `preds`: every vertex without a successor (its loose ends).
fn end_preds(preds: &[u64]) -> u64 {
    let has_succ = preds.iter().fold(0, |a, &p| a | p);
    !has_succ & ((1u64 << preds.len()) - 1)
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

/// What graphs decoded from one latent drew, as a tree of their decisions: each node is a
/// draw (a vertex type, or an edge `vi → idx`) reached by the draws before it, and holds the
/// probabilities that draw is made from. Those depend only on the latent and the draws before
/// (the decoder's states are functions of them), so a later graph from the same latent whose
/// draws stay on known nodes is decoded by drawing alone ([`DrawTree::replay`]), with the
/// graph and random stream that decoding it would give; only graphs that leave the tree need
/// the decoder ([`GraphDecoder::decode_traced`], then [`DrawTree::insert`]).
#[derive(Debug, Default)]
pub struct DrawTree {
    /// The latent's bits (empty until [`bind`](Self::bind)).
    latent: Vec<u32>,
    /// The nodes, each a record named by its offset: a type draw is `[at, child per type]`
    /// with its probabilities at `probs[at..at + nvt]`; an edge draw is `[p, child if no
    /// edge, child if an edge]` with its probability's bits `p`. [`NO_NODE`] for an outcome
    /// not drawn yet. Offset 0 is the root (the type of vertex 1).
    nodes: Vec<u32>,
    probs: Vec<f32>,
}

const NO_NODE: u32 = u32::MAX;

impl DrawTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the tree the one of latent `z` (`[nz]`): emptied when it held another latent's.
    pub fn bind(&mut self, z: &[f32]) {
        if !self
            .latent
            .iter()
            .copied()
            .eq(z.iter().map(|x| x.to_bits()))
        {
            *self = DrawTree {
                latent: z.iter().map(|x| x.to_bits()).collect(),
                ..Default::default()
            };
        }
    }

    /// Whether no graph's draws are in the tree yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The graph `dec` decodes from the bound latent with `rng`, when every draw it makes is
    /// on a known node: then `rng` is left as decoding would leave it. `None` (and `rng`
    /// untouched) when a draw leaves the tree.
    pub fn replay(&self, dec: &GraphDecoder, rng: &mut Rng) -> Option<Dag> {
        let (nvt, max_n) = (dec.nvt, dec.max_n);
        let mut r = rng.clone();
        let mut node = if self.nodes.is_empty() { NO_NODE } else { 0 };
        let mut types = Vec::with_capacity(max_n);
        let mut preds = Vec::with_capacity(max_n);
        types.push(START_TYPE);
        preds.push(0u64);
        for idx in 1..max_n {
            let t = if idx == max_n - 1 {
                END_TYPE
            } else {
                let rec = self.record(node, nvt)?;
                let at = rec[0] as usize;
                let t = sample_categorical(&self.probs[at..at + nvt], &mut r);
                node = rec[1 + t];
                t as u8
            };
            types.push(t);
            preds.push(0);
            if t == END_TYPE {
                preds[idx] = end_preds(&preds[..idx]);
                break;
            }
            for vi in (0..idx).rev() {
                let rec = self.record(node, 2)?;
                let add = r.next_f32() < f32::from_bits(rec[0]);
                if add {
                    preds[idx] |= 1 << vi;
                }
                node = rec[1 + usize::from(add)];
            }
        }
        *rng = r;
        Some(Dag { types, preds })
    }

    /// Adds the draws of `dag`, decoded by `dec` from the bound latent, with its `trace` (from
    /// [`GraphDecoder::decode_traced`]).
    pub fn insert(&mut self, dec: &GraphDecoder, dag: &Dag, trace: &[f32]) {
        let (nvt, max_n) = (dec.nvt, dec.max_n);
        let mut at = 0;
        // The current node, and where its offset is kept (`None`: the root).
        let mut node = if self.nodes.is_empty() { NO_NODE } else { 0 };
        let mut kept: Option<usize> = None;
        for idx in 1..max_n.min(dag.types.len()) {
            let ty = dag.types[idx] as usize;
            if idx < max_n - 1 {
                let q = &trace[at..at + nvt];
                at += nvt;
                if node == NO_NODE {
                    let pa = self.probs.len() as u32;
                    self.probs.extend_from_slice(q);
                    node = self.add(kept, pa, nvt);
                }
                debug_assert!(
                    {
                        let pa = self.nodes[node as usize] as usize;
                        self.probs[pa..pa + nvt]
                            .iter()
                            .zip(q)
                            .all(|(a, b)| a.to_bits() == b.to_bits())
                    },
                    "a known draw has the same probabilities"
                );
                let c = node as usize + 1 + ty;
                kept = Some(c);
                node = self.nodes[c];
            }
            if ty == END_TYPE as usize {
                break;
            }
            for vi in (0..idx).rev() {
                let p = trace[at];
                at += 1;
                if node == NO_NODE {
                    node = self.add(kept, p.to_bits(), 2);
                }
                debug_assert_eq!(
                    self.nodes[node as usize],
                    p.to_bits(),
                    "a known draw has the same probability"
                );
                let c = node as usize + 1 + usize::from(dag.preds[idx] >> vi & 1 == 1);
                kept = Some(c);
                node = self.nodes[c];
            }
        }
        debug_assert_eq!(at, trace.len(), "a trace holds every draw of its graph");
    }

    /// Node `node`'s record with `k` outcomes; `None` for [`NO_NODE`].
    fn record(&self, node: u32, k: usize) -> Option<&[u32]> {
        if node == NO_NODE {
            return None;
        }
        self.nodes.get(node as usize..node as usize + 1 + k)
    }

    /// A new node `[head, NO_NODE x k]`, its offset written at `nodes[kept]` (none for the
    /// root): the offset.
    fn add(&mut self, kept: Option<usize>, head: u32, k: usize) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(head);
        self.nodes.resize(self.nodes.len() + k, NO_NODE);
        if let Some(c) = kept {
            self.nodes[c] = id;
        }
        id
    }
}

/// Per-batch decoding state: the graphs and per-vertex caches, and the working buffers of each
/// kind of step (all kept for the thread's next batch).
#[derive(Default)]
struct State {
    c: Caches,
    step: StepBuffers,
    choose: ChooseBuffers,
    edges: EdgeBuffers,
    fin: FinalizeBuffers,
}

/// Types and predecessor masks per graph, and per-vertex caches (by lead: see `slot`).
#[derive(Default)]
struct Caches {
    types: Vec<Vec<u8>>,
    preds: Vec<Vec<u64>>,
    finished: Vec<bool>,
    /// Each graph's lead: the graph whose caches it reads (see `decode_in`)...
    lead: Vec<usize>,
    /// ... and each lead's slot in the per-vertex caches (`[slot, vertex, width]`).
    slot: Vec<usize>,
    nslots: usize,
    h: Vec<f32>,
    msg: Vec<f32>,
    ea: Vec<f32>,
    scratch: Vec<f32>,
    hs: usize,
    eh: usize,
    max_n: usize,
}

/// One position's graphs: `rows` (leads to finalize, or of vertex 0), `active`, their
/// `new_types`, the leads' types and states (`lead_types`, `hc`), `cont`, the `active` graphs
/// that are not END, the latents of vertex 0's leads `zl`, and regrouping's working memory.
#[derive(Default)]
struct StepBuffers {
    rows: Vec<usize>,
    active: Vec<usize>,
    new_types: Vec<u8>,
    lead_types: Vec<u8>,
    cont: Vec<usize>,
    hc: Vec<f32>,
    zl: Vec<f32>,
    firsts: Firsts,
}

/// Regrouping's working memory: the first graph of each (old lead, decision) pair, by
/// `old * decisions + decision` (every entry unset between calls), and the entries set.
#[derive(Default)]
struct Firsts {
    table: Vec<usize>,
    set: Vec<usize>,
}

/// [`GraphDecoder::choose_types`]'s gathered lead states, their `add_vertex` layers, and each
/// lead's row in them.
#[derive(Default)]
struct ChooseBuffers {
    hg: Vec<f32>,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    row: Vec<usize>,
}

/// [`GraphDecoder::decide_edges`]'s `add_edge` halves and logits of the leads (by slot), the
/// draws, the leads an edge changed, and their refreshed states.
#[derive(Default)]
struct EdgeBuffers {
    eb: Vec<f32>,
    prob: Vec<f32>,
    lead_slots: Vec<usize>,
    adds: Vec<u8>,
    firsts: Firsts,
    changed: Vec<usize>,
    changed_types: Vec<u8>,
    fresh: Vec<f32>,
    fresh_eb: Vec<f32>,
    hsum: Vec<f32>,
}

/// [`GraphDecoder::finalize`]'s gathered states, messages and `add_edge` halves.
#[derive(Default)]
struct FinalizeBuffers {
    hb: Vec<f32>,
    m: Vec<f32>,
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
        let c = &mut st.c;
        c.types.clear();
        c.types.resize_with(n, || Vec::with_capacity(mn));
        c.preds.clear();
        c.preds.resize_with(n, || Vec::with_capacity(mn));
        c.finished.clear();
        c.finished.resize(n, false);
        for v in [&mut c.h, &mut c.msg, &mut c.ea] {
            v.clear();
        }
        c.slot.clear();
        c.slot.resize(n, usize::MAX);
        c.nslots = 0;
        (c.hs, c.eh, c.max_n) = (hs, eh, mn);
        st
    }

    /// Keeps `self` for the thread's next batch, unless its caches are large.
    fn put_back(self) {
        if self.c.h.len() + self.c.msg.len() + self.c.ea.len() <= SPARE_VALUES {
            SPARE.with(|s| s.set(Some(self)));
        }
    }
}

/// For each row of `z` (`[n, width]`), the first row with the same bits (a float's `==` would
/// also group 0.0 with -0.0): graphs decoded from such rows compute the same states while
/// they draw alike.
fn first_equal_rows(z: &[f32], width: usize) -> Vec<usize> {
    let bits = |row: &[f32]| -> Vec<u32> { row.iter().map(|x| x.to_bits()).collect() };
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    let rows: Vec<&[f32]> = z.chunks_exact(width).collect();
    let mut firsts: std::collections::HashMap<Vec<u32>, usize> = std::collections::HashMap::new();
    let mut out: Vec<usize> = Vec::with_capacity(rows.len());
    for (g, row) in rows.iter().enumerate() {
        // Equal rows usually come in runs (often one run: every set sample the same): a row
        // equal to the one before has its lead, without hashing.
        let lead = match out.last() {
            Some(&l) if same(rows[l], row) => l,
            _ => *firsts.entry(bits(row)).or_insert(g),
        };
        out.push(lead);
    }
    out
}

impl Caches {
    /// Sets each graph's lead to the first graph with the same latent ([`first_equal_rows`]).
    fn group_equal_latents(&mut self, z: &[f32], nz: usize) {
        self.lead = first_equal_rows(z, nz);
        for g in 0..self.lead.len() {
            if self.lead[g] == g {
                self.new_slot(g);
            }
        }
    }

    /// Gives lead `g` the next slot of the per-vertex caches.
    fn new_slot(&mut self, g: usize) {
        self.slot[g] = self.nslots;
        self.nslots += 1;
        let (mn, hs, eh, n) = (self.max_n, self.hs, self.eh, self.nslots);
        self.h.resize(n * mn * hs, 0.0);
        self.msg.resize(n * mn * hs, 0.0);
        self.ea.resize(n * mn * eh, 0.0);
    }

    /// After the graphs `graphs` (ascending, whole groups) each took decision
    /// `decisions[k] < nd` at position `idx`: the graphs of a group that decided as its lead
    /// did stay with it; the others form one group per decision, led by its lowest-numbered
    /// graph, which gets a copy of the old lead's caches of the vertices before `idx` (and of
    /// its state at `idx` and its row of `current`, `(rows by slot, width)`, when given).
    fn regroup(
        &mut self,
        firsts: &mut Firsts,
        graphs: &[usize],
        decisions: &[u8],
        nd: usize,
        idx: usize,
        mut current: Option<(&mut Vec<f32>, usize)>,
    ) {
        const NONE: usize = usize::MAX;
        // Unset entries stay unset: only the entries this call sets are cleared after it.
        let need = self.lead.len() * nd;
        if firsts.table.len() < need {
            firsts.table.resize(need, NONE);
        }
        let (mn, hs, eh) = (self.max_n, self.hs, self.eh);
        let h_upto = idx + usize::from(current.is_some());
        for (&g, &d) in graphs.iter().zip(decisions) {
            let old = self.lead[g];
            let key = old * nd + d as usize;
            let first = &mut firsts.table[key];
            if *first == NONE {
                *first = g;
                firsts.set.push(key);
            }
            self.lead[g] = *first;
            if *first != g || g == old {
                continue;
            }
            // A new group: its lead starts from the old lead's caches.
            self.new_slot(g);
            let (from, to) = (self.slot[old], self.slot[g]);
            let copy = |v: &mut Vec<f32>, w: usize, upto: usize| {
                v.copy_within(from * mn * w..(from * mn + upto) * w, to * mn * w);
            };
            copy(&mut self.h, hs, h_upto);
            copy(&mut self.msg, hs, idx);
            copy(&mut self.ea, eh, idx);
            if let Some((rows, w)) = current.as_mut() {
                let w = *w;
                rows.resize(self.nslots * w, 0.0);
                rows.copy_within(from * w..(from + 1) * w, to * w);
            }
        }
        for key in firsts.set.drain(..) {
            firsts.table[key] = NONE;
        }
    }

    /// Where lead `g`'s values of vertex `v` are in a cache of width `w`.
    fn at(&self, g: usize, v: usize, w: usize) -> std::ops::Range<usize> {
        self.slot_at(self.slot[g], v, w)
    }
    /// Where slot `s`'s values of vertex `v` are in a cache of width `w`.
    fn slot_at(&self, s: usize, v: usize, w: usize) -> std::ops::Range<usize> {
        let o = (s * self.max_n + v) * w;
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
    /// The `add_edge` half of vertex `v` in slot `s`.
    fn slot_ea(&self, s: usize, v: usize) -> &[f32] {
        &self.ea[self.slot_at(s, v, self.eh)]
    }
    fn ea_mut(&mut self, g: usize, v: usize) -> &mut [f32] {
        let r = self.at(g, v, self.eh);
        &mut self.ea[r]
    }
}

#[cfg(test)]
mod tests {
    use super::first_equal_rows;

    #[test]
    fn equal_rows_are_grouped_by_their_bits() {
        let (a, b) = ([1.0, 2.0], [1.0, 3.0]);
        // rows: a a b a b, then 0.0 and -0.0 (equal as floats, not as bits), then 0.0 again
        let z: Vec<f32> = [a, a, b, a, b, [0.0, 0.0], [-0.0, 0.0], [0.0, 0.0]].concat();
        assert_eq!(first_equal_rows(&z, 2), vec![0, 0, 2, 0, 2, 5, 6, 5]);
    }
}
