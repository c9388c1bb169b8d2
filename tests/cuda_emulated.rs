//! The CUDA kernels' logic on machines without a GPU: `kernels/metad2a.cu` compiled as plain C++
//! with one thread per block (`tests/cuda_emu/`), run on the same weights, latents and random
//! streams as the CPU implementation, and compared with it. This checks every decision of the
//! one-launch graph decoder and the set-attention block; what it cannot check (parallel
//! execution, the device's own arithmetic) is left to `scripts/gpu-check.sh` on a GPU.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use metad2a::model::inventory::{self, pytorch_init};
use metad2a::model::{DecodeMode, Generator, Predictor, END_TYPE, START_TYPE};
use metad2a::nn::{Linear, Mab, SetPool};
use metad2a::rng::Rng;
use metad2a::weights::import::ExportDtype;
use metad2a::weights::{serialize, WeightStore};

/// Builds the emulation harness once per test process; `None` (with a loud message) when no
/// C++ compiler is installed, except under CI where that fails.
fn harness() -> Option<PathBuf> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-emu-harness");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let status = Command::new(&cxx)
            .args([
                "-O2",
                "-std=c++17",
                "-ffp-contract=off",
                "-Wall",
                "-Werror",
                "-o",
            ])
            .arg(&out)
            .arg(root.join("tests/cuda_emu/harness.cpp"))
            .status();
        match status {
            Ok(s) if s.success() => Some(out),
            Ok(s) => panic!("the emulation harness does not compile ({s})"),
            Err(e) if std::env::var_os("METAD2A_REQUIRE_SHARED").is_some() => {
                panic!("no C++ compiler `{cxx}`: {e}")
            }
            Err(e) => {
                eprintln!(
                    "\n**************** SKIPPED: no C++ compiler `{cxx}` ({e}) ****************\n"
                );
                None
            }
        }
    })
    .clone()
}

/// The harness's input: int32 header values, then count-prefixed arrays.
#[derive(Default)]
struct Input(Vec<u8>);

impl Input {
    fn int(&mut self, v: usize) -> &mut Self {
        self.0.extend((v as i32).to_le_bytes());
        self
    }
    fn f32s(&mut self, v: &[f32]) -> &mut Self {
        self.0.extend((v.len() as u64).to_le_bytes());
        self.0.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        self
    }
    fn i32s(&mut self, v: &[i32]) -> &mut Self {
        self.0.extend((v.len() as u64).to_le_bytes());
        self.0.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend((v.len() as u64).to_le_bytes());
        self.0.extend(v);
        self
    }
    fn u64s(&mut self, v: &[u64]) -> &mut Self {
        self.0.extend((v.len() as u64).to_le_bytes());
        self.0.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        self
    }
    fn linear(&mut self, l: &Linear) -> &mut Self {
        self.f32s(&l.weight);
        match &l.bias {
            Some(b) => self.f32s(b),
            None => self.f32s(&vec![0.0; l.out_dim]),
        }
    }
}

/// Runs `kernel` on `input`; returns the output arrays' raw bytes.
fn run(bin: &Path, kernel: &str, input: &Input) -> Vec<Vec<u8>> {
    let dir = common::temp_dir(kernel);
    let (i, o) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&i, &input.0).unwrap();
    let s = Command::new(bin)
        .arg(kernel)
        .arg(&i)
        .arg(&o)
        .status()
        .unwrap();
    assert!(s.success(), "harness {kernel}: {s}");
    let b = std::fs::read(&o).unwrap();
    let (mut at, mut out) = (0, Vec::new());
    let sizes: &[usize] = match kernel {
        "decode_graphs" => &[1, 8, 8],
        "sample_types" | "sample_edges" => &[1, 8],
        // set_pool, linear_cols, rank_cells and the rest: one f32 array
        _ => &[4],
    };
    for &size in sizes {
        let n = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
        out.push(b[at + 8..at + 8 + n * size].to_vec());
        at += 8 + n * size;
    }
    assert_eq!(at, b.len());
    out
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn generator(seed: u64) -> Generator {
    let inv = inventory::generator(&inventory::nb201_generator_dims());
    let bytes = serialize(&pytorch_init(&inv, seed), ExportDtype::F32, None).unwrap();
    Generator::load(&WeightStore::from_bytes("random", bytes).unwrap()).unwrap()
}

