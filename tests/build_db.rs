//! The meta-database builder (feature `train`): a run killed mid-way resumes without losing or
//! repeating records, and two shards merged give exactly the records of a single run.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use metad2a::train::build_db::{self, BuildConfig, BuiltRecord};
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
    }
}

fn fresh_db(src: &Path, tag: &str) -> PathBuf {
    let db = common::temp_dir(tag);
    build_db::init(src, &db, &config(), &mut |_| {}).unwrap();
    db
}

/// The records of `records.jsonl` without their timings.
fn records(db: &Path) -> Vec<(usize, String, f64, f64)> {
    std::fs::read_to_string(db.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: BuiltRecord = serde_json::from_str(l).unwrap();
            (r.task, r.arch, r.acc, r.train_acc)
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
