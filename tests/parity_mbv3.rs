//! Parity with the official PyTorch MetaD2A MobileNetV3 (OFA) models, on the fixtures in
//! `../shared/parity/mbv3` (made by running the official code; see its README).

mod common;

use metad2a::model::{Dag, DecodeMode, Generator, Predictor};
use metad2a::space::{Arch, Mbv3Arch, Space};
use metad2a::weights::import::ExportDtype;
use serde_json::Value;

use common::{assert_close, Fixture};

const DATASETS: [(&str, usize); 2] = [("c10", 10), ("c3", 3)];

fn arch_of(v: &Value) -> Option<Mbv3Arch> {
    (!v.is_null()).then(|| Mbv3Arch::from_json(&v.to_string()).unwrap())
}

fn probe_archs(fx: &Fixture) -> Vec<Mbv3Arch> {
    fx.json["probe_archs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| arch_of(v).unwrap())
        .collect()
}

fn types_of(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u8)
        .collect()
}

fn edges_of(v: &Value) -> Vec<(usize, usize)> {
    let mut e: Vec<(usize, usize)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    // the engine lists edges by target, then source
    e.sort_by_key(|&(u, v)| (v, u));
    e
}

fn models(fx: &Fixture) -> (Generator, Predictor) {
    (
        Generator::load_file(fx.dir.join("generator.safetensors")).unwrap(),
        Predictor::load_file(fx.dir.join("predictor.safetensors")).unwrap(),
    )
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn importer_reproduces_the_reference_tensors() {
    let shared = need_shared!();
    Fixture::load(&shared, "mbv3").check_import(Space::Mbv3);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn sizes_match_the_official_inventory() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "mbv3");
    let (g, p) = models(&fx);
    assert_eq!(
        (g.dims.nvt, g.dims.max_n, g.dims.hs, g.dims.nz),
        (29, 22, 56, 56)
    );
    assert_eq!(
        (p.dims.nvt, p.dims.max_n, p.dims.hs, p.dims.nz),
        (29, 22, 512, 56)
    );
    assert_eq!(g.dims.set.feat_dim, 512);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn vertex_types_of_the_probe_archs_match() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "mbv3");
    let want = fx.json["probe_types"].as_array().unwrap();
    let archs = probe_archs(&fx);
    assert_eq!(archs.len(), 12);
    for (a, t) in archs.iter().zip(want) {
        assert_eq!(a.types(), types_of(t), "{a}");
        assert_eq!(Mbv3Arch::from_graph(&a.to_graph()), Some(*a));
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn embeddings_and_predictions_match_in_f32() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "mbv3");
    let (g, p) = models(&fx);
    let graphs: Vec<Dag> = probe_archs(&fx).iter().map(Mbv3Arch::to_graph).collect();
    let ge = p.graph_embedding(&graphs).unwrap();
    let mut worst = assert_close("pred.graph_mu", &ge, fx.want("pred.graph_mu"), 1e-4);
    let (mu, logvar) = g.graph_latent(&graphs).unwrap();
    worst = worst.max(assert_close(
        "gen.graph_mu",
        &mu,
        fx.want("gen.graph_mu"),
        1e-4,
    ));
    worst = worst.max(assert_close(
        "gen.graph_logvar",
        &logvar,
        fx.want("gen.graph_logvar"),
        1e-4,
    ));
    for (ds, classes) in DATASETS {
        let x = fx.input(&format!("x.{ds}"));
        let (mu, logvar) = g.latent(x, 1, classes, 20).unwrap();
        worst = worst.max(assert_close(
            "set mu",
            &mu,
            fx.want(&format!("gen.set_mu.{ds}")),
            1e-4,
        ));
        worst = worst.max(assert_close(
            "set logvar",
            &logvar,
            fx.want(&format!("gen.set_logvar.{ds}")),
            1e-4,
        ));
        let v = p.set_encoder.encode(x, 1, classes, 20).unwrap();
        worst = worst.max(assert_close(
            "pred set",
            &v,
            fx.want(&format!("pred.set_v.{ds}")),
            1e-4,
        ));
        let y = p.predict(&v, &ge).unwrap();
        worst = worst.max(assert_close(
            "pred.y",
            &y,
            fx.want(&format!("pred.y.{ds}")),
            1e-4,
        ));
    }
    eprintln!("mbv3 f32: worst relative error {worst:e}");
}

/// Argmax decodes from each dataset's latent (computed here) and from each recorded `z` equal
/// the official ones: types, edges and the verdict (architecture or invalid).
#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn argmax_decodes_match_exactly() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "mbv3");
    let (g, _) = models(&fx);
    let mut cases: Vec<(Vec<f32>, &Value)> = Vec::new();
    for (ds, classes) in DATASETS {
        let z = g
            .latent(fx.input(&format!("x.{ds}")), 1, classes, 20)
            .unwrap()
            .0;
        cases.push((z, &fx.json["datasets"][ds]));
    }
    let zs = fx.input("z");
    let recs = fx.json["z_decodes"].as_array().unwrap();
    assert_eq!(zs.len(), recs.len() * 56);
    for (i, rec) in recs.iter().enumerate() {
        cases.push((zs[i * 56..(i + 1) * 56].to_vec(), rec));
    }
    let (mut valid, mut invalid) = (0, 0);
    for (z, rec) in &cases {
        let (types, edges, arch) = if rec.get("decoded_types").is_some() {
            (
                &rec["decoded_types"],
                &rec["decoded_edges"],
                &rec["decoded_arch"],
            )
        } else {
            (&rec["types"], &rec["edges"], &rec["arch"])
        };
        let dag = &g.decode(z, DecodeMode::Argmax, &mut []).unwrap()[0];
        assert_eq!(dag.types, types_of(types));
        assert_eq!(dag.edges(), edges_of(edges));
        let got = Arch::from_graph(Space::Mbv3, dag);
        assert_eq!(
            got.map(|a| a.to_json()),
            arch_of(arch).map(|a| a.to_json()),
            "verdict for {dag:?}"
        );
        if got.is_some() {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    eprintln!("argmax decodes: {valid} valid, {invalid} invalid, all equal to the official ones");
    assert_eq!(valid + invalid, 8);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn f16_weights_stay_close() {
    let shared = need_shared!();
    let fx = Fixture::load(&shared, "mbv3");
    let dir = fx.import(ExportDtype::F16, false);
    let g = Generator::load_file(dir.join("generator.safetensors")).unwrap();
    let p = Predictor::load_file(dir.join("predictor.safetensors")).unwrap();
    let graphs: Vec<Dag> = probe_archs(&fx).iter().map(Mbv3Arch::to_graph).collect();
    let ge = p.graph_embedding(&graphs).unwrap();
    let mut worst = assert_close("pred.graph_mu", &ge, fx.want("pred.graph_mu"), 5e-3);
    let (mu, _) = g.latent(fx.input("x.c10"), 1, 10, 20).unwrap();
    worst = worst.max(assert_close("set mu", &mu, fx.want("gen.set_mu.c10"), 5e-3));
    let v = p.set_encoder.encode(fx.input("x.c10"), 1, 10, 20).unwrap();
    worst = worst.max(assert_close(
        "pred.y",
        &p.predict(&v, &ge).unwrap(),
        fx.want("pred.y.c10"),
        5e-3,
    ));
    eprintln!("mbv3 f16 weights: worst relative error {worst:e}");
}
