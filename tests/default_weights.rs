//! The shipped weights: `weights/nb201-lite0` (the official objectives, the ranker's base) and
//! `weights/nb201-lite0-ranker` (the default): they load (which checks both model files
//! against the manifest's sha256), their manifests name the files they were trained on with
//! those files' current sha256, and README's main command (a search on the committed example
//! images with no --weights) runs on the default.

mod common;

use std::path::Path;

/// The weights the CLI uses when --weights is not given.
const DEFAULT: &str = "weights/nb201-lite0-ranker";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn manifest_names_the_committed_meta_database() {
    let dir = root().join("weights/nb201-lite0");
    let engine = metad2a::Engine::load(&dir).unwrap();
    engine.verify().unwrap();
    let m = metad2a::weights::Manifest::read(&dir).unwrap();
    let p = &m.provenance;
    assert!(p.command.contains("train generator") && p.command.contains("train predictor"));
    assert!(p.commit.as_ref().is_some_and(|c| c.len() == 40));
    assert!(p.licence.contains("CC0") && p.licence.contains("BSD-3-Clause"));
    let names: Vec<&str> = p.inputs.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "data/metadb-nb201/tasks.jsonl",
            "data/metadb-nb201/records.jsonl",
            "data/metadb-nb201/features.safetensors"
        ]
    );
    for i in &p.inputs {
        let bytes = std::fs::read(root().join(&i.path)).unwrap();
        assert_eq!(bytes.len() as u64, i.bytes, "{}", i.path);
        assert_eq!(metad2a::weights::sha256_hex(&bytes), i.sha256, "{}", i.path);
    }
    assert!(
        m.extra.contains_key("generator_training") && m.extra.contains_key("predictor_training")
    );
}

#[test]
fn readme_main_command_searches_the_example_images() {
    let out = common::output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_metad2a"))
            .current_dir(root())
            .env_remove("METAD2A_WEIGHTS")
            .args([
                "search",
                "--images",
                "examples/data/fashion-mnist",
                "--json",
                "--top-k",
                "5",
            ]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = v["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 5);
    let scores: Vec<f64> = c.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for c in c {
        c["arch"]
            .as_str()
            .unwrap()
            .parse::<metad2a::space::Nb201Arch>()
            .unwrap();
    }
    // Golden value: the default weights' pick for the example images (recorded when the
    // weights were made; its score leads the second cell's by 0.109, far above rounding).
    assert_eq!(
        c[0]["arch"],
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    );
}

/// The ranker weights README's main command uses: a cell prior over the base predictor, whose
/// manifest names the meta-database and the NAS-Bench-201 table it was trained on.
#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn ranker_weights_name_their_training_data_and_have_a_cell_prior() {
    let shared = need_shared!();
    let dir = root().join(DEFAULT);
    let engine = metad2a::Engine::load(&dir).unwrap();
    engine.verify().unwrap();
    assert!(engine.predictor.cell_prior.is_some());
    let m = metad2a::weights::Manifest::read(&dir).unwrap();
    let p = &m.provenance;
    assert!(p.command.contains("train generator") && p.command.contains("train ranker"));
    assert!(p.data.contains("ImageNet16-120"), "{}", p.data);
    let table = shared.join("data/nb201/nats_bench.csv");
    for i in &p.inputs {
        let path = if i.path.ends_with("nats_bench.csv") {
            table.clone()
        } else {
            root().join(&i.path)
        };
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, i.bytes, "{}", i.path);
        assert_eq!(metad2a::weights::sha256_hex(&bytes), i.sha256, "{}", i.path);
    }
    assert_eq!(p.inputs.len(), 4);
}

