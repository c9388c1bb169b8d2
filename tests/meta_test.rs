//! The meta-test harness (feature `train`) on the committed example images with the shipped
//! weights and the NAS-Bench-201 table from `../shared`: every reported accuracy is the
//! table's value for the reported cell, and a rerun reads the NASWOT scores from its cache
//! and reproduces the first run exactly.
#![cfg(feature = "train")]

mod common;

use metad2a::space::nb201_table::Nb201Table;
use metad2a::space::Nb201Arch;
use metad2a::train::cell_net::NetConfig;
use metad2a::train::meta_test::{self, MetaTestConfig};

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn reports_table_accuracies_and_reuses_cached_naswot_scores() {
    let shared = need_shared!();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = metad2a::Engine::load(root.join("weights/nb201-lite0")).unwrap();
    let fx = metad2a::features::FeatureExtractor::builtin(metad2a::features::DEFAULT_RESOLUTION)
        .unwrap();
    let test = metad2a::features::readers::read_folder(
        &root.join("examples/data/fashion-mnist"),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let table = Nb201Table::load(shared.join("data/nb201/nats_bench.csv")).unwrap();
    let dir = common::temp_dir("meta-test");
    let cache = dir.join("naswot.jsonl");
    let cfg = MetaTestConfig {
        seeds: vec![3],
        per_class: 20,
        num_archs: 60,
        naswot: vec![2, 4],
        naswot_net: NetConfig {
            channels: 8,
            cells: 1,
            classes: 10,
        },
        naswot_batch: 16,
        naswot_resolution: 16,
        naswot_cache: Some(cache.clone()),
        ..MetaTestConfig::default()
    };
    let mut lines = Vec::new();
    let first = meta_test::run(&engine, &fx, &test, &table, &cfg, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert!(
        !lines.iter().any(|l| l.contains("from the cache")),
        "{lines:?}"
    );
    assert_eq!(first.len(), 1);
    let r = &first[0];
    let methods: Vec<&str> = r.picks.iter().map(|p| p.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "ours top-1",
            "ours best of top-30",
            "max FLOPs",
            "max params",
            "ImageNet16-120 table top-1",
            "ImageNet16-120 table best of top-30",
            "random-30",
            "NASWOT-2",
            "NASWOT-4"
        ]
    );
    // the cheap baselines, found here by a plain scan of the table
    let conv3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    assert_eq!(r.picks[2].arch, conv3);
    assert_eq!(r.picks[3].arch, conv3);
    let all: Vec<Nb201Arch> = Nb201Arch::all().collect();
    let in16 = |a: &Nb201Arch| table.get(a).unwrap().imagenet16_120;
    let best_in16 = all
        .iter()
        .copied()
        .reduce(|b, a| if in16(&a) > in16(&b) { a } else { b })
        .unwrap();
    assert_eq!(r.picks[4].arch, best_in16.to_string());
    let mut by_in16 = all.clone();
    by_in16.sort_by(|a, b| in16(b).total_cmp(&in16(a)));
    let c10 = |a: &Nb201Arch| table.get(a).unwrap().cifar10;
    let best_of_30 = by_in16[..30].iter().map(c10).fold(f64::MIN, f64::max);
    assert_eq!(r.picks[5].acc, best_of_30);
    for p in &r.picks {
        let a: Nb201Arch = p.arch.parse().unwrap();
        assert_eq!(p.acc, table.get(&a).unwrap().cifar10, "{}", p.method);
    }
    // the best of the shortlist is at least its first member, the best of all candidates at
    // least the best of the shortlist
    assert!(r.picks[1].acc >= r.picks[0].acc);
    assert!(r.generated_best >= r.picks[1].acc);
    assert!((30..=60).contains(&r.candidates), "{}", r.candidates);
    assert_eq!(r.images, 10 * 20, "per-class test images of each class");
    assert!(r.predictor_spearman.is_finite() && r.predictor_spearman.abs() <= 1.0);
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 1);

    // the rerun hits the cache and reproduces every pick
    let mut lines = Vec::new();
    let again = meta_test::run(&engine, &fx, &test, &table, &cfg, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("read from the cache")),
        "{lines:?}"
    );
    let picks = |r: &meta_test::SeedResult| {
        r.picks
            .iter()
            .map(|p| (p.method.clone(), p.arch.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(picks(&again[0]), picks(r));
    assert_eq!(again[0].predictor_spearman, r.predictor_spearman);

    // other images (another seed) miss the cache and add a line
    let other = MetaTestConfig {
        seeds: vec![4],
        ..cfg.clone()
    };
    let mut lines = Vec::new();
    meta_test::run(&engine, &fx, &test, &table, &other, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert!(!lines.iter().any(|l| l.contains("from the cache")));
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 2);
    let summary = meta_test::summarize(&again, &table).unwrap();
    assert_eq!(summary.seeds, 1);
    assert!(
        (summary.optimum - 94.37).abs() < 0.01,
        "{}",
        summary.optimum
    );
}
