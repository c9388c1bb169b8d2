//! The kernels against the CPU blocks of `src/nn` (themselves tested against the composed
//! references), on random official-size weights and random inputs, and whole searches against
//! the CPU engine. The device tests are ignored unless asked for (`scripts/gpu-check.sh` runs
//! them and fails without a usable GPU); the PTX checks run everywhere.

use super::{Gpu, KERNELS, PTX};
use crate::model::inventory::{self, pytorch_init};
use crate::model::Generator;
use crate::rng::Rng;
use crate::weights::import::ExportDtype;
use crate::weights::{serialize, WeightStore};

/// Largest relative error allowed between device and CPU (relative to max(1, |cpu|)).
const TOL: f32 = 1e-4;

/// The GPU for a device test. Device tests are `#[ignore]`d, so a plain `cargo test` lists them
/// as ignored; `scripts/gpu-check.sh` runs them with `--include-ignored`, and there a missing
/// or unusable GPU fails the test.
fn gpu() -> Gpu {
    match Gpu::open_default() {
        Ok(g) => g,
        Err(why) => panic!("a device test needs a usable GPU: {why}"),
    }
}

fn official_generator(seed: u64) -> Generator {
    let d = inventory::nb201_generator_dims();
    let bytes = serialize(
        &pytorch_init(&inventory::generator(&d), seed),
        ExportDtype::F32,
        None,
    )
    .unwrap();
    Generator::load(&WeightStore::from_bytes("random", bytes).unwrap()).unwrap()
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = Rng::new(seed, 7);
    (0..n).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0f32, f32::max);
    eprintln!("{what}: worst relative error {worst:.2e}");
    assert!(worst <= TOL, "{what}: {worst} > {TOL}");
}

#[test]
fn ptx_holds_every_kernel_for_sm90() {
    assert!(
        PTX.contains(".target sm_90"),
        "PTX not built for compute_90"
    );
    assert!(
        PTX.contains(".version 8.4"),
        "PTX ISA is not 8.4 (scripts/build-ptx.sh)"
    );
    for k in KERNELS {
        assert!(
            PTX.contains(&format!(".entry {k}(")),
            "kernel {k} missing from kernels/metad2a.ptx: rerun scripts/build-ptx.sh"
        );
    }
}

#[test]
fn set_samples_gather_each_row_once() {
    // What the device encoder uploads for a list of set samples (no GPU needed).
    let data = crate::Dataset::from_contiguous(random(6 * 5 * 3, 13, 1.0), 3, 5).unwrap();
    let mut rng = Rng::new(8, 8);
    let samples: Vec<Vec<u32>> = (0..7)
        .map(|_| crate::search::sets::draw(&data, 2, false, &mut rng))
        .collect();
    let refs: Vec<&[u32]> = samples.iter().map(Vec::as_slice).collect();
    let (x, rows) = super::search::gather_rows(&data, &refs);
    let flat: Vec<u32> = samples.concat();
    assert_eq!(rows.len(), flat.len());
    for (&r, &at) in flat.iter().zip(&rows) {
        assert_eq!(&x[at as usize * 3..at as usize * 3 + 3], data.row(r));
    }
    let mut distinct = flat.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(x.len(), distinct.len() * 3, "each row uploaded once");
}