/// The example images' feature rows with the built-in backbone, and their labels.
fn example_rows() -> (Vec<f32>, Vec<u32>) {
    let imgs = metad2a::features::readers::read_folder(
        &root().join("examples/data/fashion-mnist"),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let fx = metad2a::features::FeatureExtractor::builtin(160).unwrap();
    (fx.extract(&imgs.images, &mut |_, _| {}), imgs.labels)
}

fn example_data() -> metad2a::Dataset {
    let (x, labels) = example_rows();
    metad2a::Dataset::new(x, metad2a::features::FEATURE_DIM, labels, None).unwrap()
}

/// Every `step`-th NB201 cell.
fn some_cells(step: usize) -> Vec<metad2a::space::Arch> {
    (0..15_625)
        .step_by(step)
        .map(|c| metad2a::space::Nb201Arch::from_code(c).unwrap().into())
        .collect()
}

/// The example's one set embedding: it has exactly 20 images per class, so every set sample
/// is the same set.
fn example_embedding(engine: &metad2a::Engine) -> Vec<f32> {
    let (x, labels) = example_rows();
    let dim = metad2a::features::FEATURE_DIM;
    let mut rows = Vec::new();
    for k in 0..10u32 {
        for (i, _) in labels.iter().enumerate().filter(|(_, &l)| l == k) {
            rows.extend_from_slice(&x[i * dim..(i + 1) * dim]);
        }
    }
    engine
        .predictor
        .set_encoder
        .encode(&rows, 1, 10, 20)
        .unwrap()
}

/// The cell prior enters both scoring paths alike: the exhaustive one (graph cache, the prior
/// of every cell computed once) and the one for given candidates (graphs encoded, the prior
/// added per graph); and the scores differ from the head alone by exactly the prior.
#[test]
fn both_scoring_paths_add_the_same_cell_prior() {
    let engine = metad2a::Engine::load(root().join(DEFAULT)).unwrap();
    let prior = engine.predictor.cell_prior.as_ref().unwrap();
    let data = example_data();
    let archs = some_cells(61);
    let cfg = metad2a::SearchConfig::default();
    let direct = engine.score(&data, &archs, &cfg).unwrap();
    let cached = engine
        .score(
            &data,
            &archs,
            &metad2a::SearchConfig {
                exhaustive: true,
                ..cfg.clone()
            },
        )
        .unwrap();
    let mut spread = 0.0f32;
    for ((a, d), c) in archs.iter().zip(&direct).zip(&cached) {
        assert!((d - c).abs() <= 1e-5 * d.abs().max(1.0), "{a}: {d} vs {c}");
        spread = spread.max(prior.score(&a.to_graph()).abs());
    }
    assert!(spread > 0.1, "the prior is not flat: {spread}");
    // the score is the official head on the example's one embedding plus the prior
    let d = example_embedding(&engine);
    let head = engine
        .predictor
        .predict(&d, &engine.graph_embeddings(&archs).unwrap())
        .unwrap();
    // (and the default's cell mix, if it has one: checked on its own below)
    let mix = |g: &metad2a::graph::Dag| {
        engine
            .predictor
            .cell_mix
            .as_ref()
            .map_or(0.0, |m| m.score(&m.values(&d), g))
    };
    for ((a, h), c) in archs.iter().zip(&head).zip(&cached) {
        let want = h + prior.score(&a.to_graph()) + mix(&a.to_graph());
        assert!(
            (want - c).abs() <= 1e-5 * c.abs().max(1.0),
            "{a}: {want} vs {c}"
        );
    }
}

/// The program carries its default weights and backbone: run from another folder with no
/// weights named, it reads nothing from the source tree but the images it is given.
#[test]
fn the_program_needs_no_file_from_the_source_tree() {
    let elsewhere = common::temp_dir("elsewhere");
    let out = common::output_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_metad2a"))
            .current_dir(&elsewhere)
            .env_remove("METAD2A_WEIGHTS")
            .args(["search", "--json", "--top-k", "1", "--images"])
            .arg(root().join("examples/data/fashion-mnist")),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["candidates"][0]["arch"],
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    );
    // `cache` writes into a directory, so it needs one named
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metad2a"))
        .current_dir(&elsewhere)
        .env_remove("METAD2A_WEIGHTS")
        .arg("cache")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--weights DIR"));
}