#[test]
fn one_launch_decoder_makes_the_cpu_decoders_graphs() {
    let Some(bin) = harness() else { return };
    let gen = generator(11);
    let dec = &gen.decoder;
    let n = 400;
    // latents spread like the generator's mu
    let z = common::random_vec(n * dec.nz, 3, 1.5);
    for mode in [DecodeMode::Sample, DecodeMode::Argmax] {
        let mut rngs: Vec<Rng> = (0..n).map(|g| Rng::new(77, g as u64)).collect();
        let state: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
        let want = dec.decode(&z, mode, &mut rngs).unwrap();
        let mut input = Input::default();
        input
            .int(dec.nz)
            .int(dec.hs)
            .int(dec.add_edge[0].out_dim)
            .int(dec.nvt)
            .int(dec.max_n)
            .int(START_TYPE as usize)
            .int(END_TYPE as usize)
            .int((mode == DecodeMode::Argmax) as usize)
            .int(n)
            .f32s(&z)
            .linear(&dec.fc3)
            .f32s(dec.grud.input_rows())
            .f32s(&dec.grud.weight_hh)
            .f32s(&dec.grud.bias_hh)
            .linear(&dec.add_vertex[0])
            .linear(&dec.add_vertex[1])
            .linear(&dec.add_edge[0])
            .linear(&dec.add_edge[1])
            .linear(&dec.message.gate)
            .f32s(&dec.message.mapper.weight)
            .u64s(&state);
        let out = run(&bin, "decode_graphs", &input);
        let (types, preds, state_after) = (&out[0], u64s(&out[1]), u64s(&out[2]));
        let mn = dec.max_n;
        let mut same = 0;
        let mut lengths = std::collections::BTreeMap::new();
        for (g, dag) in want.iter().enumerate() {
            let t: Vec<u8> = types[g * mn..(g + 1) * mn]
                .iter()
                .copied()
                .take_while(|&t| t != 0xff)
                .collect();
            let p = &preds[g * mn..g * mn + t.len()];
            *lengths.entry(dag.types.len()).or_insert(0) += 1;
            if t == dag.types && p == dag.preds.as_slice() {
                same += 1;
            }
        }
        eprintln!("{mode:?}: {same}/{n} graphs identical; CPU graph sizes {lengths:?}");
        // A draw that lands within float rounding of a boundary may go the other way (expf vs
        // the CPU's polynomial exp); anything beyond that is a logic error.
        assert!(same >= n - 2, "{mode:?}: only {same}/{n} graphs identical");
        if mode == DecodeMode::Sample {
            let cpu_after: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
            let streams_same = state_after
                .chunks_exact(4)
                .zip(cpu_after.chunks_exact(4))
                .filter(|(a, b)| a == b)
                .count();
            assert!(streams_same >= n - 2, "random streams advanced differently");
        }
    }
}

fn mab_input(
    m: &Mab,
    q: &[f32],
    q_shared: bool,
    k: &[f32],
    nsets: usize,
    nq: usize,
    nk: usize,
) -> Input {
    let mut i = Input::default();
    i.int(q_shared as usize)
        .int(nsets)
        .int(nq)
        .int(nk)
        .int(m.fc_q.in_dim)
        .int(m.fc_k.in_dim)
        .int(m.dim_v)
        .int(m.heads)
        .f32s(q)
        .f32s(k)
        .linear(&m.fc_q)
        .linear(&m.fc_k)
        .linear(&m.fc_v)
        .linear(&m.fc_o);
    i
}

#[test]
fn set_attention_kernel_matches_the_cpu_block() {
    let Some(bin) = harness() else { return };
    let gen = generator(12);
    let intra = &gen.set_encoder.intra;
    for (m, din, nsets, n) in [(&intra.sab1, 512, 10, 20), (&intra.sab2, 56, 30, 7)] {
        let x = common::random_vec(nsets * n * din, 5, 2.0);
        let want = m.forward(&x, &x, nsets, n, n);
        let got = f32s(&run(&bin, "mab_fused", &mab_input(m, &x, false, &x, nsets, n, n))[0]);
        common::assert_close("mab", &got, &want, 1e-5);
    }
    let (nsets, n) = (12, 20);
    let x = common::random_vec(nsets * n * 56, 6, 2.0);
    let seed = intra.seed.to_vec();
    let tiled: Vec<f32> = (0..nsets).flat_map(|_| seed.iter().copied()).collect();
    let want = intra.pma.forward(&tiled, &x, nsets, 1, n);
    let got = f32s(
        &run(
            &bin,
            "mab_fused",
            &mab_input(&intra.pma, &seed, true, &x, nsets, 1, n),
        )[0],
    );
    common::assert_close("pma", &got, &want, 1e-5);
}

