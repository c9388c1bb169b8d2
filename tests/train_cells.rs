//! The NB201 cell trainer (feature `train`): kernels and whole-network gradients against
//! candle's stock operations and autograd, output shapes, sharding, and a learning test.
#![cfg(feature = "train")]

mod common;

use candle_core::{Device, Tensor, Var};
use metad2a::space::Nb201Arch;
use metad2a::train::candle_ref::CandleNet;
use metad2a::train::cell_net::{CellNet, NetConfig, Tape};
use metad2a::train::ops::{self, Conv, Shape};

use common::random_vec;

/// NHWC → NCHW.
fn nchw(x: &[f32], s: Shape) -> Tensor {
    let mut v = vec![0.0f32; x.len()];
    for n in 0..s.n {
        for p in 0..s.h * s.w {
            for c in 0..s.c {
                v[((n * s.c + c) * s.h * s.w) + p] = x[(n * s.h * s.w + p) * s.c + c];
            }
        }
    }
    Tensor::from_vec(v, (s.n, s.c, s.h, s.w), &Device::Cpu).unwrap()
}

fn nhwc(t: &Tensor) -> Vec<f32> {
    t.permute((0, 2, 3, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// `[k·k][ci][co]` → `[co, ci, k, k]`.
fn oihw(w: &[f32], cv: Conv) -> Tensor {
    let mut t = vec![0.0f32; w.len()];
    for tp in 0..cv.k * cv.k {
        for c in 0..cv.ci {
            for o in 0..cv.co {
                t[(o * cv.ci + c) * cv.k * cv.k + tp] = w[(tp * cv.ci + c) * cv.co + o];
            }
        }
    }
    Tensor::from_vec(t, (cv.co, cv.ci, cv.k, cv.k), &Device::Cpu).unwrap()
}

fn rel(got: &[f32], want: &[f32]) -> f32 {
    let m = want.iter().fold(0f32, |a, b| a.max(b.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / m
}

#[test]
fn convolution_kernels_match_candle() {
    for (i, (ci, co, k, stride, h)) in [
        (8, 16, 3, 1, 7),
        (16, 8, 3, 2, 8),
        (8, 24, 1, 1, 5),
        (3, 8, 3, 1, 6),
        (32, 32, 3, 1, 4),
    ]
    .into_iter()
    .enumerate()
    {
        let cv = Conv {
            k,
            stride,
            pad: k / 2,
            ci,
            co,
        };
        // candle's conv2d backward needs even sizes with stride 2; ours does not care
        let s = Shape {
            n: 3,
            h,
            w: h + stride,
            c: ci,
        };
        let o = cv.out_shape(s);
        let x = random_vec(s.len(), 10 + i as u64, 1.0);
        let w = random_vec(cv.weight_len(), 20 + i as u64, 0.5);
        let tables = ops::tap_tables(s.h, s.w, &cv);
        let mut y = Vec::new();
        ops::conv_forward(&x, s, &w, cv, &tables, &mut y);
        assert_eq!(y.len(), o.len());
        let xv = Var::from_tensor(&nchw(&x, s)).unwrap();
        let wv = Var::from_tensor(&oihw(&w, cv)).unwrap();
        let yt = xv
            .as_tensor()
            .conv2d(wv.as_tensor(), cv.pad, stride, 1, 1)
            .unwrap();
        assert_eq!(yt.dims4().unwrap(), (o.n, o.c, o.h, o.w), "output shape");
        let e = rel(&y, &nhwc(&yt));
        assert!(e < 1e-5, "forward {ci}->{co} k{k} s{stride}: {e}");
        // gradients of sum(y * g) for a random g
        let g = random_vec(o.len(), 30 + i as u64, 1.0);
        let loss = (yt * nchw(&g, o)).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut dw = vec![0.0f32; cv.weight_len()];
        ops::conv_weight_grad(&x, s, &g, cv, &tables, &mut dw);
        let want_dw = grads.get(&wv).unwrap();
        let e = rel(
            &oihw(&dw, cv)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            &want_dw.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(e < 1e-5, "weight grad {ci}->{co} k{k} s{stride}: {e}");
        if ci % 8 == 0 {
            let mut dx = vec![0.0f32; s.len()];
            ops::conv_input_grad(&g, s, &ops::transpose_taps(&w, cv), cv, &tables, &mut dx);
            let e = rel(&dx, &nhwc(grads.get(&xv).unwrap()));
            assert!(e < 1e-5, "input grad {ci}->{co} k{k} s{stride}: {e}");
        }
    }
}

#[test]
fn pooling_and_batch_norm_shapes_and_values() {
    let s = Shape {
        n: 2,
        h: 4,
        w: 6,
        c: 8,
    };
    let x = random_vec(s.len(), 5, 1.0);
    let mut y = Vec::new();
    ops::avg_pool2(&x, s, &mut y);
    assert_eq!(y.len(), 2 * 2 * 3 * 8);
    let t = nchw(&x, s).avg_pool2d(2).unwrap();
    assert!(rel(&y, &nhwc(&t)) < 1e-6);
    ops::avg_pool3(&x, s, &mut y);
    assert_eq!(y.len(), s.len());
    // corner: mean of the 4 pixels around it
    let corner: f32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .map(|&(a, b)| x[(a * 6 + b) * 8])
        .sum::<f32>()
        / 4.0;
    assert!((y[0] - corner).abs() < 1e-6);
    ops::gap(&x, s, &mut y);
    assert_eq!(y.len(), 16);
    let mut cache = ops::BnCache::default();
    let (gamma, beta) = (vec![1.5f32; 8], vec![0.25f32; 8]);
    ops::bn_forward_train(&x, 8, &gamma, &beta, 1e-5, &mut y, &mut cache);
    // each channel of the output has mean beta and std gamma
    for c in 0..8 {
        let v: Vec<f32> = y.iter().skip(c).step_by(8).copied().collect();
        let m = v.iter().sum::<f32>() / v.len() as f32;
        let sd = (v.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            (m - 0.25).abs() < 1e-4 && (sd - 1.5).abs() < 1e-3,
            "channel {c}: {m} {sd}"
        );
    }
}

fn arch(s: &str) -> Nb201Arch {
    s.parse().unwrap()
}

/// Our backward pass against candle's autograd on the same network, parameters and batch.
fn gradient_check(a: &Nb201Arch, shards: usize) -> f32 {
    let cfg = NetConfig {
        channels: 8,
        cells: 1,
        classes: 5,
    };
    let mut net = CellNet::new(a, cfg, 3);
    // move away from the initialisation (BN scales and shifts included), as after training
    let noise = random_vec(net.params.len(), 8, 0.3);
    for (p, n) in net.params.iter_mut().zip(&noise) {
        *p += n;
    }
    let start = net.clone();
    let (n, h) = (6, 8);
    let x = random_vec(n * h * h * 3, 4, 1.0);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    let mut tapes: Vec<Tape> = (0..shards).map(|_| Tape::new()).collect();
    let logits = net.forward(&x, n, h, h, true, &mut tapes);
    let (loss, dl, _) = ops::cross_entropy(&logits, &labels, 5);
    let grads = net.backward(&mut tapes, &dl);
    let fresh = start;
    let cn = CandleNet::from_params(a, cfg, &fresh.candle_layout()).unwrap();
    let xt = nchw(&x, Shape { n, h, w: h, c: 3 });
    let (closs, cg) = cn.gradients(&xt, &labels).unwrap();
    assert!(
        (loss - closs).abs() < 1e-4 * closs.abs().max(1.0),
        "loss {loss} vs {closs}"
    );
    let ours = fresh.to_candle(&grads);
    let mut worst = 0f32;
    for ((shape, g), t) in ours.iter().zip(&cg) {
        assert_eq!(shape.as_slice(), t.dims());
        let want = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        let e = g
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
            / scale;
        worst = worst.max(e);
    }
    worst
}

#[test]
fn network_gradients_match_candle_autograd() {
    for a in [
        "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
        "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
        "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
    ] {
        for shards in [1, 3] {
            let e = gradient_check(&arch(a), shards);
            assert!(e < 2e-3, "{a} with {shards} shards: gradient error {e}");
        }
    }
}

#[test]
fn a_cell_learns_fashion_mnist_above_chance() {
    use metad2a::features::readers::read_folder;
    use metad2a::train::cell_train::{train_cell, ImageSet, TrainConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/fashion-mnist");
    let imgs = read_folder(&dir, None, &mut |_, _| {}).unwrap();
    // 15 images per class to train on, 5 held out
    let (mut tr, mut va) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let mut count = [0usize; 10];
    for (img, &l) in imgs.images.iter().zip(&imgs.labels) {
        count[l as usize] += 1;
        let dst = if count[l as usize] <= 15 {
            &mut tr
        } else {
            &mut va
        };
        dst.0.push(img.clone());
        dst.1.push(l);
    }
    let norm = ([0.29f32; 3], [0.35f32; 3]);
    let train = ImageSet::new(&tr.0, &tr.1, 10, 16, norm.0, norm.1);
    let valid = ImageSet::new(&va.0, &va.1, 10, 16, norm.0, norm.1);
    let cfg = TrainConfig {
        epochs: 30,
        batch: 32,
        lr: 0.05,
        seed: 1,
        ..TrainConfig::default()
    };
    let a = arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|");
    let r = train_cell(&a, &train, &valid, &cfg).unwrap();
    eprintln!("fashion-mnist, 150 training images: {r:?}");
    assert!(r.train_acc > 60.0, "training accuracy {}", r.train_acc);
    assert!(
        r.valid_acc > 40.0,
        "held-out accuracy {} (chance 10%)",
        r.valid_acc
    );
    // same seed, same result
    let again = train_cell(&a, &train, &valid, &cfg).unwrap();
    assert_eq!(
        (r.train_acc, r.valid_acc, r.final_loss),
        (again.train_acc, again.valid_acc, again.final_loss)
    );
}
