//! Meta-training (feature `train`): the official losses and their gradients on the recorded
//! batch of `../shared/parity/nb201`.
#![cfg(feature = "train")]

mod common;

use candle_core::{Device, Tensor};
use metad2a::space::Nb201Arch;
use metad2a::train::meta::{
    generator_loss, mse_sum, predictor_forward, rel_max, set_embeddings, Params,
};
use serde_json::Value;

struct Batch {
    xs: Vec<Tensor>,
    graphs: Vec<metad2a::model::Dag>,
    y: Tensor,
    json: Value,
    expected: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn batch(shared: &std::path::Path) -> Batch {
    let dir = shared.join("parity/nb201");
    let inputs = common::read_tensors(&dir.join("inputs.safetensors"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let (shape, x) = &inputs["train.x"];
    let per = shape[1] * shape[2];
    let xs = (0..shape[0])
        .map(|i| {
            Tensor::from_vec(
                x[i * per..(i + 1) * per].to_vec(),
                (shape[1], shape[2]),
                &Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    let graphs = json["train_archs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse::<Nb201Arch>().unwrap().to_graph())
        .collect();
    let y = Tensor::from_vec(inputs["train.y"].1.clone(), shape[0], &Device::Cpu).unwrap();
    Batch {
        xs,
        graphs,
        y,
        json,
        expected: common::read_tensors(&dir.join("expected.safetensors")),
    }
}

fn check_grad(
    name: &str,
    params: &Params,
    grads: &candle_core::backprop::GradStore,
    b: &Batch,
    prefix: &str,
) -> f32 {
    let var = &params.vars[name];
    let got = grads
        .get(var)
        .unwrap_or_else(|| panic!("no gradient for {name}"))
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = &b.expected[&format!("{prefix}{name}")].1;
    let e = rel_max(&got, want);
    assert!(e <= 1e-3, "{prefix}{name}: relative error {e}");
    e
}

#[test]
fn generator_losses_and_gradients_match_the_official_code() {
    let shared = need_shared!();
    let b = batch(&shared);
    let params = Params::load(&shared.join("parity/nb201/generator.safetensors")).unwrap();
    let w = params.weights();
    let v = set_embeddings(&w, &b.xs, 20, 4).unwrap();
    let (mu, logvar) = (w.linear("fc1", &v).unwrap(), w.linear("fc2", &v).unwrap());
    let (total, recon, kld) = generator_loss(&w, &mu, &logvar, &b.graphs, 7, 8, None).unwrap();
    let want = &b.json["gen.loss"];
    for (got, key) in [(&total, "total"), (&recon, "recon"), (&kld, "kld")] {
        let g = got.to_scalar::<f32>().unwrap() as f64;
        let w = want[key].as_f64().unwrap();
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "gen.loss.{key}: {g} vs {w}"
        );
    }
    let grads = total.backward().unwrap();
    let mut worst = 0f32;
    for name in [
        "add_edge.0.weight",
        "fc1.bias",
        "fc3.weight",
        "grud.weight_ih",
        "intra_setpool.enc.0.mab.fc_q.weight",
    ] {
        worst = worst.max(check_grad(name, &params, &grads, &b, "gen.grad."));
    }
    eprintln!("generator: losses match, worst gradient error {worst:e}");
}

#[test]
fn predictor_loss_and_gradients_match_the_official_code() {
    let shared = need_shared!();
    let b = batch(&shared);
    let params = Params::load(&shared.join("parity/nb201/predictor.safetensors")).unwrap();
    let w = params.weights();
    let y = predictor_forward(&w, &b.xs, &b.graphs, 20, 4, 7, 8).unwrap();
    let loss = mse_sum(&y, &b.y).unwrap();
    let g = loss.to_scalar::<f32>().unwrap() as f64;
    let want = b.json["pred.loss_mse_sum"].as_f64().unwrap();
    assert!(
        (g - want).abs() <= 1e-4 * want.abs(),
        "pred.loss_mse_sum: {g} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let mut worst = 0f32;
    for name in [
        "grue_forward.weight_hh",
        "hg_unify.0.bias",
        "inter_setpool.dec.0.S",
        "pred_fc.0.weight",
    ] {
        worst = worst.max(check_grad(name, &params, &grads, &b, "pred.grad."));
    }
    eprintln!("predictor: loss matches, worst gradient error {worst:e}");
}