#[test]
fn message_and_gru_kernels_match_the_cpu_blocks() {
    let Some(bin) = harness() else { return };
    let gen = generator(13);
    let dec = &gen.decoder;
    let (hs, mn, rows) = (dec.hs, dec.max_n, 120);
    let h = common::random_vec(rows * hs, 8, 1.5);
    let vid: Vec<i32> = (0..rows).map(|r| (r * 3 % mn) as i32).collect();
    let mut input = Input::default();
    input
        .int(rows)
        .int(hs)
        .int(mn)
        .f32s(&h)
        .i32s(&vid)
        .linear(&dec.message.gate)
        .f32s(&dec.message.mapper.weight);
    let got = f32s(&run(&bin, "gated_messages", &input)[0]);
    let mut want = vec![0.0; rows * hs];
    let mut scratch = Vec::new();
    for (r, &v) in vid.iter().enumerate() {
        let (a, b) = (r * hs, (r + 1) * hs);
        dec.message
            .messages(&h[a..b], 1, v as usize, &mut want[a..b], &mut scratch);
    }
    common::assert_close("gated messages", &got, &want, 1e-5);

    let msgs = common::random_vec(rows * mn * hs, 9, 1.0);
    let mut rng = Rng::new(4, 4);
    let types: Vec<u8> = (0..rows).map(|_| rng.below(dec.nvt as u64) as u8).collect();
    let preds: Vec<u64> = (0..rows).map(|_| rng.below(1 << mn)).collect();
    let mut input = Input::default();
    input
        .int(rows)
        .int(hs)
        .int(mn)
        .bytes(&types)
        .u64s(&preds)
        .f32s(&msgs)
        .f32s(dec.grud.input_rows())
        .f32s(&dec.grud.weight_hh)
        .f32s(&dec.grud.bias_hh);
    let got = f32s(&run(&bin, "gru_gated_step", &input)[0]);
    let mut sums = vec![0.0f32; rows * hs];
    for r in 0..rows {
        for u in (0..mn).filter(|u| preds[r] >> u & 1 == 1) {
            for c in 0..hs {
                sums[r * hs + c] += msgs[(r * mn + u) * hs + c];
            }
        }
    }
    let mut want = vec![0.0; rows * hs];
    dec.grud
        .step_onehot(&types, Some(&sums), &mut want, &mut scratch);
    common::assert_close("gru step", &got, &want, 1e-5);
}

#[test]
fn sampling_kernels_continue_the_cpu_streams() {
    let Some(bin) = harness() else { return };
    let (rows, nvt) = (1000, 7);
    let logits = common::random_vec(rows * nvt, 10, 4.0);
    let mut rngs: Vec<Rng> = (0..rows).map(|r| Rng::new(42, r as u64)).collect();
    let state: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
    let mut input = Input::default();
    input.int(rows).int(nvt).f32s(&logits).u64s(&state);
    let out = run(&bin, "sample_types", &input);
    let want: Vec<u8> = logits
        .chunks_exact(nvt)
        .zip(rngs.iter_mut())
        .map(|(l, r)| {
            let mut p = l.to_vec();
            metad2a::nn::linalg::softmax_inplace(&mut p);
            metad2a::model::decoder::sample_categorical(&p, r) as u8
        })
        .collect();
    let same = out[0].iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(same >= rows - 1, "types: {same}/{rows}");
    assert!(want.iter().any(|&t| t != want[0]), "the draws vary");
    let after: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
    assert_eq!(u64s(&out[1]), after, "streams advanced as on the CPU");

    let edge_logits = common::random_vec(rows, 11, 3.0);
    let mut input = Input::default();
    input.int(rows).f32s(&edge_logits).u64s(&after);
    let out = run(&bin, "sample_edges", &input);
    let want: Vec<u8> = edge_logits
        .iter()
        .zip(rngs.iter_mut())
        .map(|(&l, r)| (r.next_f32() < metad2a::nn::linalg::sigmoid(l)) as u8)
        .collect();
    let same = out[0].iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(same >= rows - 1, "edges: {same}/{rows}");
    let after: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
    assert_eq!(u64s(&out[1]), after);
}

fn predictor(seed: u64) -> Predictor {
    let inv = inventory::predictor(&inventory::nb201_predictor_dims());
    let bytes = serialize(&pytorch_init(&inv, seed), ExportDtype::F32, None).unwrap();
    Predictor::load(&WeightStore::from_bytes("random", bytes).unwrap()).unwrap()
}

