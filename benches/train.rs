//! Training throughput of the conv-heavy NB201 network (C = 8, one cell per stage, all six edges
//! nor_conv_3x3, 16×16 inputs, batch 64): one step (forward, backward) with the engine's trainer
//! and with candle's stock conv2d and autograd on the same network.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use metad2a::space::Nb201Arch;
use metad2a::train::candle_ref::CandleNet;
use metad2a::train::cell_net::{CellNet, NetConfig, Tape};
use metad2a::train::ops::cross_entropy;

fn bench_train(c: &mut Criterion) {
    let arch: Nb201Arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
        .parse()
        .unwrap();
    let cfg = NetConfig {
        channels: 8,
        cells: 1,
        classes: 10,
    };
    let (n, r) = (64, 16);
    let mut rng = metad2a::rng::Rng::new(1, 1);
    let x: Vec<f32> = (0..n * r * r * 3).map(|_| rng.normal() as f32).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let mut g = c.benchmark_group("train_step_c8_n1_16px_batch64");
    g.throughput(Throughput::Elements(n as u64)).sample_size(30);
    let mut net = CellNet::new(&arch, cfg, 1);
    let mut tapes = vec![Tape::new(), Tape::new()];
    g.bench_function("engine", |b| {
        b.iter(|| {
            let logits = net.forward(&x, n, r, r, true, &mut tapes);
            let (_, d, _) = cross_entropy(&logits, &labels, 10);
            net.backward(&mut tapes, &d)
        })
    });
    let cn = CandleNet::random(&arch, cfg, 1).unwrap();
    let mut nchw = vec![0.0f32; x.len()];
    for i in 0..n {
        for p in 0..r * r {
            for ch in 0..3 {
                nchw[(i * 3 + ch) * r * r + p] = x[(i * r * r + p) * 3 + ch];
            }
        }
    }
    let xt = candle_core::Tensor::from_vec(nchw, (n, 3, r, r), &candle_core::Device::Cpu).unwrap();
    g.sample_size(10);
    g.bench_function("candle_stock", |b| {
        b.iter(|| cn.gradients(&xt, &labels).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_train);
criterion_main!(benches);
