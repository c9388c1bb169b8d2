//! Engine load time: memory-map the NB201 weights and build the models, which checks every
//! tensor's name, shape and dtype. Reads the parity fixtures from `../shared`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use metad2a::model::{Generator, Predictor};

fn bench_load(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/parity/nb201");
    if !dir.join("predictor.safetensors").is_file() {
        eprintln!(
            "\n*** SKIPPED load bench: {} not found ***\n",
            dir.display()
        );
        return;
    }
    let (g, p) = (
        dir.join("generator.safetensors"),
        dir.join("predictor.safetensors"),
    );
    let mut group = c.benchmark_group("load");
    group.bench_function("generator", |b| {
        b.iter(|| Generator::load_file(&g).unwrap())
    });
    group.bench_function("predictor", |b| {
        b.iter(|| Predictor::load_file(&p).unwrap())
    });
    group.bench_function("generator+predictor", |b| {
        b.iter(|| {
            (
                Generator::load_file(&g).unwrap(),
                Predictor::load_file(&p).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