#[test]
fn open_without_a_device_is_an_error_not_a_panic() {
    // On a machine with a GPU this opens it; elsewhere it must come back with a reason.
    match Gpu::open(0) {
        Ok(g) => assert!(!g.name.is_empty()),
        Err(why) => assert!(why.contains("CUDA") || why.contains("PTX"), "{why}"),
    }
    assert!(Gpu::open(1 << 20).is_err(), "device 2^20 cannot exist");
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn set_attention_blocks_match_the_cpu() {
    let g = gpu();
    let gen = official_generator(1);
    let intra = &gen.set_encoder.intra;
    for (name, m, din) in [("sab1", &intra.sab1, 512), ("sab2", &intra.sab2, 56)] {
        for (nsets, n) in [(1, 20), (10, 20), (100, 20), (7, 100)] {
            let x = random(nsets * n * din, nsets as u64, 2.0);
            let want = m.forward(&x, &x, nsets, n, n);
            let got = g.mab(m, &x, false, &x, nsets, n, n).unwrap();
            check(&format!("{name} {nsets}x{n}"), &got, &want);
        }
    }
    // PMA: one query block shared by every set.
    let (nsets, n) = (50, 20);
    let x = random(nsets * n * 56, 3, 2.0);
    let seed: Vec<f32> = intra.seed.to_vec();
    let tiled: Vec<f32> = (0..nsets).flat_map(|_| seed.iter().copied()).collect();
    let want = intra.pma.forward(&tiled, &x, nsets, 1, n);
    let got = g.mab(&intra.pma, &seed, true, &x, nsets, 1, n).unwrap();
    check("pma", &got, &want);
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn gated_messages_and_gru_step_match_the_cpu() {
    let g = gpu();
    let gen = official_generator(2);
    let dec = &gen.decoder;
    let (hs, max_n, rows) = (dec.hs, dec.max_n, 300);
    // messages of vertices with assorted indices
    let h = random(rows * hs, 4, 1.5);
    let vid: Vec<i32> = (0..rows).map(|r| (r * 5 % max_n) as i32).collect();
    let got = g.gated_messages(&dec.message, &h, &vid).unwrap();
    let mut want = vec![0.0; rows * hs];
    let mut scratch = Vec::new();
    for r in 0..rows {
        dec.message.messages(
            &h[r * hs..(r + 1) * hs],
            1,
            vid[r] as usize,
            &mut want[r * hs..(r + 1) * hs],
            &mut scratch,
        );
    }
    check("gated messages", &got, &want);
    // GRU step on the sum of each row's predecessors' messages
    let msgs = random(rows * max_n * hs, 5, 1.0);
    let mut rng = Rng::new(9, 0);
    let types: Vec<u8> = (0..rows).map(|_| rng.below(dec.nvt as u64) as u8).collect();
    let preds: Vec<u64> = (0..rows).map(|_| rng.below(1 << max_n)).collect();
    let got = g
        .gru_gated_step(&dec.grud, &types, &preds, &msgs, max_n)
        .unwrap();
    let mut sums = vec![0.0f32; rows * hs];
    for r in 0..rows {
        for u in 0..max_n {
            if preds[r] >> u & 1 == 1 {
                for c in 0..hs {
                    sums[r * hs + c] += msgs[(r * max_n + u) * hs + c];
                }
            }
        }
    }
    let mut want = vec![0.0; rows * hs];
    dec.grud
        .step_onehot(&types, Some(&sums), &mut want, &mut scratch);
    check("gru step", &got, &want);
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn device_sampling_follows_the_cpu_streams() {
    let g = gpu();
    let (rows, nvt) = (2000, 7);
    let logits = random(rows * nvt, 6, 4.0);
    let mut rngs: Vec<Rng> = (0..rows).map(|r| Rng::new(42, r as u64)).collect();
    let mut state: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
    let got = g.sample_types(&logits, nvt, &mut state).unwrap();
    let want: Vec<u8> = logits
        .chunks_exact(nvt)
        .zip(rngs.iter_mut())
        .map(|(l, r)| {
            let mut p = l.to_vec();
            crate::nn::linalg::softmax_inplace(&mut p);
            crate::model::decoder::sample_categorical(&p, r) as u8
        })
        .collect();
    let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    eprintln!("types: {same}/{rows} draws equal to the CPU's");
    // float differences in exp may move a draw sitting on a bin edge; nothing more
    assert!(same >= rows - 2, "{same}/{rows}");
    let after: Vec<u64> = rngs.iter().flat_map(|r| r.state()).collect();
    assert_eq!(
        state, after,
        "the device advanced the streams as the CPU does"
    );
    let edge_logits = random(rows, 8, 3.0);
    let got = g.sample_edges(&edge_logits, &mut state).unwrap();
    let want: Vec<bool> = edge_logits
        .iter()
        .zip(rngs.iter_mut())
        .map(|(&l, r)| r.next_f32() < crate::nn::linalg::sigmoid(l))
        .collect();
    let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    eprintln!("edges: {same}/{rows} draws equal to the CPU's");
    assert!(same >= rows - 2, "{same}/{rows}");
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn one_launch_decode_matches_the_cpu_decoder() {
    let g = gpu();
    let gen = official_generator(3);
    let dec = &gen.decoder;
    let gd = super::ops::GpuDecoder::new(&g, dec).unwrap();
    let n = 2000;
    let z = random(n * dec.nz, 10, 1.5);
    for mode in [
        crate::model::DecodeMode::Sample,
        crate::model::DecodeMode::Argmax,
    ] {
        let mut cpu_rngs: Vec<Rng> = (0..n).map(|i| Rng::new(5, i as u64)).collect();
        let mut gpu_rngs = cpu_rngs.clone();
        let want = dec.decode(&z, mode, &mut cpu_rngs).unwrap();
        let got = gd.decode(&g, &z, mode, &mut gpu_rngs).unwrap();
        let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        eprintln!("{mode:?}: {same}/{n} graphs identical to the CPU's");
        assert!(same >= n - n / 500, "{mode:?}: {same}/{n}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn searches_decoding_on_the_gpu_find_what_the_cpu_finds() {
    gpu();
    // a narrower head than the official 512 keeps the test quick
    let pd = crate::model::dims::PredictorDims {
        hs: 56,
        head_hidden: 56,
        ..inventory::nb201_predictor_dims()
    };
    let pbytes = serialize(
        &pytorch_init(&inventory::predictor(&pd), 4),
        ExportDtype::F32,
        None,
    )
    .unwrap();
    let load = || {
        let p =
            crate::model::Predictor::load(&WeightStore::from_bytes("p", pbytes.clone()).unwrap())
                .unwrap();
        crate::Engine::from_models(official_generator(4), p, None).unwrap()
    };
    let cpu = load();
    let mut dev = load();
    let name = dev.use_cuda().unwrap();
    assert_eq!(dev.device_name(), Some(name.as_str()));
    let data = crate::Dataset::from_contiguous(random(10 * 20 * 512, 12, 1.0), 512, 20).unwrap();
    let cfg = crate::SearchConfig {
        num_archs: 100,
        ..Default::default()
    };
    let a = cpu.search(&data, &cfg).unwrap();
    let b = dev.search(&data, &cfg).unwrap();
    let sa: std::collections::HashSet<_> = a.candidates.iter().map(|c| c.arch).collect();
    let common = b.candidates.iter().filter(|c| sa.contains(&c.arch)).count();
    eprintln!(
        "GPU decode: {common}/{} candidates shared with the CPU search; decode {:.2} ms (CPU {:.2} ms)",
        a.candidates.len(),
        b.timings.decode_ms,
        a.timings.decode_ms
    );
    assert!(
        common * 100 >= a.candidates.len() * 98,
        "{common}/{}",
        a.candidates.len()
    );
}

/// Fraction of `b`'s candidates that `a` also has, and the worst relative score difference
/// over the shared ones.
fn compare(a: &crate::SearchReport, b: &crate::SearchReport) -> (f64, f32) {
    let scores: std::collections::HashMap<_, _> =
        a.candidates.iter().map(|c| (c.arch, c.score)).collect();
    let mut worst = 0.0f32;
    let mut common = 0;
    for c in &b.candidates {
        if let Some(&s) = scores.get(&c.arch) {
            common += 1;
            worst = worst.max((c.score - s).abs() / s.abs().max(1.0));
        }
    }
    (common as f64 / a.candidates.len().max(1) as f64, worst)
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn whole_searches_on_the_gpu_match_the_cpu_with_the_shipped_weights() {
    gpu();
    // The default weights: 1280-d features, a graph cache, a cell prior and a gated cell mix.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/nb201-lite0-ranker");
    let cpu = crate::Engine::load(&dir).unwrap();
    let mut dev = crate::Engine::load(&dir).unwrap();
    dev.use_cuda().unwrap();
    // The last case's sets (200 rows per class) are too large for a thread block: they are
    // encoded and ranked on the CPU, and decoded on the device.
    for (classes, per, per_class) in [(10, 20, 20), (10, 60, 20), (100, 20, 20), (3, 200, 200)] {
        let data = crate::Dataset::from_contiguous(
            random(classes * per * 1280, classes as u64 + per as u64, 1.0),
            1280,
            per,
        )
        .unwrap();
        for exhaustive in [false, true] {
            let cfg = crate::SearchConfig {
                exhaustive,
                per_class,
                top_k: 0,
                ..Default::default()
            };
            let a = cpu.search(&data, &cfg).unwrap();
            let b = dev.search(&data, &cfg).unwrap();
            let (shared, worst) = compare(&a, &b);
            eprintln!(
                "{classes}x{per} ({per_class} per class) exhaustive={exhaustive}: {:.2}% of candidates shared, worst score difference {worst:.2e}; GPU sets {:.2} decode {:.2} rank {:.2} ms, CPU {:.2} {:.2} {:.2} ms",
                shared * 100.0,
                b.timings.sets_ms, b.timings.decode_ms, b.timings.rank_ms,
                a.timings.sets_ms, a.timings.decode_ms, a.timings.rank_ms
            );
            assert!(shared >= 0.998, "{:.4} of candidates shared", shared);
            assert!(worst <= TOL, "scores differ by {worst}");
            let (fa, fb) = (a.data_fit.unwrap(), b.data_fit.unwrap());
            assert!((fa.novelty - fb.novelty).abs() <= TOL && (fa.gate - fb.gate).abs() <= TOL);
            if exhaustive {
                assert_eq!(a.candidates.len(), b.candidates.len());
            }
        }
    }
}
