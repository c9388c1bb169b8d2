//! Shared setup of the benches: weights directories and datasets of the benchmark shapes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use metad2a::model::dims::{GeneratorDims, PredictorDims};
use metad2a::model::inventory::{self, pytorch_init};
use metad2a::rng::Rng;
use metad2a::search::graph_cache::{self, GraphCache};
use metad2a::weights::import::{ExportDtype, ImportOptions};
use metad2a::weights::manifest::{InputFile, Manifest, ModelEntry, Provenance, FORMAT, VERSION};
use metad2a::weights::serialize;
use metad2a::Dataset;

pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("parity/nb201/predictor_ckpt.pt").is_file() {
        Some(p)
    } else {
        eprintln!("\n*** SKIPPED: ../shared not found; the 512-d benches need its fixtures ***\n");
        None
    }
}

fn bench_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metad2a-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The parity fixture's models of `space` (`nb201` or `mbv3`; 512-d features), imported (with
/// the graph cache for NB201).
pub fn fixture_weights(shared: &Path, space: &str) -> PathBuf {
    let dir = bench_dir(&format!("{space}-d512"));
    let s = shared.join("parity").join(space);
    metad2a::search::import_with_graph_cache(&ImportOptions {
        generator: s.join("generator_ckpt.pt"),
        predictor: s.join("predictor_ckpt.pt"),
        out: dir.clone(),
        dtype: ExportDtype::F32,
        keep_unused: false,
        command: "bench".into(),
        data: "parity fixture".into(),
        feature_extractor: "fixture".into(),
    })
    .unwrap();
    dir
}

/// Official-size NB201 models for `feat_dim`-d features with PyTorch's random initialisation:
/// for timing only (the costs do not depend on the values).
pub fn random_weights(feat_dim: usize) -> PathBuf {
    let dir = bench_dir(&format!("d{feat_dim}"));
    let set = inventory::official_set_dims(feat_dim);
    let g = GeneratorDims {
        set,
        ..inventory::nb201_generator_dims()
    };
    let p = PredictorDims {
        set,
        ..inventory::nb201_predictor_dims()
    };
    let gb = serialize(
        &pytorch_init(&inventory::generator(&g), 1),
        ExportDtype::F32,
        None,
    )
    .unwrap();
    let pb = serialize(
        &pytorch_init(&inventory::predictor(&p), 2),
        ExportDtype::F32,
        None,
    )
    .unwrap();
    std::fs::write(dir.join("generator.safetensors"), &gb).unwrap();
    std::fs::write(dir.join("predictor.safetensors"), &pb).unwrap();
    let entry = |file: &str, b: &[u8], dims: serde_json::Value| {
        ModelEntry::describe(file, b, dims, vec![]).unwrap()
    };
    let m = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        space: metad2a::space::Space::Nb201,
        dtype: "f32".into(),
        feature_extractor: format!("random {feat_dim}-d (bench)"),
        generator: entry(
            "generator.safetensors",
            &gb,
            serde_json::to_value(g).unwrap(),
        ),
        predictor: entry(
            "predictor.safetensors",
            &pb,
            serde_json::to_value(p).unwrap(),
        ),
        provenance: Provenance {
            source: "random initialisation, for benchmarks only".into(),
            inputs: Vec::<InputFile>::new(),
            command: "bench".into(),
            tool: "bench".into(),
            licence: "n/a".into(),
            data: "none".into(),
            commit: None,
        },
        extra: Default::default(),
    };
    m.write(&dir).unwrap();
    let pred = metad2a::model::Predictor::load_file(dir.join("predictor.safetensors")).unwrap();
    let emb = GraphCache::compute(&pred, &mut |_, _| {}).unwrap();
    GraphCache::write(
        &dir.join(graph_cache::FILE_NAME),
        &emb,
        p.nz,
        &m.predictor.sha256,
    )
    .unwrap();
    dir
}

/// A dataset of `classes` classes with `per_class` rows of `dim` features. For 10 classes of
/// 512-d features the rows of the fixture's real 10-class dataset `x.c10` are used (with small
/// noise added beyond its 20 rows per class); otherwise rows are Gaussian around a random
/// class centre.
pub fn dataset(classes: usize, per_class: usize, dim: usize, shared: Option<&Path>) -> Dataset {
    let base = shared.and_then(|s| {
        (dim == 512).then(|| {
            let t = candle_core::safetensors::load(
                s.join("parity/nb201/inputs.safetensors"),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            t["x.c10"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
    });
    let mut rng = Rng::new(77, classes as u64 * 1000 + per_class as u64);
    let mut feats = Vec::with_capacity(classes * per_class * dim);
    let mut labels = Vec::with_capacity(classes * per_class);
    for c in 0..classes {
        let centre: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
        for i in 0..per_class {
            for j in 0..dim {
                let v = match &base {
                    Some(b) if classes == 10 => {
                        b[((c * 20 + i % 20) * dim) + j]
                            + if i >= 20 {
                                0.05 * rng.normal() as f32
                            } else {
                                0.0
                            }
                    }
                    _ => centre[j] + 0.5 * rng.normal() as f32,
                };
                feats.push(v);
            }
            labels.push(c as u32);
        }
    }
    Dataset::new(feats, dim, labels, None).unwrap()
}