/// `set_pool` on `nsets` sets of `n` rows of `x` (`rows` gathers them when given).
fn set_pool_kernel(
    bin: &Path,
    pool: &SetPool,
    x: &[f32],
    rows: Option<&[i32]>,
    nsets: usize,
    n: usize,
) -> Vec<f32> {
    let mut input = Input::default();
    input
        .int(rows.is_some() as usize)
        .int(nsets)
        .int(n)
        .int(pool.dim_in)
        .int(pool.dim_hidden)
        .int(pool.dim_out)
        .int(pool.sab1.heads)
        .f32s(x)
        .i32s(rows.unwrap_or(&[0]))
        .f32s(&pool.packed());
    f32s(&run(bin, "set_pool", &input)[0])
}

#[test]
fn set_pool_kernel_encodes_sets_as_the_cpu_encoder() {
    let Some(bin) = harness() else { return };
    let gen = generator(14);
    let enc = &gen.set_encoder;
    let din = enc.dims.feat_dim;
    // Intra-class pooling of gathered rows: 12 sets of 20 rows drawn from 150 feature rows.
    let (stored, nsets, n) = (150, 12, 20);
    let x = common::random_vec(stored * din, 15, 2.0);
    let mut rng = Rng::new(5, 5);
    let rows: Vec<i32> = (0..nsets * n)
        .map(|_| rng.below(stored as u64) as i32)
        .collect();
    let gathered: Vec<f32> = rows
        .iter()
        .flat_map(|&r| x[r as usize * din..(r as usize + 1) * din].iter().copied())
        .collect();
    let want = enc.intra.forward(&gathered, nsets, n);
    let got = set_pool_kernel(&bin, &enc.intra, &x, Some(&rows), nsets, n);
    common::assert_close("intra set pool, gathered rows", &got, &want, 1e-5);
    // Inter-class pooling of contiguous sets as large as CIFAR-100's 100 classes.
    let (nsets, n) = (3, 100);
    let protos = common::random_vec(nsets * n * enc.dims.proto_dim, 16, 1.5);
    let want = enc.inter.forward(&protos, nsets, n);
    let got = set_pool_kernel(&bin, &enc.inter, &protos, None, nsets, n);
    common::assert_close("inter set pool, 100 elements", &got, &want, 1e-5);
    // The whole encoder: two launches against SetEncoder::encode.
    let (tasks, classes, per) = (4, 10, 20);
    let x = common::random_vec(tasks * classes * per * din, 17, 2.0);
    let want = enc.encode(&x, tasks, classes, per).unwrap();
    let protos = set_pool_kernel(&bin, &enc.intra, &x, None, tasks * classes, per);
    let got = set_pool_kernel(&bin, &enc.inter, &protos, None, tasks, classes);
    common::assert_close("set encoder", &got, &want, 1e-5);
}

fn linear_cols_kernel(
    bin: &Path,
    l: &Linear,
    x: &[f32],
    rows: usize,
    col: usize,
    cols: usize,
    bias: bool,
) -> Vec<f32> {
    let mut input = Input::default();
    input
        .int(rows)
        .int(cols)
        .int(l.in_dim)
        .int(col)
        .int(cols)
        .int(bias as usize)
        .int(l.out_dim)
        .f32s(x)
        .f32s(&l.weight)
        .f32s(l.bias.as_deref().unwrap_or(&[0.0]));
    f32s(&run(bin, "linear_cols", &input)[0])
}

#[test]
fn linear_kernel_computes_the_latent_head_and_both_halves_of_the_predictor_head() {
    let Some(bin) = harness() else { return };
    let gen = generator(15);
    let pred = predictor(16);
    let (dd, nz) = (pred.dims.set.out_dim, pred.dims.nz);
    let v = common::random_vec(30 * gen.dims.set.out_dim, 18, 1.0);
    let want = gen.heads(&v, 30).0;
    let got = linear_cols_kernel(&bin, &gen.fc1, &v, 30, 0, gen.dims.set.out_dim, true);
    common::assert_close("latent head", &got, &want, 1e-5);
    let g = common::random_vec(700 * nz, 19, 1.0);
    let want = pred.head_graph_part(&g);
    let got = linear_cols_kernel(&bin, &pred.head[0], &g, 700, dd, nz, true);
    common::assert_close("head, graph half", &got, &want, 1e-5);
    let d = common::random_vec(7 * dd, 20, 1.0);
    let want = pred.head_dataset_part(&d);
    let got = linear_cols_kernel(&bin, &pred.head[0], &d, 7, 0, dd, false);
    common::assert_close("head, dataset half", &got, &want, 1e-5);
}

