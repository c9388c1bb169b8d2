//! In-process latency of a search, stage by stage: runs the same search repeatedly on one
//! engine (two warm-up runs first) and prints the median of the whole search and of each
//! stage (`sets`, `decode`, `rank`, as `metad2a search --timings` splits them), and the time
//! of the engine's first search (`first`: packing weights, first-touched memory), in ms, on
//! one line.
//!
//! `cargo run --release --example search_timings -- WEIGHTS_DIR DATA [NUM_ARCHS|exhaustive]
//! [REPEATS]`, where DATA is a feature file or `synthetic:CLASSES:ROWS_PER_CLASS` (normal
//! features, class means 0.01 apart, fixed seed). Defaults: 500 candidates (10 resamples,
//! seed 0, as `metad2a search`), 30 repeats.
//!
//! `scripts/compare-timings.sh` runs two builds of it in turn and compares their medians.
use std::time::Instant;

fn main() -> metad2a::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: search_timings WEIGHTS_DIR FEATURES|synthetic:CLASSES:ROWS [NUM_ARCHS|exhaustive] [REPEATS]"
        );
        std::process::exit(2);
    }
    let engine = metad2a::Engine::load(&args[1])?;
    let data = match args[2].strip_prefix("synthetic:") {
        Some(shape) => synthetic(&engine, shape)?,
        None => metad2a::Dataset::load(&args[2])?,
    };
    let what = args.get(3).map_or("500", String::as_str);
    let cfg = if what == "exhaustive" {
        metad2a::SearchConfig {
            exhaustive: true,
            ..Default::default()
        }
    } else {
        metad2a::SearchConfig {
            num_archs: parse(what, "NUM_ARCHS")?,
            ..Default::default()
        }
    };
    let repeats = args.get(4).map_or(Ok(30), |s| parse(s, "REPEATS"))?.max(1);
    // Warm-up; the second exhaustive search of an engine makes the all-cell table. The first
    // search's time is printed too (`first`): what a one-shot process pays after the load.
    let t = Instant::now();
    engine.search(&data, &cfg)?;
    let first = t.elapsed().as_secs_f64() * 1e3;
    engine.search(&data, &cfg)?;
    let (mut total, mut sets, mut decode, mut rank) = (vec![], vec![], vec![], vec![]);
    for _ in 0..repeats {
        let t = Instant::now();
        let r = engine.search(&data, &cfg)?;
        total.push(t.elapsed().as_secs_f64() * 1e3);
        sets.push(r.timings.sets_ms);
        decode.push(r.timings.decode_ms);
        rank.push(r.timings.rank_ms);
    }
    println!(
        "total {:.3} sets {:.3} decode {:.3} rank {:.3} first {first:.3}",
        median(total),
        median(sets),
        median(decode),
        median(rank)
    );
    Ok(())
}

fn parse(s: &str, what: &str) -> metad2a::Result<usize> {
    s.parse()
        .map_err(|_| metad2a::Error::invalid(format!("{what}: `{s}` is not a count")))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `CLASSES:ROWS` classes of normal features of the engine's width.
fn synthetic(engine: &metad2a::Engine, shape: &str) -> metad2a::Result<metad2a::Dataset> {
    let bad = || metad2a::Error::invalid(format!("synthetic:{shape}: expected CLASSES:ROWS"));
    let (c, r) = shape.split_once(':').ok_or_else(bad)?;
    let (classes, per) = (
        c.parse::<usize>().map_err(|_| bad())?,
        r.parse::<usize>().map_err(|_| bad())?,
    );
    let dim = engine.feature_dim();
    let mut rng = metad2a::rng::Rng::new(1, 2);
    let n = classes * per;
    let feats: Vec<f32> = (0..n * dim)
        .map(|i| (i / dim / per) as f32 * 0.01 + rng.normal() as f32)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i / per) as u32).collect();
    metad2a::Dataset::new(feats, dim, labels, None)
}
