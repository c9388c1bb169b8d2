//! Runs one search on a synthetic dataset, for profiling: `cargo run --release --example
//! profile_search -- WEIGHTS_DIR CLASSES ROWS_PER_CLASS [EXHAUSTIVE]`.
fn main() -> metad2a::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let engine = metad2a::Engine::load(&args[1])?;
    let (classes, per): (usize, usize) = (args[2].parse().unwrap(), args[3].parse().unwrap());
    let dim = engine.feature_dim();
    let mut rng = metad2a::rng::Rng::new(1, 2);
    let n = classes * per;
    let feats: Vec<f32> = (0..n * dim)
        .map(|i| (i / dim / per) as f32 * 0.01 + rng.normal() as f32)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i / per) as u32).collect();
    let data = metad2a::Dataset::new(feats, dim, labels, None)?;
    let cfg = metad2a::SearchConfig {
        exhaustive: args.len() > 4,
        ..Default::default()
    };
    for _ in 0..3 {
        let r = engine.search(&data, &cfg)?;
        println!("{:?} {:?}", r.counts, r.timings);
    }
    Ok(())
}
