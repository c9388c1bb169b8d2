//! The NAS-Bench-201 cell network for training (NAS-Bench-201's `TinyNetwork` with an inferred
//! cell): stem 3×3 conv + BN; three stages of `N` cells at `C`, `2C`, `4C` channels separated by
//! residual reduction blocks (ReLU-Conv3×3/2-BN → ReLU-Conv3×3-BN, shortcut AvgPool2×2 →
//! Conv1×1); BN + ReLU; global average pooling; linear classifier.
//!
//! A cell has nodes 0..3; node `j` is the sum over `i < j` of `op(i→j)(node i)`, with
//! `none` (no term), `skip_connect` (identity), `nor_conv_k×k` (ReLU-Conv-BN) and `avg_pool_3x3`
//! (stride 1, padding not counted). The cell's output is node 3 (zero when no path reaches it).
//!
//! The network is compiled into a list of operations over activation slots; the forward pass
//! keeps every slot, the backward pass walks the list in reverse.

use super::ops::{self, BnCache, Conv, Shape};
use crate::rng::Rng;
use crate::space::nb201::{Nb201Arch, CELL_EDGES};

/// Size of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Channels of the first stage (a multiple of 8).
    pub channels: usize,
    /// Cells per stage.
    pub cells: usize,
    pub classes: usize,
}

/// Batch-norm epsilon and momentum (PyTorch defaults).
pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

#[derive(Clone, Debug)]
enum Op {
    Conv {
        x: usize,
        y: usize,
        w: usize,
        cv: Conv,
    },
    Bn {
        x: usize,
        y: usize,
        p: usize,
        stat: usize,
        c: usize,
    },
    Relu {
        x: usize,
        y: usize,
    },
    Pool3 {
        x: usize,
        y: usize,
    },
    Pool2 {
        x: usize,
        y: usize,
    },
    Add {
        xs: Vec<usize>,
        y: usize,
    },
    Zero {
        like: usize,
        y: usize,
    },
    Gap {
        x: usize,
        y: usize,
    },
    Linear {
        x: usize,
        y: usize,
        p: usize,
        i: usize,
        o: usize,
    },
}

impl Op {
    fn output(&self) -> usize {
        match self {
            Op::Conv { y, .. }
            | Op::Bn { y, .. }
            | Op::Relu { y, .. }
            | Op::Pool3 { y, .. }
            | Op::Pool2 { y, .. }
            | Op::Add { y, .. }
            | Op::Zero { y, .. }
            | Op::Gap { y, .. }
            | Op::Linear { y, .. } => *y,
        }
    }
}

/// A compiled network with its parameters (one flat vector) and batch-norm running statistics.
#[derive(Clone, Debug)]
pub struct CellNet {
    ops: Vec<Op>,
    slots: usize,
    out: usize,
    pub params: Vec<f32>,
    /// Running mean and variance of each batch norm.
    pub running: Vec<(Vec<f32>, Vec<f32>)>,
    pub config: NetConfig,
    /// Where each ReLU output lives (for NASWOT's activation codes).
    relu_slots: Vec<usize>,
    /// Parameter segments in creation order: offset and the layer they belong to.
    segments: Vec<(usize, Segment)>,
}

/// What a stretch of the parameter vector is.
#[derive(Clone, Copy, Debug)]
enum Segment {
    /// Convolution weights `[k·k][ci][co]`.
    Conv(Conv),
    /// Batch-norm γ then β, `c` each.
    Bn(usize),
    /// Linear weights `[o, i]` then bias `[o]`.
    Linear(usize, usize),
}

/// Tap tables of one convolution, for the image size `(h, w)` they were made for.
type CachedTables = (usize, usize, (Vec<i32>, Vec<i32>));

