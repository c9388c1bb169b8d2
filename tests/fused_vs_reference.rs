//! The fused CPU kernels against the composed candle references, on fresh random weights and
//! inputs, at sizes other than the official ones (so nothing depends on hard-coded sizes).

mod common;

use candle_core::{Device, Tensor};
use metad2a::model::dims::{GeneratorDims, PredictorDims, SetEncoderDims};
use metad2a::model::inventory::{self, pytorch_init};
use metad2a::model::{Dag, Generator, Predictor};
use metad2a::nn::reference::{tensor2, to_vec, RefWeights};
use metad2a::rng::Rng;
use metad2a::weights::import::ExportDtype;
use metad2a::weights::{serialize, WeightStore};

use common::{assert_close, random_vec};

fn set_dims() -> SetEncoderDims {
    SetEncoderDims {
        feat_dim: 24,
        intra_hidden: 16,
        proto_dim: 12,
        inter_hidden: 20,
        out_dim: 8,
        heads: 4,
    }
}

fn gen_dims() -> GeneratorDims {
    GeneratorDims {
        set: set_dims(),
        nz: 8,
        hs: 12,
        nvt: 6,
        max_n: 7,
    }
}

fn pred_dims() -> PredictorDims {
    PredictorDims {
        set: set_dims(),
        nz: 10,
        hs: 20,
        nvt: 6,
        max_n: 7,
        head_hidden: 16,
    }
}

/// Random weights (PyTorch's initialisation) as safetensors bytes.
///
/// Scaling these up makes outputs of order 100 whose last digits depend on summation order (the
/// attention amplifies rounding), so the inputs carry the spread instead.
fn weights(inv: &inventory::Inventory, seed: u64) -> Vec<u8> {
    serialize(&pytorch_init(inv, seed), ExportDtype::F32, None).unwrap()
}

fn random_dags(n: usize, max_n: usize, nvt: usize, seed: u64) -> Vec<Dag> {
    let mut r = Rng::new(seed, 1);
    (0..n)
        .map(|_| {
            let len = 2 + r.below((max_n - 1) as u64) as usize;
            let types = (0..len).map(|_| r.below(nvt as u64) as u8).collect();
            let mut edges = Vec::new();
            for v in 1..len {
                for u in 0..v {
                    if r.next_f32() < 0.4 {
                        edges.push((u, v));
                    }
                }
            }
            Dag::new(types, &edges)
        })
        .collect()
}

