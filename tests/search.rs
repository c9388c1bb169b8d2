//! The search pipeline on the official-format NB201 fixture models (`../shared/parity/nb201`).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use metad2a::search::{Budget, Progress, SearchConfig};
use metad2a::space::nb201::NUM_ARCHS;
use metad2a::space::Arch;
use metad2a::space::Nb201Arch;
use metad2a::weights::import::ExportDtype;
use metad2a::{Dataset, Engine, Error};
use serde_json::Value;

/// The fixture models imported once (with the graph cache) for this test binary.
fn weights(shared: &Path) -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = common::temp_dir("search-weights");
        common::import_fixture(
            &shared.join("parity/nb201"),
            &out,
            ExportDtype::F32,
            false,
            true,
        );
        out
    })
}

fn engine(shared: &Path) -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::load(weights(shared)).unwrap())
}

/// A fixture dataset (`x.c10` or `x.c3`): 20 rows per class, class-contiguous.
fn fixture_data(shared: &Path, name: &str) -> Dataset {
    let t = common::read_tensors(&shared.join("parity/nb201/inputs.safetensors"));
    let (shape, v) = &t[name];
    Dataset::from_contiguous(v.clone(), shape[1], 20).unwrap()
}

/// The `x.c10` rows with 30 rows per class (20 real rows plus 10 perturbed copies), so that set
/// samples differ from one another.
fn wider_data(shared: &Path) -> Dataset {
    let base = fixture_data(shared, "x.c10");
    let mut rng = metad2a::rng::Rng::new(3, 3);
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    for c in 0..10u32 {
        for i in 0..30u32 {
            let row = base.row(c * 20 + i % 20);
            feats.extend(row.iter().map(|&x| {
                if i >= 20 {
                    x + 0.05 * rng.normal() as f32
                } else {
                    x
                }
            }));
            labels.push(c);
        }
    }
    Dataset::new(feats, 512, labels, None).unwrap()
}

fn small_cfg(seed: u64) -> SearchConfig {
    SearchConfig {
        seed,
        num_archs: 60,
        resamples: 4,
        top_k: 0,
        ..SearchConfig::default()
    }
}

