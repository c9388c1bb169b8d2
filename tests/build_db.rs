//! The meta-database builder (feature `train`): a run killed mid-way resumes without losing or
//! repeating records, and two shards merged give exactly the records of a single run.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use metad2a::train::build_db::{self, BuildConfig, BuiltRecord, CellMix, CellOrigin};
use metad2a::train::cell_net::NetConfig;
use metad2a::train::cell_train::TrainConfig;
use metad2a::train::metadb::MetaDb;

/// Two small datasets of learnable classes: stripes whose direction and period depend on the
/// class, with per-image noise.
fn sources(dir: &Path) {
    let mut state = 12345u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 64) as u8
    };
    for (ds, classes) in [("stripes", 3usize), ("checks", 3)] {
        for c in 0..classes {
            let d = dir.join(ds).join(format!("class{c}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..40 {
                let mut px = Vec::with_capacity(12 * 12);
                for y in 0..12u32 {
                    for x in 0..12u32 {
                        let v = if ds == "stripes" {
                            (x + y * c as u32) / (c as u32 + 1)
                        } else {
                            (x / (c as u32 + 1)) ^ (y / 2)
                        };
                        px.push(if v % 2 == 0 { 40 } else { 190 } + noise());
                    }
                }
                common::write_png_bytes(&d.join(format!("{i}.png")), 12, 12, true, &px);
            }
        }
    }
}

fn config() -> BuildConfig {
    BuildConfig {
        tasks: 4,
        archs_per_task: 3,
        min_classes: 2,
        max_classes: 3,
        feature_rows: 8,
        feature_resolution: 32,
        train_per_class: 30,
        valid_per_class: 10,
        valid_every: 4,
        seed: 7,
        protocol: TrainConfig {
            net: NetConfig {
                channels: 8,
                cells: 1,
                classes: 0,
            },
            epochs: 3,
            batch: 16,
            ..TrainConfig::default()
        },
        resolution: 12,
        cell_mix: CellMix {
            stratified: 1,
            proposed: 0,
            proposal_pool: 0,
        },
        protocol_name: "test-protocol".into(),
        naswot_batch: 8,
    }
}

fn fresh_db(src: &Path, tag: &str) -> PathBuf {
    let db = common::temp_dir(tag);
    build_db::init(src, &db, &config(), None, &mut |_| {}).unwrap();
    db
}