#[test]
fn set_encoder_matches_reference() {
    let bytes = weights(&inventory::generator(&gen_dims()), 11);
    let g = Generator::load(&WeightStore::from_bytes("random", bytes.clone()).unwrap()).unwrap();
    let r = RefWeights::from_bytes(&bytes).unwrap();
    let (tasks, classes, per) = (3, 5, 6);
    let x = random_vec(tasks * classes * per * 24, 3, 3.0);
    let got = g.set_encoder.encode(&x, tasks, classes, per).unwrap();
    let xt = Tensor::from_slice(&x, (tasks, classes * per, 24), &Device::Cpu).unwrap();
    let want = to_vec(&r.set_encode(&xt, per, 4).unwrap()).unwrap();
    assert_close("set encoder", &got, &want, 1e-5);
    let (mu, _) = g.latent(&x, tasks, classes, per).unwrap();
    let want_mu = to_vec(
        &r.linear(
            "fc1",
            &Tensor::from_slice(&want, (tasks, 8), &Device::Cpu).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_close("latent mu", &mu, &want_mu, 1e-5);
}

#[test]
fn set_attention_block_matches_reference() {
    let bytes = weights(&inventory::generator(&gen_dims()), 12);
    let g = Generator::load(&WeightStore::from_bytes("random", bytes.clone()).unwrap()).unwrap();
    let r = RefWeights::from_bytes(&bytes).unwrap();
    // MAB with different query and key sets (the PMA shape, but with 3 queries per set).
    let (nsets, nq, nk) = (4, 3, 7);
    let q = random_vec(nsets * nq * 16, 5, 3.0);
    let k = random_vec(nsets * nk * 16, 6, 3.0);
    let mab = &g.set_encoder.intra.sab2;
    let got = mab.forward(&q, &k, nsets, nq, nk);
    let qt = Tensor::from_slice(&q, (nsets, nq, 16), &Device::Cpu).unwrap();
    let kt = Tensor::from_slice(&k, (nsets, nk, 16), &Device::Cpu).unwrap();
    let want = to_vec(&r.mab("intra_setpool.enc.1.mab", &qt, &kt, 4).unwrap()).unwrap();
    assert_close("MAB", &got, &want, 1e-5);
}

#[test]
fn gru_step_and_gated_messages_match_reference() {
    let bytes = weights(&inventory::predictor(&pred_dims()), 13);
    let p = Predictor::load(&WeightStore::from_bytes("random", bytes.clone()).unwrap()).unwrap();
    let r = RefWeights::from_bytes(&bytes).unwrap();
    let (rows, hs, nvt, max_n) = (9, 20, 6, 7);
    let types: Vec<u8> = (0..rows).map(|i| (i * 5 % nvt) as u8).collect();
    let h = random_vec(rows * hs, 7, 2.0);
    let mut got = vec![0.0; rows * hs];
    p.graph_encoder()
        .unwrap()
        .forward_gru
        .step_onehot(&types, Some(&h), &mut got, &mut Vec::new());
    let mut onehot = vec![0.0; rows * nvt];
    for (i, &t) in types.iter().enumerate() {
        onehot[i * nvt + t as usize] = 1.0;
    }
    let want = r
        .gru_cell(
            "grue_forward",
            &tensor2(&onehot, rows, nvt).unwrap(),
            &tensor2(&h, rows, hs).unwrap(),
        )
        .unwrap();
    assert_close("GRU step", &got, &to_vec(&want).unwrap(), 1e-5);
    // zero hidden input
    p.graph_encoder()
        .unwrap()
        .forward_gru
        .step_onehot(&types, None, &mut got, &mut Vec::new());
    let zeros = vec![0.0; rows * hs];
    let want = r
        .gru_cell(
            "grue_forward",
            &tensor2(&onehot, rows, nvt).unwrap(),
            &tensor2(&zeros, rows, hs).unwrap(),
        )
        .unwrap();
    assert_close("GRU step, zero state", &got, &to_vec(&want).unwrap(), 1e-5);

    // Gated message of one vertex (vid 3) against the padded gated sum with one neighbour.
    let mut m = vec![0.0; rows * hs];
    p.graph_encoder()
        .unwrap()
        .backward_message
        .messages(&h, rows, 3, &mut m, &mut Vec::new());
    let mut padded = vec![0.0; rows * 2 * (hs + max_n)];
    for i in 0..rows {
        let at = i * 2 * (hs + max_n);
        padded[at..at + hs].copy_from_slice(&h[i * hs..(i + 1) * hs]);
        padded[at + hs + 3] = 1.0;
    }
    let pt = Tensor::from_slice(&padded, (rows, 2, hs + max_n), &Device::Cpu).unwrap();
    let want = r
        .gated_sum("gate_backward.0", "mapper_backward.0", &pt)
        .unwrap();
    assert_close("gated message", &m, &to_vec(&want).unwrap(), 1e-5);
}

#[test]
fn graph_encoder_and_predictor_match_reference() {
    let bytes = weights(&inventory::predictor(&pred_dims()), 14);
    let p = Predictor::load(&WeightStore::from_bytes("random", bytes.clone()).unwrap()).unwrap();
    let r = RefWeights::from_bytes(&bytes).unwrap();
    let dags = random_dags(40, 7, 6, 15);
    let got = p.graph_encoder().unwrap().graph_state(&dags).unwrap();
    let want = to_vec(&r.graph_state(&dags, 6, 7).unwrap()).unwrap();
    assert_close("graph state", &got, &want, 1e-5);

    let (classes, per) = (3, 4);
    let x = random_vec(classes * per * 24, 16, 3.0);
    let d = p.set_encoder.encode(&x, 1, classes, per).unwrap();
    let g = p.graph_embedding(&dags).unwrap();
    let y = p.predict(&d, &g).unwrap();
    let gt = r
        .linear(
            "fc1",
            &Tensor::from_slice(&want, (40, 20), &Device::Cpu).unwrap(),
        )
        .unwrap();
    let dt = Tensor::from_slice(&d, (1, 8), &Device::Cpu)
        .unwrap()
        .repeat((40, 1))
        .unwrap();
    let h = r
        .linear("pred_fc.0", &Tensor::cat(&[&dt, &gt], 1).unwrap())
        .unwrap()
        .tanh()
        .unwrap();
    let want_y = to_vec(&r.linear("pred_fc.2", &h).unwrap()).unwrap();
    assert_close("predictor output", &y, &want_y, 1e-5);
}

#[test]
fn decoder_output_is_well_formed_for_other_sizes() {
    let bytes = weights(&inventory::generator(&gen_dims()), 17);
    let g = Generator::load(&WeightStore::from_bytes("random", bytes).unwrap()).unwrap();
    let z = random_vec(50 * 8, 18, 1.0);
    let mut rngs: Vec<Rng> = (0..50).map(|i| Rng::new(1, i)).collect();
    for mode in [
        metad2a::model::DecodeMode::Argmax,
        metad2a::model::DecodeMode::Sample,
    ] {
        for dag in g.decode(&z, mode, &mut rngs).unwrap() {
            assert!(dag.len() >= 2 && dag.len() <= 7);
            assert_eq!(dag.types[0], 0);
            // edges only go forward, so decoded graphs are always acyclic
            assert!(dag.is_acyclic());
            for (v, &p) in dag.preds.iter().enumerate() {
                assert_eq!(p >> v, 0);
            }
            // a graph that stopped (END) has every loose end wired into its END vertex
            if *dag.types.last().unwrap() == 1 {
                let last = dag.len() - 1;
                for u in 0..last {
                    assert!(dag.successor_mask(u) != 0, "{dag:?}: vertex {u} is loose");
                }
            }
        }
    }
}