/// A report's candidates with the exact bits of their scores.
fn key(r: &metad2a::SearchReport) -> Vec<(String, u32)> {
    r.candidates
        .iter()
        .map(|c| (c.arch.to_string(), c.score.to_bits()))
        .collect()
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn same_seed_same_result_other_seed_other_result() {
    let shared = need_shared!();
    let (e, data) = (engine(&shared), wider_data(&shared));
    let a = e.search(&data, &small_cfg(7)).unwrap();
    let b = e.search(&data, &small_cfg(7)).unwrap();
    assert_eq!(key(&a), key(&b));
    assert_eq!(a.counts.decoded, b.counts.decoded);
    let c = e.search(&data, &small_cfg(8)).unwrap();
    assert_ne!(key(&a), key(&c));
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn candidates_are_valid_unique_and_ranked() {
    let shared = need_shared!();
    let (e, data) = (engine(&shared), wider_data(&shared));
    let r = e.search(&data, &small_cfg(1)).unwrap();
    assert_eq!(r.candidates.len(), 60);
    assert_eq!(r.counts.ranked, 60);
    assert!(
        r.counts.decoded >= r.counts.valid
            && r.counts.valid >= r.counts.unique
            && r.counts.unique >= 60
    );
    assert!(!r.counts.capped);
    let mut seen = HashSet::new();
    for (i, c) in r.candidates.iter().enumerate() {
        let a: Nb201Arch = *c.arch.as_nb201().expect("an NB201 cell");
        assert!(Nb201Arch::from_graph(&a.to_graph()).is_some());
        assert!(seen.insert(a), "{} twice", c.arch);
        assert_eq!(c.rank, i + 1);
        if i > 0 {
            assert!(r.candidates[i - 1].score >= c.score, "not sorted by score");
        }
        let cost = a.cost(&Default::default());
        assert_eq!((c.flops, c.params), (cost.flops, cost.params));
    }
    // top_k trims the list and keeps the order
    let top = e
        .search(
            &data,
            &SearchConfig {
                top_k: 5,
                ..small_cfg(1)
            },
        )
        .unwrap();
    assert_eq!(top.candidates.len(), 5);
    for (x, y) in top.candidates.iter().zip(&r.candidates) {
        assert_eq!(x.arch, y.arch);
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn exhaustive_scores_equal_the_recorded_predictor_outputs() {
    let shared = need_shared!();
    // Its own engine: which exhaustive search of an engine this is matters below.
    let e = &Engine::load(weights(&shared)).unwrap();
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("parity/nb201/expected.json")).unwrap(),
    )
    .unwrap();
    let expected = common::read_tensors(&shared.join("parity/nb201/expected.safetensors"));
    let probes: Vec<Nb201Arch> = json["probe_archs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect();
    for ds in ["c10", "c3"] {
        // Every class has exactly 20 rows, so every set sample is the recorded dataset itself.
        let data = fixture_data(&shared, &format!("x.{ds}"));
        let cfg = SearchConfig {
            exhaustive: true,
            top_k: 0,
            ..SearchConfig::default()
        };
        let r = e.search(&data, &cfg).unwrap();
        assert_eq!(r.candidates.len(), NUM_ARCHS);
        assert_eq!(r.mode, metad2a::search::SearchMode::Exhaustive);
        // The engine's first exhaustive search computes the head's graph half chunk by chunk,
        // the second makes the all-cell table, later ones reuse it: the same bits each time.
        let bits = |r: &metad2a::SearchReport| -> Vec<(String, u32)> {
            r.candidates
                .iter()
                .map(|c| (c.arch.to_string(), c.score.to_bits()))
                .collect()
        };
        for _ in 0..2 {
            assert_eq!(bits(&e.search(&data, &cfg).unwrap()), bits(&r));
        }
        let by_arch: std::collections::HashMap<String, f32> = r
            .candidates
            .iter()
            .map(|c| (c.arch.to_string(), c.score))
            .collect();
        let got: Vec<f32> = probes.iter().map(|a| by_arch[&a.to_string()]).collect();
        common::assert_close(
            &format!("exhaustive pred.y.{ds}"),
            &got,
            &expected[&format!("pred.y.{ds}")].1,
            1e-4,
        );
        // Engine::score gives the same numbers for the same architectures.
        let probes: Vec<Arch> = probes.iter().map(|&a| a.into()).collect();
        let direct = e.score(&data, &probes, &cfg).unwrap();
        common::assert_close("score", &direct, &got, 1e-6);
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn graph_cache_equals_direct_embeddings() {
    let shared = need_shared!();
    let e = engine(&shared);
    assert!(e.has_graph_cache());
    let archs: Vec<Arch> = (0..NUM_ARCHS)
        .step_by(211)
        .map(|c| Nb201Arch::from_code(c).unwrap().into())
        .collect();
    let cached = e.graph_embeddings(&archs).unwrap();
    let graphs: Vec<_> = archs.iter().map(|a| a.to_graph()).collect();
    let direct = e.predictor.graph_embedding(&graphs).unwrap();
    common::assert_close("cache", &cached, &direct, 1e-6);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn budgets_filter_candidates() {
    let shared = need_shared!();
    let (e, data) = (engine(&shared), wider_data(&shared));
    let max_flops = 100_000_000;
    let cfg = SearchConfig {
        budget: Budget {
            max_flops: Some(max_flops),
            ..Budget::default()
        },
        ..small_cfg(2)
    };
    let r = e.search(&data, &cfg).unwrap();
    assert!(!r.candidates.is_empty());
    assert!(r.candidates.iter().all(|c| c.flops <= max_flops));
    assert_eq!(r.counts.unique, r.counts.ranked + r.counts.over_budget);
    let ex = e
        .search(
            &data,
            &SearchConfig {
                exhaustive: true,
                top_k: 0,
                ..cfg.clone()
            },
        )
        .unwrap();
    let within = Nb201Arch::all()
        .filter(|a| a.cost(&Default::default()).flops <= max_flops)
        .count();
    assert_eq!(ex.candidates.len(), within);
    assert_eq!(ex.counts.over_budget, NUM_ARCHS - within);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn cap_on_decoded_graphs_is_reported() {
    let shared = need_shared!();
    let (e, data) = (engine(&shared), wider_data(&shared));
    let cfg = SearchConfig {
        num_archs: 5000,
        max_decoded: Some(300),
        ..small_cfg(3)
    };
    let mut progress = 0;
    let r = e
        .search_with_progress(&data, &cfg, &mut |p| {
            if let Progress::Generating { decoded, .. } = p {
                assert!(decoded <= 300);
                progress += 1;
            }
        })
        .unwrap();
    assert!(r.counts.capped);
    assert_eq!(r.counts.decoded, 300);
    assert_eq!(progress, 3);
    assert!(r.candidates.len() < 5000);
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn concurrent_searches_equal_sequential_ones() {
    let shared = need_shared!();
    let (e, data) = (engine(&shared), wider_data(&shared));
    // architectures and the exact bits of their scores
    let run = |s: u64| key(&e.search(&data, &small_cfg(s)).unwrap());
    let seq: Vec<_> = (0..4).map(run).collect();
    // 8 threads on one engine, two per seed
    let par: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8u64).map(|t| sc.spawn(move || run(t % 4))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, p) in par.iter().enumerate() {
        assert_eq!(p, &seq[t % 4], "thread {t}");
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn decoding_several_batches_at_once_changes_nothing() {
    let shared = need_shared!();
    let one = engine(&shared);
    let mut many = Engine::load(weights(&shared)).unwrap();
    many.set_decode_lookahead(8);
    // `one` decodes batches sized to the need (32 to 100 graphs), `many` 8 full batches at once.
    // On the fixture data every set sample is the whole dataset: `one` then decodes ahead of
    // its batches, up to 800 graphs at a time, and graphs share their work.
    for (wide, data) in [
        (true, wider_data(&shared)),
        (false, fixture_data(&shared, "x.c10")),
    ] {
        for (s, n) in [(0, 300), (1, 300), (2, 7), (3, 60)] {
            let cfg = SearchConfig {
                num_archs: n,
                ..small_cfg(s)
            };
            let (a, b) = (
                one.search(&data, &cfg).unwrap(),
                many.search(&data, &cfg).unwrap(),
            );
            assert_eq!(key(&a), key(&b));
            let counts = |c: &metad2a::search::Counts| {
                let mut v = serde_json::to_value(c).unwrap();
                v.as_object_mut().unwrap().remove("set_samples");
                v
            };
            assert_eq!(counts(&a.counts), counts(&b.counts));
            assert!(a.counts.set_samples <= b.counts.set_samples);
            assert!(a.counts.set_samples >= a.counts.decoded);
            if n == 300 {
                // enough candidates to need several batches; the last batch is consumed
                // part-way
                assert!(a.counts.decoded > 100, "more than one batch was needed");
            } else if wide {
                assert!(a.counts.set_samples < 100, "{:?}", a.counts);
            }
        }
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn bad_datasets_are_refused() {
    let shared = need_shared!();
    let e = engine(&shared);
    let base = fixture_data(&shared, "x.c10");
    // a class with fewer than 20 rows: an error, unless sampling with replacement is asked for
    let keep: Vec<usize> = (0..200).filter(|i| !(20..25).contains(i)).collect();
    let small = Dataset::new(
        keep.iter()
            .flat_map(|&i| base.row(i as u32).to_vec())
            .collect(),
        512,
        keep.iter().map(|&i| (i / 20) as u32).collect(),
        None,
    )
    .unwrap();
    let err = e.search(&small, &small_cfg(0)).unwrap_err().to_string();
    assert!(err.contains("class 1 has 15 rows"), "{err}");
    let ok = e
        .search(
            &small,
            &SearchConfig {
                with_replacement: true,
                ..small_cfg(0)
            },
        )
        .unwrap();
    assert_eq!(ok.candidates.len(), 60);
    // features of another width
    let narrow = Dataset::from_contiguous(vec![0.5; 200 * 64], 64, 20).unwrap();
    let err = e.search(&narrow, &small_cfg(0)).unwrap_err().to_string();
    assert!(
        err.contains("64-dimensional") && err.contains("512-dimensional"),
        "{err}"
    );
    // zero candidates or resamples
    let err = e
        .search(
            &base,
            &SearchConfig {
                resamples: 0,
                ..small_cfg(0)
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), metad2a::ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn bad_feature_files_are_refused() {
    let dir = common::temp_dir("features");
    let write = |name: &str, tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>| {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let p = dir.join(name);
        std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
        p
    };
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    use safetensors::Dtype::{F32, I64};
    let cases = [
        (
            write(
                "nan.st",
                vec![
                    (
                        "features",
                        F32,
                        vec![2, 2],
                        f32s(&[1.0, f32::NAN, 0.0, 1.0]),
                    ),
                    ("labels", I64, vec![2], i64s(&[0, 1])),
                ],
            ),
            "non-finite",
        ),
        (
            write(
                "range.st",
                vec![
                    ("features", F32, vec![2, 1], f32s(&[1.0, 2.0])),
                    ("labels", I64, vec![2], i64s(&[0, -3])),
                ],
            ),
            "out of range",
        ),
        (
            write(
                "gap.st",
                vec![
                    ("features", F32, vec![2, 1], f32s(&[1.0, 2.0])),
                    ("labels", I64, vec![2], i64s(&[0, 2])),
                ],
            ),
            "class 1 has no rows",
        ),
        (
            write(
                "nolabels.st",
                vec![("features", F32, vec![2, 1], f32s(&[1.0, 2.0]))],
            ),
            "no `labels`",
        ),
        (
            write(
                "shape.st",
                vec![
                    ("features", F32, vec![2], f32s(&[1.0, 2.0])),
                    ("labels", I64, vec![2], i64s(&[0, 1])),
                ],
            ),
            "[N, D] expected",
        ),
        (
            write(
                "count.st",
                vec![
                    ("features", F32, vec![2, 1], f32s(&[1.0, 2.0])),
                    ("labels", I64, vec![3], i64s(&[0, 1, 1])),
                ],
            ),
            "one per feature row",
        ),
        (
            write(
                "empty-rows.st",
                vec![
                    ("features", F32, vec![0, 4], vec![]),
                    ("labels", I64, vec![0], vec![]),
                ],
            ),
            "empty",
        ),
    ];
    for (path, needle) in &cases {
        let e = Dataset::load(path).unwrap_err().to_string();
        assert!(e.contains(needle), "{}: {e}", path.display());
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
    let empty = dir.join("empty.st");
    std::fs::write(&empty, b"").unwrap();
    assert!(Dataset::load(&empty)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert!(matches!(
        Dataset::load(dir.join("missing.st")).unwrap_err(),
        Error::Io { .. }
    ));
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn engine_load_detects_damaged_directories() {
    let shared = need_shared!();
    let src = weights(&shared);
    let copy = |tag: &str| {
        let d = common::temp_dir(tag);
        for f in std::fs::read_dir(src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
        }
        d
    };
    // truncated model file
    let d = copy("trunc");
    let p = d.join("generator.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    let e = Engine::load(&d).unwrap_err().to_string();
    assert!(e.contains("truncated or replaced"), "{e}");
    // no manifest
    let d = copy("nomanifest");
    std::fs::remove_file(d.join("manifest.json")).unwrap();
    assert!(matches!(Engine::load(&d).unwrap_err(), Error::Io { .. }));
    // one byte changed, same size: the checksum catches it
    let d = copy("flip");
    let p = d.join("predictor.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let k = b.len() - 100;
    b[k] ^= 0x40;
    std::fs::write(&p, &b).unwrap();
    let e = Engine::load(&d).unwrap_err().to_string();
    assert!(
        e.contains("BLAKE3") && e.contains("changed or damaged"),
        "{e}"
    );
    // per-tensor checksums: a damaged tensor the search reads fails the load, naming it; one
    // it never reads (the graph encoder, which the graph cache stands in for) fails only when
    // used, and verify() finds it
    let flip_tensor = |d: &std::path::Path, name: &str| {
        let p = d.join("predictor.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let (n, meta) = safetensors::SafeTensors::read_metadata(&b).unwrap();
        let info = meta.info(name).unwrap();
        b[8 + n + info.data_offsets.0 + 5] ^= 0x08;
        std::fs::write(&p, &b).unwrap();
    };
    let d = copy("flip-head");
    flip_tensor(&d, "pred_fc.0.weight");
    let e = Engine::load(&d).unwrap_err().to_string();
    assert!(
        e.contains("pred_fc.0.weight") && e.contains("changed or damaged"),
        "{e}"
    );
    let d = copy("flip-encoder");
    flip_tensor(&d, "grue_forward.weight_hh");
    let damaged = Engine::load(&d).unwrap();
    let sound = Engine::load(src).unwrap();
    let data = fixture_data(&shared, "x.c10");
    assert_eq!(
        key(&damaged.search(&data, &small_cfg(1)).unwrap()),
        key(&sound.search(&data, &small_cfg(1)).unwrap())
    );
    let e = damaged.predictor.graph_encoder().unwrap_err().to_string();
    assert!(
        e.contains("grue_forward.weight_hh") && e.contains("changed or damaged"),
        "{e}"
    );
    assert!(sound.predictor.graph_encoder().is_ok());
    let e = damaged.verify().unwrap_err().to_string();
    assert!(e.contains("changed or damaged"), "{e}");
    // a manifest from before BLAKE3 (sha256 only) is checked by its sha256
    let strip = |d: &std::path::Path| {
        let p = d.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        for k in ["generator", "predictor"] {
            let o = m[k].as_object_mut().unwrap();
            assert!(o.remove("blake3").is_some());
            assert!(o.remove("tensors_blake3").is_some());
        }
        std::fs::write(&p, serde_json::to_string(&m).unwrap()).unwrap();
    };
    let d = copy("sha256-only");
    strip(&d);
    Engine::load(&d).unwrap().verify().unwrap();
    let p = d.join("predictor.safetensors");
    std::fs::write(&p, &b).unwrap();
    let e = Engine::load(&d).unwrap_err().to_string();
    assert!(
        e.contains("sha256") && e.contains("changed or damaged"),
        "{e}"
    );
    // a graph cache from other weights, and a damaged one
    let d = copy("cache");
    let cache = d.join(metad2a::search::graph_cache::FILE_NAME);
    let emb = vec![0.5f32; NUM_ARCHS * 56];
    metad2a::search::graph_cache::GraphCache::write(&cache, &emb, 56, "0123").unwrap();
    let e = Engine::load(&d).unwrap_err().to_string();
    assert!(e.contains("graph cache was computed from predictor"), "{e}");
    // The content is checked block by block as a search reads it (every block for an
    // exhaustive search), the whole of it by verify(); the load does not check it. One byte changed in the
    // row of a cell the search ranks, and in a block of rows it never reads:
    let data = fixture_data(&shared, "x.c10");
    let intact = engine(&shared).search(&data, &small_cfg(1)).unwrap();
    let ranked: Vec<usize> = intact
        .candidates
        .iter()
        .map(|c| c.arch.as_nb201().unwrap().code())
        .collect();
    let block = metad2a::search::graph_cache::BLOCK_ROWS;
    let unread = (0..NUM_ARCHS)
        .find(|&c| ranked.iter().all(|&r| r / block != c / block))
        .unwrap();
    let damage = |tag: &str, code: usize| {
        let d = copy(tag);
        let cache = d.join(metad2a::search::graph_cache::FILE_NAME);
        let mut b = std::fs::read(&cache).unwrap();
        let header = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[8 + header + code * 56 * 4 + 5] ^= 1;
        std::fs::write(&cache, &b).unwrap();
        d
    };
    let exhaustive = SearchConfig {
        exhaustive: true,
        ..small_cfg(1)
    };
    let d = damage("cache2", ranked[0]);
    let damaged = Engine::load(&d).unwrap();
    let e = damaged
        .search(&data, &small_cfg(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not match their checksum"), "{e}");
    let e = damaged.verify().unwrap_err().to_string();
    assert!(e.contains("does not match its checksum"), "{e}");
    let e = Engine::load(&d)
        .unwrap()
        .search(&data, &exhaustive)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not match their checksum"), "{e}");
    let d = damage("cache3", unread);
    let damaged = Engine::load(&d).unwrap();
    assert_eq!(
        key(&damaged.search(&data, &small_cfg(1)).unwrap()),
        key(&intact),
        "a search that reads only intact rows"
    );
    let e = damaged.verify().unwrap_err().to_string();
    assert!(e.contains("does not match its checksum"), "{e}");
    let e = damaged.search(&data, &exhaustive).unwrap_err().to_string();
    assert!(e.contains("do not match their checksum"), "{e}");
    // files changed after loading: the engine keeps working, verify() says so
    let d = copy("later");
    let engine = Engine::load(&d).unwrap();
    engine.verify().unwrap();
    let data = fixture_data(&shared, "x.c10");
    let answer = |e: &Engine| key(&e.search(&data, &small_cfg(1)).unwrap());
    let before = answer(&engine);
    let p = d.join("generator.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let k = b.len() / 2;
    b[k] ^= 0x10;
    // replaced by rename, as every writer of this crate does: the mapping keeps the old file
    let tmp = d.join("g.tmp");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    let e = engine.verify().unwrap_err().to_string();
    assert!(e.contains("changed or damaged"), "{e}");
    assert_eq!(
        answer(&engine),
        before,
        "the loaded engine keeps the old file's answers"
    );
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn cli_search_json_and_table() {
    let shared = need_shared!();
    let dir = weights(&shared);
    let tmp = common::temp_dir("cli-search");
    let feats = tmp.join("c10.safetensors");
    let bin = env!("CARGO_BIN_EXE_metad2a");
    common::output_ok(
        std::process::Command::new(bin)
            .args(["features", "--tensor"])
            .arg(format!(
                "{}:x.c10",
                shared.join("parity/nb201/inputs.safetensors").display()
            ))
            .args(["--rows-per-class", "20", "--out"])
            .arg(&feats),
    );
    let csv = shared.join("data/nb201/nats_bench.csv");
    let out = common::output_ok(
        std::process::Command::new(bin)
            .args([
                "search",
                "--json",
                "--num-archs",
                "50",
                "--top-k",
                "3",
                "--seed",
                "4",
                "--weights",
            ])
            .arg(dir)
            .arg("--features")
            .arg(&feats)
            .arg("--nb201")
            .arg(&csv),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["space"], "nb201");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 3);
    assert_eq!(v["counts"]["ranked"], 50);
    // benchmark facts come from the table row of the candidate's architecture
    let table = std::fs::read_to_string(&csv).unwrap();
    let c0 = &v["candidates"][0];
    let idx = c0["nb201"]["index"].as_u64().unwrap() as usize;
    let row: Vec<&str> = table.lines().nth(idx + 1).unwrap().split(',').collect();
    assert_eq!(row[3], c0["arch"].as_str().unwrap());
    assert!(
        (row[0].parse::<f64>().unwrap() - c0["nb201"]["cifar10"].as_f64().unwrap()).abs() < 1e-9
    );
    // the table view
    let out = std::process::Command::new(bin)
        .args(["search", "--num-archs", "20", "--weights"])
        .arg(dir)
        .arg("--features")
        .arg(&feats)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rank") && text.contains("architecture") && text.contains("|+|"),
        "{text}"
    );
    // a bad input exits non-zero with the message
    let out = std::process::Command::new(bin)
        .args(["search", "--weights"])
        .arg(dir)
        .args(["--features", "/nonexistent/file.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: /nonexistent/file.safetensors"),
        "{err}"
    );
}
