//! Feature extraction: 200 images (10 classes x 20, the committed Fashion-MNIST example) through
//! the built-in EfficientNet-Lite0 at the default resolution, from decoded images to features.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use metad2a::features::readers::read_folder;
use metad2a::features::{FeatureExtractor, DEFAULT_RESOLUTION};

fn bench_features(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/fashion-mnist");
    let imgs = read_folder(&dir, None, &mut |_, _| {}).unwrap();
    assert_eq!(imgs.images.len(), 200);
    let mut g = c.benchmark_group("features");
    g.sample_size(10);
    for r in [DEFAULT_RESOLUTION, 224] {
        let fx = FeatureExtractor::builtin(r).unwrap();
        g.bench_function(format!("200_images_{r}px"), |b| {
            b.iter(|| fx.extract(&imgs.images, &mut |_, _| {}))
        });
    }
    g.bench_function("read_and_decode_200_png", |b| {
        b.iter(|| read_folder(&dir, None, &mut |_, _| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_features);
criterion_main!(benches);
