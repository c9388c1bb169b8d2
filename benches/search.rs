//! Search latency per stage and end to end, at CIFAR-10 shape (10 classes) and CIFAR-100 shape
//! (100 classes), 500 candidates, 10 resamples, for 512-d features (the parity fixture's
//! models) and 1280-d features (official-size models with random weights: timing only).
//!
//! Datasets have 20 rows per class (the meta-test protocol: every set sample is then the same
//! set) and, at CIFAR-10 shape, also 100 rows per class (every set sample distinct).

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use metad2a::{Engine, SearchConfig};

fn bench_search(c: &mut Criterion) {
    let shared = common::shared();
    let mut setups = Vec::new();
    if let Some(s) = &shared {
        setups.push(("d512", 512, common::fixture_weights(s)));
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
            engine.search(&data, &ex).unwrap(); // warm the all-cell head cache
            g.bench_function(format!("{name}/exhaustive"), |b| {
                b.iter(|| engine.search(&data, &ex).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_search);
criterion_main!(benches);