/// Buffers of a forward and backward pass, reused from one batch to the next: activations,
/// their shapes, batch-norm caches, gradients, and the convolutions' tap tables.
#[derive(Default)]
pub struct Tape {
    acts: Vec<Vec<f32>>,
    shapes: Vec<Shape>,
    bn: Vec<BnCache>,
    grads: Vec<Vec<f32>>,
    live: Vec<bool>,
    tables: Vec<Option<CachedTables>>,
    /// Parameter gradients of the last backward pass (layout of `CellNet::params`).
    pub param_grads: Vec<f32>,
    train: bool,
}

impl Tape {
    pub fn new() -> Self {
        Tape::default()
    }
}

/// Images `[a, b)` of shard `i` of `n` images in `shards` shards.
fn shard_range(n: usize, shards: usize, i: usize) -> (usize, usize) {
    (i * n / shards, (i + 1) * n / shards)
}

/// Sums vectors across the shards of one pass: each shard posts its part, waits for the others
/// and adds all parts in shard order (so every shard gets the same, order-fixed result).
struct Collective {
    shards: usize,
    parts: Vec<std::sync::Mutex<Vec<f32>>>,
    arrived: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicUsize,
}

impl Collective {
    fn new(shards: usize) -> Self {
        Collective {
            shards,
            parts: (0..shards)
                .map(|_| std::sync::Mutex::new(Vec::new()))
                .collect(),
            arrived: Default::default(),
            generation: Default::default(),
        }
    }