/// A cell mix (`cell_mix.*`, see src/model/cell_mix.rs) added to the default predictor: both
/// scoring paths add the same mix, and the scores move from the weights without it by exactly
/// `x(cell) · (W (D − μ) + b)`, written out here in f64 on the example's one set embedding.
#[test]
fn both_scoring_paths_add_the_same_cell_mix() {
    use metad2a::weights::{NamedTensor, WeightStore};
    let dir = root().join(DEFAULT);
    let m = metad2a::weights::Manifest::read(&dir).unwrap();
    let store = WeightStore::open(dir.join(&m.predictor.file)).unwrap();
    let mut rng = metad2a::rng::Rng::new(5, 9);
    let mut r =
        |n: usize, s: f64| -> Vec<f32> { (0..n).map(|_| (rng.normal() * s) as f32).collect() };
    // the default predictor without its own mix, if it has one
    let mut tensors: Vec<NamedTensor> = store
        .names()
        .filter(|n| !n.starts_with("cell_mix."))
        .map(|n| {
            let p = store.param_any(n).unwrap();
            (n.to_string(), p.shape().to_vec(), p.to_vec())
        })
        .collect();
    let engine_of = |tensors: &[NamedTensor]| {
        let predictor =
            metad2a::model::Predictor::load(&WeightStore::from_tensors("mixed", tensors).unwrap())
                .unwrap();
        let generator = metad2a::model::Generator::load(
            &WeightStore::open(dir.join(&m.generator.file)).unwrap(),
        )
        .unwrap();
        let cache_store = WeightStore::open(dir.join(metad2a::weights::GRAPH_CACHE_FILE)).unwrap();
        let cache =
            metad2a::search::graph_cache::GraphCache::from_store(&cache_store, predictor.dims.nz)
                .unwrap();
        metad2a::Engine::from_models(generator, predictor, Some(cache)).unwrap()
    };
    let base = engine_of(&tensors);
    let dd = base.predictor.dims.set.out_dim;
    let (w, b, mu) = (r(30 * dd, 0.5), r(30, 0.1), r(dd, 0.05));
    tensors.push(("cell_mix.weight".into(), vec![30, dd], w.clone()));
    tensors.push(("cell_mix.bias".into(), vec![30], b.clone()));
    tensors.push(("cell_mix.center".into(), vec![dd], mu.clone()));
    let mixed = engine_of(&tensors);
    assert!(mixed.predictor.cell_mix.is_some() && base.predictor.cell_mix.is_none());

    let data = example_data();
    let archs = some_cells(53);
    let cfg = metad2a::SearchConfig::default();
    let exhaustive = metad2a::SearchConfig {
        exhaustive: true,
        ..cfg.clone()
    };
    let direct = mixed.score(&data, &archs, &cfg).unwrap();
    let cached = mixed.score(&data, &archs, &exhaustive).unwrap();
    let plain = base.score(&data, &archs, &exhaustive).unwrap();
    let d = example_embedding(&base);
    let mut spread = 0.0f64;
    for (k, a) in archs.iter().enumerate() {
        let ops = a.as_nb201().unwrap().ops;
        let want: f64 = ops
            .iter()
            .enumerate()
            .map(|(e, &op)| {
                let i = e * 5 + op as usize;
                b[i] as f64
                    + (0..dd)
                        .map(|j| w[i * dd + j] as f64 * (d[j] - mu[j]) as f64)
                        .sum::<f64>()
            })
            .sum();
        let got = (cached[k] - plain[k]) as f64;
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{a}: {got} vs {want}"
        );
        assert!(
            (direct[k] - cached[k]).abs() <= 1e-5 * cached[k].abs().max(1.0),
            "{a}: {} vs {}",
            direct[k],
            cached[k]
        );
        spread = spread.max(want.abs());
    }
    assert!(spread > 0.1, "the mix is not flat: {spread}");
}

/// The default weights' gated mix reports how far the data is from the meta-training tasks:
/// the novelty of the example's one set embedding and the gate at it, `exp(−(ν/r)²)` with the
/// radius the weights carry; weights without a mix report nothing.
#[test]
fn the_search_reports_the_data_fit_of_a_gated_mix() {
    let dir = root().join(DEFAULT);
    let engine = metad2a::Engine::load(&dir).unwrap();
    let data = example_data();
    let r = engine
        .search(&data, &metad2a::SearchConfig::default())
        .unwrap();
    let fit = r
        .data_fit
        .expect("the default weights have a gated cell mix");
    let mix = engine.predictor.cell_mix.as_ref().unwrap();
    let d = example_embedding(&engine);
    let nu = mix.novelty(&d).unwrap();
    assert!(
        (fit.novelty - nu).abs() <= 1e-5 * nu.max(1.0),
        "{} vs {nu}",
        fit.novelty
    );
    let m = metad2a::weights::Manifest::read(&dir).unwrap();
    let store = metad2a::weights::WeightStore::open(dir.join(&m.predictor.file)).unwrap();
    let radius = store.param_any("cell_mix.radius").unwrap().to_vec()[0] as f64;
    assert_eq!(fit.radius as f64, radius);
    let want = (-(nu as f64 / radius).powi(2)).exp();
    assert!(
        (fit.gate as f64 - want).abs() < 1e-5,
        "{} vs {want}",
        fit.gate
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["data_fit"]["gate"].is_number());
    let plain = metad2a::Engine::load(root().join("weights/nb201-lite0")).unwrap();
    let r = plain
        .search(&data, &metad2a::SearchConfig::default())
        .unwrap();
    assert!(r.data_fit.is_none());
    assert!(serde_json::to_value(&r).unwrap().get("data_fit").is_none());
}
