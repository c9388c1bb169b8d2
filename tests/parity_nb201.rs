//! Parity with the official PyTorch MetaD2A NB201 models, on the fixtures in
//! `../shared/parity/nb201` (made by running the official code; see its README).

mod common;

use std::collections::BTreeMap;

use metad2a::model::{DecodeMode, DrawTree, Generator, Predictor};
use metad2a::rng::Rng;
use metad2a::space::Nb201Arch;
use metad2a::weights::import::ExportDtype;
use serde_json::Value;

use common::{assert_close, max_rel_err, Fixture};

/// A recorded argmax decode: latent, vertex types, adjacency, arch string.
type DecodeCase = (Vec<f32>, Vec<u8>, Vec<f32>, Option<String>);

fn probe_archs(fx: &Fixture) -> Vec<Nb201Arch> {
    fx.json["probe_archs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect()
}

/// The datasets of the fixture: (name, rows, classes).
const DATASETS: [(&str, usize); 2] = [("c10", 10), ("c3", 3)];

/// Max relative errors of every numeric output, asserting each against `tol`.
fn numeric_checks(fx: &Fixture, g: &Generator, p: &Predictor, tol: f32) -> BTreeMap<String, f32> {
    let mut errs = BTreeMap::new();
    for (ds, classes) in DATASETS {
        let x = fx.input(&format!("x.{ds}"));
        let (mu, logvar) = g.latent(x, 1, classes, 20).unwrap();
        let k = format!("gen.set_mu.{ds}");
        errs.insert(k.clone(), assert_close(&k, &mu, fx.want(&k), tol));
        let k = format!("gen.set_logvar.{ds}");
        errs.insert(k.clone(), assert_close(&k, &logvar, fx.want(&k), tol));
        let v = p.set_encoder.encode(x, 1, classes, 20).unwrap();
        let k = format!("pred.set_v.{ds}");
        errs.insert(k.clone(), assert_close(&k, &v, fx.want(&k), tol));

        let graphs: Vec<_> = probe_archs(fx).iter().map(|a| a.to_graph()).collect();
        let ge = p.graph_embedding(&graphs).unwrap();
        let y = p.predict(&v, &ge).unwrap();
        let k = format!("pred.y.{ds}");
        errs.insert(k.clone(), assert_close(&k, &y, fx.want(&k), tol));
    }
    let graphs: Vec<_> = probe_archs(fx).iter().map(|a| a.to_graph()).collect();
    let ge = p.graph_embedding(&graphs).unwrap();
    errs.insert(
        "pred.graph_mu".into(),
        assert_close("pred.graph_mu", &ge, fx.want("pred.graph_mu"), tol),
    );
    errs
}

/// Argmax decodes: from each dataset's latent and from each recorded `z`. Returns the number of
/// decodes that equal the record (types and adjacency) and the number compared.
fn argmax_checks(fx: &Fixture, g: &Generator, from_own_latent: bool) -> (usize, usize) {
    let mut cases: Vec<DecodeCase> = Vec::new();
    for (ds, classes) in DATASETS {
        let z = if from_own_latent {
            g.latent(fx.input(&format!("x.{ds}")), 1, classes, 20)
                .unwrap()
                .0
        } else {
            fx.want(&format!("gen.set_mu.{ds}")).to_vec()
        };
        let rec = &fx.json["datasets"][ds];
        cases.push((
            z,
            types_of(&rec["decoded_types"]),
            fx.want(&format!("gen.decode_adj.{ds}")).to_vec(),
            rec["decoded_arch"].as_str().map(str::to_string),
        ));
    }
    let zs = fx.input("z");
    for (i, rec) in fx.json["z_decodes"].as_array().unwrap().iter().enumerate() {
        cases.push((
            zs[i * 56..(i + 1) * 56].to_vec(),
            types_of(&rec["types"]),
            fx.want(&format!("gen.z_decode_adj.{i}")).to_vec(),
            rec["arch"].as_str().map(str::to_string),
        ));
    }
    let mut equal = 0;
    for (z, types, adj, arch) in &cases {
        let dag = &g.decode(z, DecodeMode::Argmax, &mut []).unwrap()[0];
        let n = dag.len();
        let got_adj: Vec<f32> = dag
            .adjacency()
            .iter()
            .flatten()
            .map(|&b| b as f32)
            .collect();
        let want_adj: Vec<f32> = adj[..n * n].to_vec();
        let got_arch = Nb201Arch::from_graph(dag).map(|a| a.to_string());
        if &dag.types == types && got_adj == want_adj && &got_arch == arch {
            equal += 1;
        } else {
            eprintln!(
                "decode differs: got {dag:?} ({got_arch:?}), want types {types:?} arch {arch:?}"
            );
        }
    }
    (equal, cases.len())
}

fn types_of(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u8)
        .collect()
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn importer_reproduces_the_reference_tensors() {
    let shared = need_shared!();
    Fixture::load(&shared, "nb201").check_import(metad2a::space::Space::Nb201);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn embeddings_and_predictions_match_in_f32() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    let p = Predictor::load_file(fx.dir.join("predictor.safetensors")).unwrap();
    let errs = numeric_checks(&fx, &g, &p, 1e-4);
    eprintln!("f32 max relative errors: {errs:#?}");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn generator_graph_encoder_matches() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    let graphs: Vec<_> = probe_archs(&fx).iter().map(|a| a.to_graph()).collect();
    let (mu, logvar) = g.graph_latent(&graphs).unwrap();
    assert_close("gen.graph_mu", &mu, fx.want("gen.graph_mu"), 1e-4);
    assert_close(
        "gen.graph_logvar",
        &logvar,
        fx.want("gen.graph_logvar"),
        1e-4,
    );
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn argmax_decodes_match_exactly() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    for own in [false, true] {
        let (equal, total) = argmax_checks(&fx, &g, own);
        assert_eq!(equal, total, "argmax decodes (latent computed here: {own})");
        assert_eq!(total, 10);
    }
}

/// Type marginals, vertex-count histogram and valid fraction of `n` stochastic decodes.
struct Stats {
    marginals: Vec<Vec<f64>>,
    valid: f64,
    lengths: Vec<f64>,
    distinct_valid: usize,
}

fn stochastic_stats(g: &Generator, z: &[f32], n: usize, seed: u64) -> Stats {
    let (mn, nvt) = (g.dims.max_n, g.dims.nvt);
    let mut marginals = vec![vec![0.0; nvt]; mn];
    let mut lengths = vec![0.0; mn + 1];
    let (mut valid, mut distinct) = (0usize, std::collections::HashSet::new());
    let batch = 1000;
    for b in 0..n / batch {
        let zs: Vec<f32> = z.iter().copied().cycle().take(batch * z.len()).collect();
        let mut rngs: Vec<Rng> = (0..batch)
            .map(|i| Rng::new(seed, (b * batch + i) as u64))
            .collect();
        for dag in g.decode(&zs, DecodeMode::Sample, &mut rngs).unwrap() {
            for (v, &t) in dag.types.iter().enumerate() {
                marginals[v][t as usize] += 1.0 / n as f64;
            }
            lengths[dag.len()] += 1.0 / n as f64;
            if let Some(a) = Nb201Arch::from_graph(&dag) {
                valid += 1;
                distinct.insert(a);
            }
        }
    }
    Stats {
        marginals,
        valid: valid as f64 / n as f64,
        lengths,
        distinct_valid: distinct.len(),
    }
}

fn stochastic_check(fx: &Fixture, g: &Generator) -> f64 {
    let rec = &fx.json["stochastic"];
    let z = fx.want(rec["latent"].as_str().unwrap()).to_vec();
    let s = stochastic_stats(g, &z, 20_000, 42);
    let mut worst: f64 = 0.0;
    for (v, row) in rec["type_marginals"].as_array().unwrap().iter().enumerate() {
        for (t, want) in row.as_array().unwrap().iter().enumerate() {
            let d = (s.marginals[v][t] - want.as_f64().unwrap()).abs();
            worst = worst.max(d);
            assert!(
                d <= 0.035,
                "type {t} at vertex {v}: {} vs official {}",
                s.marginals[v][t],
                want
            );
        }
    }
    let dv = (s.valid - rec["valid_fraction"].as_f64().unwrap()).abs();
    assert!(
        dv <= 0.035,
        "valid fraction {} vs official {}",
        s.valid,
        rec["valid_fraction"]
    );
    for (k, want) in rec["vertex_count_hist"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert!(
            (s.lengths[k] - want.as_f64().unwrap()).abs() <= 0.035,
            "length {k}"
        );
    }
    eprintln!(
        "stochastic: valid {:.4} (official {}), distinct valid {} of 20000 (official {} of 4000), worst marginal gap {worst:.4}",
        s.valid, rec["valid_fraction"], s.distinct_valid, rec["distinct_valid"]
    );
    worst.max(dv)
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn stochastic_decodes_match_official_statistics() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    stochastic_check(&fx, &g);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn draw_tree_replays_the_graphs_and_streams_decoding_gives() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    let z = fx.want("gen.set_mu.c10");
    let zs: Vec<f32> = z.iter().copied().cycle().take(200 * 56).collect();
    let streams = |ids: std::ops::Range<u64>| ids.map(|i| Rng::new(7, i)).collect::<Vec<_>>();
    // Tracing changes nothing decoded.
    let plain = g
        .decode(&zs, DecodeMode::Sample, &mut streams(0..200))
        .unwrap();
    let (dags, traces) = g.decoder.decode_traced(&zs, &mut streams(0..200)).unwrap();
    assert_eq!(dags, plain);
    let mut tree = DrawTree::new();
    tree.bind(&zs[..56]);
    for (dag, trace) in dags.iter().zip(&traces) {
        tree.insert(&g.decoder, dag, trace);
    }
    assert!(!tree.is_empty());
    // The streams that built the tree replay their own graphs.
    for (i, dag) in (0..200).zip(&dags) {
        let mut rng = Rng::new(7, i);
        assert_eq!(tree.replay(&g.decoder, &mut rng).as_ref(), Some(dag));
    }
    // New streams: a replayed graph, and the stream after it, are those of decoding it; a
    // stream that leaves the tree is left untouched.
    let (mut replayed, mut left) = (0, 0);
    for i in 200..600u64 {
        let mut by_tree = Rng::new(7, i);
        let mut decoded = Rng::new(7, i);
        let want = g
            .decode(
                &zs[..56],
                DecodeMode::Sample,
                std::slice::from_mut(&mut decoded),
            )
            .unwrap()
            .remove(0);
        match tree.replay(&g.decoder, &mut by_tree) {
            Some(dag) => {
                assert_eq!(dag, want, "stream {i}");
                assert_eq!(by_tree.next_f64(), decoded.next_f64(), "stream {i}");
                replayed += 1;
            }
            None => {
                assert_eq!(by_tree.next_f64(), Rng::new(7, i).next_f64(), "stream {i}");
                left += 1;
            }
        }
    }
    assert!(
        replayed > 100 && left > 10,
        "replayed {replayed}, left {left}"
    );
    // Another latent empties the tree.
    let other: Vec<f32> = z.iter().map(|x| x + 1.0).collect();
    tree.bind(&other);
    assert!(tree.is_empty());
    assert!(tree.replay(&g.decoder, &mut Rng::new(7, 0)).is_none());
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn stochastic_decoding_is_deterministic_by_seed_and_independent_of_batching() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let g = Generator::load_file(fx.dir.join("generator.safetensors")).unwrap();
    let z = fx.want("gen.set_mu.c10");
    let zs: Vec<f32> = z.iter().copied().cycle().take(64 * 56).collect();
    let whole = g
        .decode(
            &zs,
            DecodeMode::Sample,
            &mut (0..64).map(|i| Rng::new(5, i)).collect::<Vec<_>>(),
        )
        .unwrap();
    let mut parts = Vec::new();
    for chunk in 0..4u64 {
        let mut rngs: Vec<Rng> = (chunk * 16..chunk * 16 + 16)
            .map(|i| Rng::new(5, i))
            .collect();
        parts.extend(
            g.decode(&zs[..16 * 56], DecodeMode::Sample, &mut rngs)
                .unwrap(),
        );
    }
    assert_eq!(whole, parts);
    // All 64 latents are equal: the decoder computes what graphs drew alike once. Each graph
    // decoded alone (nothing shared) must be the same graph.
    let alone: Vec<_> = (0..64u64)
        .flat_map(|i| {
            g.decode(&zs[..56], DecodeMode::Sample, &mut [Rng::new(5, i)])
                .unwrap()
        })
        .collect();
    assert_eq!(whole, alone);
    let distinct: std::collections::HashSet<_> = whole.iter().collect();
    assert!(
        distinct.len() > 8,
        "the graphs should differ: {} distinct",
        distinct.len()
    );
    // What the engine splits batches by: each graph's first drawn type (drawn from copies of
    // the random streams). None when every latent differs.
    let rngs: Vec<Rng> = (0..64).map(|i| Rng::new(5, i)).collect();
    let first = g.decoder.first_types(&zs, &rngs).unwrap();
    let drawn: Vec<u8> = whole.iter().map(|d| d.types[1]).collect();
    assert_eq!(first, drawn);
    assert!(
        drawn.iter().collect::<std::collections::HashSet<_>>().len() > 1,
        "the first types should differ"
    );
    let differ: Vec<f32> = (0..4 * 56).map(|i| z[i % 56] + (i / 56) as f32).collect();
    assert!(g.decoder.first_types(&differ, &rngs[..4]).is_none());
    let other = g
        .decode(
            &zs,
            DecodeMode::Sample,
            &mut (0..64).map(|i| Rng::new(6, i)).collect::<Vec<_>>(),
        )
        .unwrap();
    assert_ne!(
        whole, other,
        "a different seed should give different graphs"
    );
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn f16_weights_stay_close() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "nb201");
    let dir = fx.import(ExportDtype::F16, false);
    let g = Generator::load_file(dir.join("generator.safetensors")).unwrap();
    let p = Predictor::load_file(dir.join("predictor.safetensors")).unwrap();
    let errs = numeric_checks(&fx, &g, &p, 5e-3);
    let worst = errs.values().copied().fold(0.0, f32::max);
    eprintln!("f16 weights: max relative errors {errs:#?}\nworst {worst:e}");
    let (equal, total) = argmax_checks(&fx, &g, true);
    eprintln!("f16 weights: {equal} of {total} argmax decodes equal the f32 record");
    assert!(
        equal + 1 >= total,
        "f16 argmax decodes: only {equal} of {total} equal"
    );
    let gap = stochastic_check(&fx, &g);
    eprintln!("f16 weights: worst stochastic-statistics gap {gap:.4}");
    // Ranking agreement of the probe predictions with f16 weights.
    let f32p = fx.want("pred.y.c10");
    let v = p.set_encoder.encode(fx.input("x.c10"), 1, 10, 20).unwrap();
    let graphs: Vec<_> = probe_archs(&fx).iter().map(|a| a.to_graph()).collect();
    let y = p.predict(&v, &p.graph_embedding(&graphs).unwrap()).unwrap();
    eprintln!("f16 pred.y.c10 error {:e}", max_rel_err(&y, f32p));
}