    /// A reusable barrier: spins briefly, then yields.
    fn barrier(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
        let gen = self.generation.load(Acquire);
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.shards {
            self.arrived.store(0, Release);
            self.generation.fetch_add(1, Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Acquire) == gen {
                spins += 1;
                if spins < 2000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    fn all_sum(&self, shard: usize, v: &mut [f32]) {
        if self.shards == 1 {
            return;
        }
        *self.parts[shard].lock().expect("no panics while holding") = v.to_vec();
        self.barrier();
        v.iter_mut().for_each(|x| *x = 0.0);
        for p in &self.parts {
            ops::add_assign(v, &p.lock().expect("no panics while holding"));
        }
        self.barrier();
    }
}

struct Builder {
    ops: Vec<Op>,
    slots: usize,
    params: Vec<f32>,
    running: Vec<(Vec<f32>, Vec<f32>)>,
    relu_slots: Vec<usize>,
    segments: Vec<(usize, Segment)>,
    rng: Rng,
}

impl Builder {
    fn slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }
    fn uniform(&mut self, n: usize, bound: f32) -> usize {
        let at = self.params.len();
        for _ in 0..n {
            let u = self.rng.next_f32() * 2.0 - 1.0;
            self.params.push(u * bound);
        }
        at
    }
    fn conv(&mut self, x: usize, ci: usize, co: usize, k: usize, stride: usize) -> usize {
        let cv = Conv {
            k,
            stride,
            pad: k / 2,
            ci,
            co,
        };
        let w = self.uniform(cv.weight_len(), 1.0 / ((ci * k * k) as f32).sqrt());
        self.segments.push((w, Segment::Conv(cv)));
        let y = self.slot();
        self.ops.push(Op::Conv { x, y, w, cv });
        y
    }
    fn bn(&mut self, x: usize, c: usize) -> usize {
        let p = self.params.len();
        self.segments.push((p, Segment::Bn(c)));
        self.params.extend(std::iter::repeat_n(1.0, c));
        self.params.extend(std::iter::repeat_n(0.0, c));
        self.running.push((vec![0.0; c], vec![1.0; c]));
        let y = self.slot();
        self.ops.push(Op::Bn {
            x,
            y,
            p,
            stat: self.running.len() - 1,
            c,
        });
        y
    }
    fn relu(&mut self, x: usize) -> usize {
        let y = self.slot();
        self.ops.push(Op::Relu { x, y });
        self.relu_slots.push(y);
        y
    }
    fn relu_conv_bn(&mut self, x: usize, ci: usize, co: usize, k: usize, stride: usize) -> usize {
        let r = self.relu(x);
        let c = self.conv(r, ci, co, k, stride);
        self.bn(c, co)
    }
    fn add(&mut self, xs: Vec<usize>) -> usize {
        let y = self.slot();
        self.ops.push(Op::Add { xs, y });
        y
    }
}

impl CellNet {
    /// The network for `arch`, initialised as PyTorch does by default (convolutions and the
    /// classifier `U(±1/√fan_in)`, BN `γ = 1, β = 0`), from `seed`.
    pub fn new(arch: &Nb201Arch, config: NetConfig, seed: u64) -> Self {
        let c = config.channels;
        assert!(
            c.is_multiple_of(8) && c > 0,
            "channels must be a positive multiple of 8"
        );
        let mut b = Builder {
            ops: Vec::new(),
            slots: 1,
            params: Vec::new(),
            running: Vec::new(),
            relu_slots: Vec::new(),
            segments: Vec::new(),
            rng: Rng::new(seed, 0xce11),
        };
        let stem = b.conv(0, 3, c, 3, 1);
        let mut s = b.bn(stem, c);
        let mut ch = c;
        for stage in 0..3 {
            if stage > 0 {
                let out = ch * 2;
                let a = b.relu_conv_bn(s, ch, out, 3, 2);
                let a = b.relu_conv_bn(a, out, out, 3, 1);
                let p = b.slot();
                b.ops.push(Op::Pool2 { x: s, y: p });
                let r = b.conv(p, ch, out, 1, 1);
                s = b.add(vec![a, r]);
                ch = out;
            }
            for _ in 0..config.cells {
                s = Self::cell(&mut b, arch, s, ch);
            }
        }
        let s = b.bn(s, ch);
        let s = b.relu(s);
        let g = b.slot();
        b.ops.push(Op::Gap { x: s, y: g });
        let p = b.uniform(ch * config.classes, 1.0 / (ch as f32).sqrt());
        b.segments.push((p, Segment::Linear(ch, config.classes)));
        b.uniform(config.classes, 1.0 / (ch as f32).sqrt());
        let out = b.slot();
        b.ops.push(Op::Linear {
            x: g,
            y: out,
            p,
            i: ch,
            o: config.classes,
        });
        CellNet {
            ops: b.ops,
            slots: b.slots,
            out,
            params: b.params,
            running: b.running,
            config,
            relu_slots: b.relu_slots,
            segments: b.segments,
        }
    }

    /// The parameters as candle-layout tensors in creation order: convolutions
    /// `[co, ci, k, k]`, BN γ and β `[c]`, linear `[o, i]` and `[o]`.
    pub fn candle_layout(&self) -> Vec<(Vec<usize>, Vec<f32>)> {
        self.to_candle(&self.params)
    }

    /// A vector in the parameter layout (e.g. gradients), converted as [`candle_layout`](Self::candle_layout).
    pub fn to_candle(&self, v: &[f32]) -> Vec<(Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for &(at, seg) in &self.segments {
            match seg {
                Segment::Conv(cv) => {
                    let (k, ci, co) = (cv.k, cv.ci, cv.co);
                    let mut t = vec![0.0f32; cv.weight_len()];
                    for tp in 0..k * k {
                        for c in 0..ci {
                            for o in 0..co {
                                t[(o * ci + c) * k * k + tp] = v[at + (tp * ci + c) * co + o];
                            }
                        }
                    }
                    out.push((vec![co, ci, k, k], t));
                }
                Segment::Bn(c) => {
                    out.push((vec![c], v[at..at + c].to_vec()));
                    out.push((vec![c], v[at + c..at + 2 * c].to_vec()));
                }
                Segment::Linear(i, o) => {
                    out.push((vec![o, i], v[at..at + i * o].to_vec()));
                    out.push((vec![o], v[at + i * o..at + i * o + o].to_vec()));
                }
            }
        }
        out
    }

    fn cell(b: &mut Builder, arch: &Nb201Arch, input: usize, c: usize) -> usize {
        let mut nodes = vec![input];
        // a shared ReLU of each node, made when a convolution first needs it
        let mut relus: Vec<Option<usize>> = vec![None];
        for j in 1..4 {
            let mut terms = Vec::new();
            for (e, &(from, to)) in CELL_EDGES.iter().enumerate() {
                if to != j {
                    continue;
                }
                let x = nodes[from];
                match arch.ops[e] {
                    0 => {}
                    1 => terms.push(x),
                    op @ (2 | 3) => {
                        let r = *relus[from].get_or_insert_with(|| b.relu(x));
                        let k = if op == 2 { 1 } else { 3 };
                        let cv = b.conv(r, c, c, k, 1);
                        terms.push(b.bn(cv, c));
                    }
                    _ => {
                        let y = b.slot();
                        b.ops.push(Op::Pool3 { x, y });
                        terms.push(y);
                    }
                }
            }
            let node = if terms.is_empty() {
                let y = b.slot();
                b.ops.push(Op::Zero { like: input, y });
                y
            } else if terms.len() == 1 {
                terms[0]
            } else {
                b.add(terms)
            };
            nodes.push(node);
            relus.push(None);
        }
        nodes[3]
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Forward pass over images `x: [n, h, w, 3]`, split into `tapes.len()` shards that run on
    /// as many threads (batch norm combines their statistics). `train` uses batch statistics
    /// (and updates the running ones); otherwise the running statistics. Returns the logits
    /// `[n, classes]`; the tapes keep what [`backward`](Self::backward) needs.
    pub fn forward(
        &mut self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        train: bool,
        tapes: &mut [Tape],
    ) -> Vec<f32> {
        assert!(!tapes.is_empty() && n > 0);
        let shards = tapes.len().min(n);
        let per = h * w * 3;
        let coll = Collective::new(shards);
        let this = &*self;
        let total = n;
        std::thread::scope(|sc| {
            let mut handles = Vec::new();
            let (first, rest) = tapes[..shards].split_at_mut(1);
            for (i, tape) in rest.iter_mut().enumerate() {
                let (a, b) = shard_range(n, shards, i + 1);
                let (coll, xs) = (&coll, &x[a * per..b * per]);
                handles.push(sc.spawn(move || {
                    this.forward_shard(xs, b - a, total, h, w, train, tape, coll, i + 1)
                }));
            }
            let (a, b) = shard_range(n, shards, 0);
            this.forward_shard(
                &x[a * per..b * per],
                b - a,
                total,
                h,
                w,
                train,
                &mut first[0],
                &coll,
                0,
            );
            for hd in handles {
                hd.join().expect("a training thread panicked");
            }
        });
        if train {
            // Every shard saw the whole batch's statistics; update the running ones once.
            let m = (n * h * w) as f32;
            for op in &self.ops {
                if let Op::Bn { y, stat, c, .. } = op {
                    let cache = &tapes[0].bn[*y];
                    let (rm, rv) = &mut self.running[*stat];
                    for j in 0..*c {
                        rm[j] = (1.0 - BN_MOMENTUM) * rm[j] + BN_MOMENTUM * cache.mean[j];
                        let unbiased = if m > 1.0 {
                            cache.var[j] * m / (m - 1.0)
                        } else {
                            cache.var[j]
                        };
                        rv[j] = (1.0 - BN_MOMENTUM) * rv[j] + BN_MOMENTUM * unbiased;
                    }
                }
            }
        }
        tapes[..shards]
            .iter()
            .flat_map(|t| t.acts[self.out].iter().copied())
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_shard(
        &self,
        x: &[f32],
        n: usize,
        total: usize,
        h: usize,
        w: usize,
        train: bool,
        tape: &mut Tape,
        coll: &Collective,
        shard: usize,
    ) {
        let slots = self.slots;
        tape.acts.resize_with(slots, Vec::new);
        tape.shapes.resize(slots, Shape { n, h, w, c: 0 });
        tape.bn.resize_with(slots, BnCache::default);
        tape.tables.resize_with(self.ops.len(), || None);
        tape.train = train;
        tape.acts[0].clear();
        tape.acts[0].extend_from_slice(x);
        tape.shapes[0] = Shape { n, h, w, c: 3 };
        for (k, op) in self.ops.iter().enumerate() {
            let y = op.output();
            let mut out = std::mem::take(&mut tape.acts[y]);
            let acts = &tape.acts;
            let shape = match op {
                Op::Conv { x, w, cv, .. } => {
                    let s = tape.shapes[*x];
                    let fresh =
                        !matches!(&tape.tables[k], Some((th, tw, _)) if *th == s.h && *tw == s.w);
                    if fresh {
                        tape.tables[k] = Some((s.h, s.w, ops::tap_tables(s.h, s.w, cv)));
                    }
                    let tables = &tape.tables[k].as_ref().expect("tables made above").2;
                    ops::conv_forward(
                        &acts[*x],
                        s,
                        &self.params[*w..*w + cv.weight_len()],
                        *cv,
                        tables,
                        &mut out,
                    );
                    cv.out_shape(s)
                }
                Op::Bn { x, p, stat, c, .. } => {
                    let (gamma, beta) =
                        (&self.params[*p..*p + c], &self.params[*p + c..*p + 2 * c]);
                    let s = tape.shapes[*x];
                    if train {
                        let mut mo = ops::bn_moments(&acts[*x], *c);
                        coll.all_sum(shard, &mut mo);
                        let m = total * s.h * s.w;
                        ops::bn_apply_train(
                            &acts[*x],
                            *c,
                            &mo,
                            m,
                            gamma,
                            beta,
                            BN_EPS,
                            &mut out,
                            &mut tape.bn[y],
                        );
                    } else {
                        let (rm, rv) = &self.running[*stat];
                        ops::bn_forward_eval(&acts[*x], *c, gamma, beta, rm, rv, BN_EPS, &mut out);
                    }
                    s
                }
                Op::Relu { x, .. } => {
                    let len = acts[*x].len();
                    ops::relu(&acts[*x], ops::reuse(&mut out, len));
                    tape.shapes[*x]
                }
                Op::Pool3 { x, .. } => {
                    ops::avg_pool3(&acts[*x], tape.shapes[*x], &mut out);
                    tape.shapes[*x]
                }
                Op::Pool2 { x, .. } => {
                    let s = tape.shapes[*x];
                    ops::avg_pool2(&acts[*x], s, &mut out);
                    Shape {
                        h: s.h / 2,
                        w: s.w / 2,
                        ..s
                    }
                }
                Op::Add { xs, .. } => {
                    out.clear();
                    out.extend_from_slice(&acts[xs[0]]);
                    for &i in &xs[1..] {
                        ops::add_assign(&mut out, &acts[i]);
                    }
                    tape.shapes[xs[0]]
                }
                Op::Zero { like, .. } => {
                    let len = acts[*like].len();
                    ops::reuse(&mut out, len).fill(0.0);
                    tape.shapes[*like]
                }
                Op::Gap { x, .. } => {
                    let s = tape.shapes[*x];
                    ops::gap(&acts[*x], s, &mut out);
                    Shape {
                        n: s.n,
                        h: 1,
                        w: 1,
                        c: s.c,
                    }
                }
                Op::Linear { x, p, i, o, .. } => {
                    let (wt, bias) = (
                        &self.params[*p..*p + i * o],
                        &self.params[*p + i * o..*p + i * o + o],
                    );
                    let dst = ops::reuse(&mut out, n * o);
                    for r in dst.chunks_exact_mut(*o) {
                        r.copy_from_slice(bias);
                    }
                    crate::nn::linalg::matmul_wt_blocked(
                        dst, &acts[*x], *i, wt, *i, n, *o, *i, true,
                    );
                    Shape {
                        n,
                        h: 1,
                        w: 1,
                        c: *o,
                    }
                }
            };
            tape.acts[y] = out;
            tape.shapes[y] = shape;
        }
    }

    /// Gradients of the parameters (layout of `params`) from the gradient of the logits
    /// `[n, classes]`, after a training-mode [`forward`](Self::forward) with the same tapes.
    pub fn backward(&self, tapes: &mut [Tape], dlogits: &[f32]) -> Vec<f32> {
        let k = self.config.classes;
        let n = dlogits.len() / k;
        let shards = tapes.len().min(n);
        // Transposed weights of the convolutions whose input gradient is needed.
        let transposed: Vec<Option<Vec<f32>>> = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Conv { x, w, cv, .. } if *x != 0 => Some(ops::transpose_taps(
                    &self.params[*w..*w + cv.weight_len()],
                    *cv,
                )),
                _ => None,
            })
            .collect();
        let coll = Collective::new(shards);
        let this = self;
        let tr = &transposed;
        std::thread::scope(|sc| {
            let mut handles = Vec::new();
            let (first, rest) = tapes[..shards].split_at_mut(1);
            for (i, tape) in rest.iter_mut().enumerate() {
                let (a, b) = shard_range(n, shards, i + 1);
                let (coll, d) = (&coll, &dlogits[a * k..b * k]);
                handles.push(sc.spawn(move || this.backward_shard(tape, d, n, tr, coll, i + 1)));
            }
            let (a, b) = shard_range(n, shards, 0);
            this.backward_shard(&mut first[0], &dlogits[a * k..b * k], n, tr, &coll, 0);
            for hd in handles {
                hd.join().expect("a training thread panicked");
            }
        });
        let mut grads = std::mem::take(&mut tapes[0].param_grads);
        for t in &tapes[1..shards] {
            ops::add_assign(&mut grads, &t.param_grads);
        }
        tapes[0].param_grads = grads.clone();
        grads
    }

    fn backward_shard(
        &self,
        tape: &mut Tape,
        dlogits: &[f32],
        total: usize,
        transposed: &[Option<Vec<f32>>],
        coll: &Collective,
        shard: usize,
    ) {
        assert!(tape.train, "backward needs a training-mode forward pass");
        tape.param_grads.clear();
        tape.param_grads.resize(self.params.len(), 0.0);
        tape.grads.resize_with(self.slots, Vec::new);
        tape.live.clear();
        tape.live.resize(self.slots, false);
        {
            let g = ops::reuse(&mut tape.grads[self.out], dlogits.len());
            g.copy_from_slice(dlogits);
            tape.live[self.out] = true;
        }
        // Makes the gradient buffer of slot `i` live (zeroed on first use in this pass).
        fn open(grads: &mut [Vec<f32>], live: &mut [bool], i: usize, len: usize) {
            if !live[i] {
                ops::reuse(&mut grads[i], len).fill(0.0);
                live[i] = true;
            }
        }
        for (k, op) in self.ops.iter().enumerate().rev() {
            let y = op.output();
            // Batch norms synchronise with the other shards, so every shard visits them.
            let is_bn = matches!(op, Op::Bn { .. });
            if !tape.live[y] && !is_bn {
                continue;
            }
            let was_live = tape.live[y];
            tape.live[y] = false;
            let dy = std::mem::take(&mut tape.grads[y]);
            let grads = &mut tape.grads;
            let live = &mut tape.live;
            let pg = &mut tape.param_grads;
            match op {
                Op::Conv { x, w, cv, .. } => {
                    let s = tape.shapes[*x];
                    let tables = &tape.tables[k].as_ref().expect("forward made the tables").2;
                    ops::conv_weight_grad(
                        &tape.acts[*x],
                        s,
                        &dy,
                        *cv,
                        tables,
                        &mut pg[*w..*w + cv.weight_len()],
                    );
                    if *x != 0 {
                        open(grads, live, *x, s.len());
                        let wt_t = transposed[k]
                            .as_ref()
                            .expect("made for every inner convolution");
                        ops::conv_input_grad(&dy, s, wt_t, *cv, tables, &mut grads[*x]);
                    }
                }
                Op::Bn { x, p, c, .. } => {
                    let s = tape.shapes[*x];
                    // A shard whose output gradient is absent still takes part with zeros.
                    let zeros;
                    let dyr: &[f32] = if was_live {
                        &dy
                    } else {
                        zeros = vec![0.0f32; s.len()];
                        &zeros
                    };
                    let mut sums = ops::bn_backward_sums(dyr, &tape.acts[*x], &tape.bn[y], *c);
                    coll.all_sum(shard, &mut sums);
                    if shard == 0 {
                        let (gs, bs) = pg[*p..*p + 2 * c].split_at_mut(*c);
                        ops::add_assign(bs, &sums[..*c]);
                        ops::add_assign(gs, &sums[*c..]);
                    }
                    open(grads, live, *x, s.len());
                    ops::bn_apply_backward(
                        dyr,
                        &tape.acts[*x],
                        &tape.bn[y],
                        &self.params[*p..*p + c],
                        &sums,
                        total * s.h * s.w,
                        &mut grads[*x],
                    );
                }
                Op::Relu { x, .. } => {
                    open(grads, live, *x, dy.len());
                    ops::relu_grad(&tape.acts[*x], &dy, &mut grads[*x]);
                }
                Op::Pool3 { x, .. } => {
                    open(grads, live, *x, dy.len());
                    ops::avg_pool3_grad(&dy, tape.shapes[*x], &mut grads[*x]);
                }
                Op::Pool2 { x, .. } => {
                    let s = tape.shapes[*x];
                    open(grads, live, *x, s.len());
                    ops::avg_pool2_grad(&dy, s, &mut grads[*x]);
                }
                Op::Add { xs, .. } => {
                    for &i in xs {
                        open(grads, live, i, dy.len());
                        ops::add_assign(&mut grads[i], &dy);
                    }
                }
                Op::Zero { .. } => {}
                Op::Gap { x, .. } => {
                    let s = tape.shapes[*x];
                    open(grads, live, *x, s.len());
                    ops::gap_grad(&dy, s, &mut grads[*x]);
                }
                Op::Linear { x, p, i, o, .. } => {
                    let xa = &tape.acts[*x];
                    let n = dy.len() / o;
                    let (gw, gb) = pg[*p..*p + i * o + o].split_at_mut(i * o);
                    let wt = &self.params[*p..*p + i * o];
                    open(grads, live, *x, n * i);
                    let dx = &mut grads[*x];
                    for r in 0..n {
                        for oo in 0..*o {
                            let g = dy[r * o + oo];
                            gb[oo] += g;
                            for ii in 0..*i {
                                gw[oo * i + ii] += g * xa[r * i + ii];
                                dx[r * i + ii] += g * wt[oo * i + ii];
                            }
                        }
                    }
                }
            }
            tape.grads[y] = dy;
        }
    }

    /// Binary activation codes of every ReLU for each image (NASWOT), `[n][units]` as bits of
    /// `x > 0`, from a training-mode forward pass.
    pub fn relu_codes(&mut self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<Vec<bool>> {
        let mut tapes = [Tape::new()];
        self.forward(x, n, h, w, true, &mut tapes);
        let tape = &tapes[0];
        (0..n)
            .map(|img| {
                self.relu_slots
                    .iter()
                    .flat_map(|&s| {
                        let per = tape.acts[s].len() / n;
                        tape.acts[s][img * per..(img + 1) * per]
                            .iter()
                            .map(|&v| v > 0.0)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect()
    }
}