/// The records of `records.jsonl` without their timings.
fn records(db: &Path) -> Vec<(usize, String, f64, f64)> {
    std::fs::read_to_string(db.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r = serde_json::from_str::<BuiltRecord>(l).unwrap().record;
            (r.task, r.arch, r.acc, r.train_acc.unwrap())
        })
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn killed_run_resumes_and_shards_merge_to_the_single_run() {
    let src = common::temp_dir("db-sources");
    sources(&src);
    let planned = config().tasks * config().archs_per_task;

    // A single uninterrupted run.
    let single = fresh_db(&src, "db-single");
    let done = build_db::run_shard(&single, 0, 1, &mut |_| {}).unwrap();
    assert_eq!(done.len(), planned);
    assert_eq!(build_db::merge(&single, false).unwrap(), planned);
    let want = records(&single);
    assert_eq!(want.len(), planned);
    // the records are real measurements: accuracies vary and some beat chance
    assert!(want.iter().all(|r| (0.0..=100.0).contains(&r.2)));
    assert!(
        want.iter().any(|r| r.2 != want[0].2),
        "all accuracies equal: {want:?}"
    );
    // every record names its protocol and carries the cheap scores
    for l in std::fs::read_to_string(single.join("records.jsonl"))
        .unwrap()
        .lines()
    {
        let b: BuiltRecord = serde_json::from_str(l).unwrap();
        assert!(b.origin.is_some(), "{l}");
        assert!(b.train_images.unwrap() >= 2 * 24, "{l}");
        let r = b.record;
        assert_eq!(r.protocol.as_deref(), Some("test-protocol"));
        assert_eq!(r.epoch_losses.as_ref().map(Vec::len), Some(3), "{l}");
        assert!(r
            .epoch_losses
            .unwrap()
            .iter()
            .all(|v| v.is_finite() && *v > 0.0));
        assert!(
            r.flops.unwrap() > 0 || r.arch.matches("nor_conv").count() == 0,
            "{l}"
        );
        assert!(r.params.unwrap() > 0, "{l}");
    }
    let m = build_db::manifest(&single, &["test".into()]).unwrap();
    assert_eq!((m.records, m.planned_records), (planned, planned));
    assert_eq!(m.complete_tasks, config().tasks);
    assert_eq!(
        m.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["checks", "stripes"]
    );
    assert_eq!(m.sources.iter().map(|s| s.records).sum::<usize>(), planned);
    assert!(m.files.contains_key("records.jsonl") && m.cell_seconds > 0.0);
    let db = MetaDb::load(&single).unwrap();
    assert_eq!(db.tasks.len(), 4);
    assert_eq!(db.records.len(), planned);

    // Two shards, run in the "wrong" order, merge to the same records.
    let sharded = fresh_db(&src, "db-sharded");
    build_db::run_shard(&sharded, 1, 2, &mut |_| {}).unwrap();
    assert!(
        build_db::merge(&sharded, false).is_err(),
        "merge of an unfinished build must fail"
    );
    build_db::run_shard(&sharded, 0, 2, &mut |_| {}).unwrap();
    build_db::merge(&sharded, false).unwrap();
    assert_eq!(records(&sharded), want);

    // A CLI run killed after its first record, then resumed.
    let killed = fresh_db(&src, "db-killed");
    let shard = killed.join("work/records-0-of-1.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_metad2a"))
        .args(["build-db", "run", "--shard", "0/1", "--db"])
        .arg(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(&shard) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no record after 2 minutes"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("build-db run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = lines(&shard);
    assert!(
        before < planned,
        "the run finished before the kill ({before} records)"
    );
    // a line cut short by the kill is dropped and its pair trained again
    std::fs::OpenOptions::new()
        .append(true)
        .open(&shard)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"task\":0,\"ar"))
        .unwrap();
    let mut calls = 0;
    let done = build_db::run_shard(&killed, 0, 1, &mut |_| calls += 1).unwrap();
    assert_eq!(done.len(), planned);
    assert_eq!(
        calls,
        planned - before,
        "the resumed run retrained finished pairs"
    );
    build_db::merge(&killed, false).unwrap();
    assert_eq!(records(&killed), want);

    // Bad shard arguments are errors, not panics.
    assert!(build_db::run_shard(&single, 2, 2, &mut |_| {}).is_err());
    assert!(build_db::run_shard(&single, 0, 0, &mut |_| {}).is_err());
    for d in [src, single, sharded, killed] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn cell_mix_draws_stratified_proposed_and_uniform_cells() {
    let src = common::temp_dir("db-mix-sources");
    sources(&src);
    let mut cfg = config();
    cfg.archs_per_task = 9;
    cfg.cell_mix = CellMix {
        stratified: 7,
        proposed: 1,
        proposal_pool: 2,
    };
    let pool = [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    ];
    let calls = std::cell::RefCell::new(Vec::new());
    let mut propose = |d: &metad2a::Dataset| -> metad2a::Result<Vec<String>> {
        calls.borrow_mut().push(d.num_classes());
        Ok(pool.iter().map(|s| s.to_string()).collect())
    };
    let db = common::temp_dir("db-mix");
    let plan = build_db::init(&src, &db, &cfg, Some(&mut propose), &mut |_| {}).unwrap();
    let calls = calls.borrow().clone();
    assert_eq!(calls.len(), cfg.tasks, "one proposal per task");
    for (t, (cells, why)) in plan.cells.iter().zip(&plan.origins).enumerate() {
        assert_eq!(calls[t], plan.tasks[t].classes.len());
        assert_eq!(cells.len(), 9);
        let distinct: std::collections::HashSet<&String> = cells.iter().collect();
        assert_eq!(distinct.len(), 9, "{cells:?}");
        let convs: Vec<usize> = cells
            .iter()
            .zip(why)
            .filter(|(_, o)| **o == CellOrigin::Stratified)
            .map(|(c, _)| c.matches("nor_conv_3x3").count())
            .collect();
        assert_eq!(convs, [0, 1, 2, 3, 4, 5, 6]);
        let proposed: Vec<&String> = cells
            .iter()
            .zip(why)
            .filter(|(_, o)| **o == CellOrigin::Proposed)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(proposed.len(), 1);
        assert!(pool.contains(&proposed[0].as_str()));
        assert_eq!(why.iter().filter(|o| **o == CellOrigin::Uniform).count(), 1);
    }
    // a second init keeps the committed plan (no proposals asked), another config is refused
    let again = build_db::init(&src, &db, &cfg, None, &mut |_| {}).unwrap();
    assert_eq!((again.cells, again.origins), (plan.cells, plan.origins));
    let mut other = cfg.clone();
    other.seed += 1;
    assert!(build_db::init(&src, &db, &other, None, &mut |_| {}).is_err());
    // asking for proposals without a ranker, or for more cells than a task has, is an error
    let db2 = common::temp_dir("db-mix-2");
    assert!(build_db::init(&src, &db2, &cfg, None, &mut |_| {}).is_err());
    cfg.cell_mix.stratified = 9;
    assert!(build_db::init(&src, &db2, &cfg, Some(&mut propose), &mut |_| {}).is_err());
    for d in [src, db, db2] {
        let _ = std::fs::remove_dir_all(d);
    }
}
