//! Search latency per stage and end to end, at CIFAR-10 shape (10 classes) and CIFAR-100 shape
//! (100 classes), 500 candidates, 10 resamples, for 512-d features (the parity fixture's
//! models) and 1280-d features (official-size models with random weights: timing only).
//!
//! Datasets have 20 rows per class (the meta-test protocol: every set sample is then the same
//! set) and, at CIFAR-10 shape, also 100 rows per class (every set sample distinct).
//!
//! `search-shipped`: the default weights (`weights/nb201-lite0-ranker`) on the committed example
//! images, load, search and exhaustive scoring.
//!
//! `search-mbv3`: the MobileNetV3 space with the fixture's official-size models (512-d), CIFAR-10
//! shape (10 classes x 100 rows), 200 candidates, 10 resamples. The fixture's briefly trained
//! generator repeats itself (a few dozen distinct subnets in thousands of decodes), so the
//! stages are timed at the sizes of a 200-candidate search instead: 200 set encodings and
//! decodes (one graph per set sample, the official loop), and ranking 200 distinct random
//! subnets; the end-to-end time of such a search is their sum.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use metad2a::{Engine, SearchConfig};

/// The shipped default weights on the committed example images (10 classes x 20 images, the
/// CIFAR-10 meta-test shape with real 1280-d backbone features).
fn bench_shipped(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("weights/nb201-lite0-ranker");
    let imgs = metad2a::features::readers::read_folder(
        &root.join("examples/data/fashion-mnist"),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let fx = metad2a::features::FeatureExtractor::builtin(160).unwrap();
    let data = metad2a::Dataset::new(
        fx.extract(&imgs.images, &mut |_, _| {}),
        metad2a::features::FEATURE_DIM,
        imgs.labels.clone(),
        None,
    )
    .unwrap();
    let mut g = c.benchmark_group("search-shipped");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("load", |b| b.iter(|| Engine::load(&dir).unwrap()));
    let engine = Engine::load(&dir).unwrap();
    let cfg = SearchConfig::default();
    let (archs, counts, _) = engine.generate(&data, &cfg).unwrap();
    eprintln!(
        "shipped c10-20pc: {} candidates from {} decoded graphs",
        archs.len(),
        counts.decoded
    );
    g.bench_function("c10-20pc/end_to_end", |b| {
        b.iter(|| engine.search(&data, &cfg).unwrap())
    });
    let ex = SearchConfig {
        exhaustive: true,
        ..SearchConfig::default()
    };
    // The second exhaustive search of an engine makes the all-cell table later ones reuse.
    for _ in 0..2 {
        engine.search(&data, &ex).unwrap();
    }
    g.bench_function("c10-20pc/exhaustive", |b| {
        b.iter(|| engine.search(&data, &ex).unwrap())
    });
    g.finish();
}

fn bench_search(c: &mut Criterion) {
    let shared = common::shared();
    let mut setups = Vec::new();
    if let Some(s) = &shared {
        setups.push(("d512", 512, common::fixture_weights(s, "nb201")));
    }
    setups.push(("d1280", 1280, common::random_weights(1280)));
    for (tag, dim, dir) in &setups {
        let mut g = c.benchmark_group(format!("search-{tag}"));
        g.sample_size(15)
            .measurement_time(Duration::from_secs(6))
            .warm_up_time(Duration::from_secs(1));
        g.bench_function("load", |b| b.iter(|| Engine::load(dir).unwrap()));
        let engine = Engine::load(dir).unwrap();
        for (shape, classes, per) in [("c10", 10, 20), ("c10", 10, 100), ("c100", 100, 20)] {
            let data = common::dataset(classes, per, *dim, shared.as_deref());
            let cfg = SearchConfig::default();
            let name = format!("{shape}-{per}pc");
            let (archs, counts, _) = engine.generate(&data, &cfg).unwrap();
            eprintln!(
                "{tag} {name}: {} candidates from {} decoded graphs",
                archs.len(),
                counts.decoded
            );
            g.bench_function(format!("{name}/end_to_end"), |b| {
                b.iter(|| engine.search(&data, &cfg).unwrap())
            });
            if per == 20 && classes == 10 {
                let cfg100 = SearchConfig {
                    num_archs: 100,
                    ..SearchConfig::default()
                };
                g.bench_function(format!("{name}/end_to_end_100"), |b| {
                    b.iter(|| engine.search(&data, &cfg100).unwrap())
                });
            }
            g.bench_function(format!("{name}/generate"), |b| {
                b.iter(|| engine.generate(&data, &cfg).unwrap())
            });
            g.bench_function(format!("{name}/rank"), |b| {
                b.iter(|| engine.score(&data, &archs, &cfg).unwrap())
            });
            let ex = SearchConfig {
                exhaustive: true,
                ..SearchConfig::default()
            };
            // The second exhaustive search makes the all-cell table later ones reuse.
            for _ in 0..2 {
                engine.search(&data, &ex).unwrap();
            }
            g.bench_function(format!("{name}/exhaustive"), |b| {
                b.iter(|| engine.search(&data, &ex).unwrap())
            });
        }
        g.finish();
    }
}

fn bench_mbv3(c: &mut Criterion) {
    let Some(shared) = common::shared() else {
        return;
    };
    let engine = Engine::load(common::fixture_weights(&shared, "mbv3")).unwrap();
    let data = common::dataset(10, 100, 512, Some(&shared));
    let cfg = SearchConfig {
        num_archs: 200,
        max_decoded: Some(200),
        ..SearchConfig::default()
    };
    let mut rng = metad2a::rng::Rng::new(5, 5);
    let mut archs = std::collections::HashSet::new();
    while archs.len() < 200 {
        archs.insert(metad2a::space::Arch::Mbv3(
            metad2a::space::Mbv3Arch::random(&mut rng),
        ));
    }
    let archs: Vec<_> = archs.into_iter().collect();
    let mut g = c.benchmark_group("search-mbv3");
    g.sample_size(15)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("c10-100pc/generate_200_decodes", |b| {
        b.iter(|| engine.generate(&data, &cfg).unwrap())
    });
    g.bench_function("c10-100pc/rank_200", |b| {
        b.iter(|| engine.score(&data, &archs, &cfg).unwrap())
    });
    g.finish();
}

/// The same searches on the GPU (feature `cuda`; skipped without a usable GPU): set encoding,
/// decoding and ranking on the device, beside the CPU engine on the same data in the same run.
/// Every generation batch and the ranking end in a device-to-host copy, so times include
/// device synchronisation. Cases: the fixture's models at CIFAR-10 and CIFAR-100 shape (500
/// candidates, 10 resamples), exhaustive scoring of all 15,625 cells, and the shipped weights
/// at CIFAR-10 shape.
#[cfg(feature = "cuda")]
fn bench_gpu(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The shipped weights need nothing from ../shared (their data is generated); the fixture's
    // models do.
    let shared = common::shared();
    let mut cases = vec![("shipped", root.join("weights/nb201-lite0-ranker"), 1280)];
    match &shared {
        Some(s) => cases.insert(0, ("fixture", common::fixture_weights(s, "nb201"), 512)),
        None => eprintln!(
            "\n**************** SKIPPED: search-gpu with the fixture's models (no ../shared) ****************\n"
        ),
    }
    let mut g = c.benchmark_group("search-gpu");
    g.sample_size(15)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for (weights, dir, dim) in &cases {
        let (weights, dim) = (*weights, *dim);
        let cpu = Engine::load(dir).unwrap();
        let mut dev = Engine::load(dir).unwrap();
        match dev.use_cuda() {
            Ok(name) => eprintln!("search-gpu: {weights} weights on {name}"),
            Err(why) => {
                eprintln!("\n**************** SKIPPED: search-gpu ({why}) ****************\n");
                return;
            }
        }
        let shapes: &[(&str, usize)] = if weights == "fixture" {
            &[("c10", 10), ("c100", 100)]
        } else {
            &[("c10", 10)]
        };
        for &(shape, classes) in shapes {
            let data = common::dataset(classes, 20, dim, shared.as_deref());
            let cfg = SearchConfig::default();
            let (a, b) = (
                cpu.search(&data, &cfg).unwrap(),
                dev.search(&data, &cfg).unwrap(),
            );
            eprintln!(
                "search-gpu {weights} {shape}: GPU sets {:.2} ms, decode {:.2} ms, rank {:.2} ms; CPU {:.2} / {:.2} / {:.2} ms",
                b.timings.sets_ms, b.timings.decode_ms, b.timings.rank_ms,
                a.timings.sets_ms, a.timings.decode_ms, a.timings.rank_ms
            );
            for (engine, on) in [(&dev, "gpu"), (&cpu, "cpu")] {
                g.bench_function(format!("{weights}-{shape}-20pc/end_to_end/{on}"), |b| {
                    b.iter(|| engine.search(&data, &cfg).unwrap())
                });
            }
            if shape == "c10" {
                let ex = SearchConfig {
                    exhaustive: true,
                    ..SearchConfig::default()
                };
                for (engine, on) in [(&dev, "gpu"), (&cpu, "cpu")] {
                    engine.search(&data, &ex).unwrap();
                    g.bench_function(format!("{weights}-{shape}-20pc/exhaustive/{on}"), |b| {
                        b.iter(|| engine.search(&data, &ex).unwrap())
                    });
                }
            }
        }
    }
    g.finish();
}

#[cfg(not(feature = "cuda"))]
fn bench_gpu(_: &mut Criterion) {}

criterion_group!(benches, bench_shipped, bench_search, bench_mbv3, bench_gpu);
criterion_main!(benches);