#[test]
fn rank_kernel_scores_cells_as_the_cpu_head_with_prior_and_mix() {
    use metad2a::space::nb201::{Nb201Arch, NUM_ARCHS};
    let Some(bin) = harness() else { return };
    let pred = predictor(17);
    let (dd, nz, p) = (pred.dims.set.out_dim, pred.dims.nz, pred.dims.head_hidden);
    let g = common::random_vec(NUM_ARCHS * nz, 21, 1.0);
    let a = pred.head_graph_part(&g);
    let r = 3;
    let c = pred.head_dataset_part(&common::random_vec(r * dd, 22, 1.0));
    let weights = [0.5f32, 0.3, 0.2];
    let mut rng = Rng::new(6, 6);
    let codes: Vec<i32> = (0..2000)
        .map(|_| rng.below(NUM_ARCHS as u64) as i32)
        .collect();
    let prior = common::random_vec(NUM_ARCHS, 23, 0.1);
    let (slots, types) = (6, 5);
    let mixv = common::random_vec(slots * types, 24, 0.1);
    let ops: Vec<u8> = Nb201Arch::all().flat_map(|a| a.ops).collect();
    let rows: Vec<f32> = codes
        .iter()
        .flat_map(|&k| a[k as usize * p..(k as usize + 1) * p].iter().copied())
        .collect();
    let head = pred.mean_scores(&rows, &c, &weights);
    let w2 = &pred.head[1].weight[..p];
    let b2 = pred.head[1].bias.as_ref().unwrap()[0];
    for (has_prior, has_mix) in [(false, false), (true, true)] {
        let mut input = Input::default();
        input
            .int(codes.len())
            .int(p)
            .int(r)
            .int(has_prior as usize)
            .int(slots)
            .int(types)
            .int(has_mix as usize)
            .f32s(&a)
            .i32s(&codes)
            .f32s(&c)
            .f32s(&weights)
            .f32s(w2)
            .f32s(&[b2])
            .f32s(&prior)
            .f32s(&mixv)
            .bytes(&ops);
        let got = f32s(&run(&bin, "rank_cells", &input)[0]);
        let want: Vec<f32> = codes
            .iter()
            .zip(&head)
            .map(|(&k, &h)| {
                let mut s = h;
                if has_prior {
                    s += prior[k as usize];
                }
                if has_mix {
                    let arch = Nb201Arch::from_code(k as usize).unwrap();
                    s += arch
                        .ops
                        .iter()
                        .enumerate()
                        .map(|(t, &o)| mixv[t * types + o as usize])
                        .sum::<f32>();
                }
                s
            })
            .collect();
        common::assert_close("cell scores", &got, &want, 1e-5);
    }
}

#[test]
fn device_ranking_encodes_the_distinct_samples_the_cpu_encodes() {
    // Ranking on a GPU finds the distinct set samples on the host (`sets::distinct`) and
    // weights them by count; the CPU's embedder finds them itself. Both must agree.
    use metad2a::search::sets::{distinct, draw, SetEmbedder};
    let gen = generator(18);
    let din = gen.set_encoder.dims.feat_dim;
    // Classes of 4, 4 and 5 rows, 4 drawn per class: samples repeat often.
    let labels: Vec<u32> = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2].to_vec();
    let data = metad2a::Dataset::new(
        common::random_vec(labels.len() * din, 25, 1.0),
        din,
        labels,
        None,
    )
    .unwrap();
    let mut rng = Rng::new(3, 3);
    let samples: Vec<Vec<u32>> = (0..40).map(|_| draw(&data, 4, false, &mut rng)).collect();
    let (host, ids) = distinct(&samples);
    let mut cpu = SetEmbedder::new(&gen.set_encoder, &data, 4);
    let (d, cpu_ids) = cpu.embed_distinct(&samples);
    assert_eq!(ids, cpu_ids);
    assert!(
        host.len() > 1 && host.len() < samples.len(),
        "{} distinct",
        host.len()
    );
    let owned: Vec<Vec<u32>> = host.iter().map(|s| s.to_vec()).collect();
    let mut again = SetEmbedder::new(&gen.set_encoder, &data, 4);
    assert_eq!(again.embed(&owned), d);
}
