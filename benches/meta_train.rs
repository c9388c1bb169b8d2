//! Meta-training throughput: optimisation steps per second of the generator and the predictor
//! (official sizes, 1280-d features) at batch 32 with 10-class tasks (20 rows per class).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metad2a::space::Nb201Arch;
use metad2a::train::meta::{self, Adam};
use metad2a::train::meta_train::{init_params, Kind};

fn bench_meta(c: &mut Criterion) {
    // as the `metad2a` command does before meta-training (see train::meta_train::train)
    std::env::set_var(
        "RAYON_NUM_THREADS",
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string(),
    );
    let (b, classes, per, dim) = (32, 10, 20, 1280);
    let mut rng = metad2a::rng::Rng::new(3, 3);
    let xs: Vec<Tensor> = (0..b)
        .map(|_| {
            let v: Vec<f32> = (0..classes * per * dim)
                .map(|_| rng.normal() as f32)
                .collect();
            Tensor::from_vec(v, (classes * per, dim), &Device::Cpu).unwrap()
        })
        .collect();
    let graphs: Vec<_> = (0..b)
        .map(|i| Nb201Arch::from_code(i * 487).unwrap().to_graph())
        .collect();
    let y = Tensor::from_vec(
        (0..b).map(|i| i as f32 * 1e-3).collect::<Vec<_>>(),
        b,
        &Device::Cpu,
    )
    .unwrap();
    let mut g = c.benchmark_group("meta_train_step_batch32_10classes");
    g.throughput(Throughput::Elements(1)).sample_size(10);
    let gp = init_params(Kind::Generator, dim, 1).unwrap();
    let mut ga = Adam::new(1e-4);
    g.bench_function("generator", |bench| {
        bench.iter(|| {
            let w = gp.weights();
            let v = meta::set_embeddings(&w, &xs, per, 4).unwrap();
            let (mu, lv) = (w.linear("fc1", &v).unwrap(), w.linear("fc2", &v).unwrap());
            let eps = meta::normal((b, 56), &mut rng).unwrap();
            let (loss, _, _) =
                meta::generator_loss(&w, &mu, &lv, &graphs, 7, 8, Some(&eps)).unwrap();
            ga.update(&gp, &loss.backward().unwrap()).unwrap();
        })
    });
    let pp = init_params(Kind::Predictor, dim, 2).unwrap();
    let mut pa = Adam::new(1e-4);
    g.bench_function("predictor", |bench| {
        bench.iter(|| {
            let w = pp.weights();
            let out = meta::predictor_forward(&w, &xs, &graphs, per, 4, 7, 8).unwrap();
            pa.update(&pp, &meta::mse_sum(&out, &y).unwrap().backward().unwrap())
                .unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench_meta);
criterion_main!(benches);
