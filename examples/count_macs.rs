//! The arithmetic of a search: multiply-adds of the dense kernels (matrix products, set
//! attention, the head's and the decoder's edge dot products), counted with feature
//! `count-macs`, for a search, its generation stage, and an exhaustive search.
//!
//! `cargo run --release --features count-macs --example count_macs -- WEIGHTS_DIR FEATURES
//! [NUM_ARCHS]` (default 500 candidates, 10 resamples, seed 0, as `metad2a search`).
use std::sync::atomic::Ordering;

use metad2a::nn::linalg::MACS;

fn main() -> metad2a::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: count_macs WEIGHTS_DIR FEATURES [NUM_ARCHS]");
        std::process::exit(2);
    }
    let engine = metad2a::Engine::load(&args[1])?;
    let data = metad2a::Dataset::load(&args[2])?;
    let cfg = metad2a::SearchConfig {
        num_archs: args
            .get(3)
            .map_or(Ok(500), |s| s.parse())
            .expect("NUM_ARCHS"),
        ..Default::default()
    };
    let count = |f: &mut dyn FnMut()| {
        MACS.store(0, Ordering::Relaxed);
        f();
        MACS.load(Ordering::Relaxed)
    };
    // The exhaustive search's all-cell table is made once per engine: build it first.
    let ex = metad2a::SearchConfig {
        exhaustive: true,
        ..cfg.clone()
    };
    let first = count(&mut || drop(engine.search(&data, &ex).unwrap()));
    let mut decoded = 0;
    let generate = count(&mut || decoded = engine.generate(&data, &cfg).unwrap().1.decoded);
    let search = count(&mut || drop(engine.search(&data, &cfg).unwrap()));
    let exhaustive = count(&mut || drop(engine.search(&data, &ex).unwrap()));
    let at = |macs: u64| macs as f64 / 100e9 * 1e3;
    println!(
        "{} candidates ({decoded} graphs decoded), {} classes x {} rows, {} resamples",
        cfg.num_archs,
        data.num_classes(),
        data.num_rows() / data.num_classes().max(1),
        cfg.resamples
    );
    println!("multiply-adds (ms at 100 G/s):");
    println!("  search      {search:>13} ({:.2})", at(search));
    println!("  generation  {generate:>13} ({:.2})", at(generate));
    println!("  exhaustive  {exhaustive:>13} ({:.2})", at(exhaustive));
    println!(
        "  all-cell table, once per engine {:>13}",
        first - exhaustive
    );
    Ok(())
}
