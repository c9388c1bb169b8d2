//! The parameter inventory of the official models: every state_dict name and shape, in
//! state_dict order, for given sizes. Used to make weights from scratch (training, tests) and
//! to check imported checkpoints.

use super::dims::{GeneratorDims, PredictorDims, SetEncoderDims};

/// `(name, shape)` pairs.
pub type Inventory = Vec<(String, Vec<usize>)>;

fn linear(inv: &mut Inventory, name: &str, i: usize, o: usize, bias: bool) {
    inv.push((format!("{name}.weight"), vec![o, i]));
    if bias {
        inv.push((format!("{name}.bias"), vec![o]));
    }
}

fn gru(inv: &mut Inventory, name: &str, input: usize, hs: usize) {
    inv.push((format!("{name}.weight_ih"), vec![3 * hs, input]));
    inv.push((format!("{name}.weight_hh"), vec![3 * hs, hs]));
    inv.push((format!("{name}.bias_ih"), vec![3 * hs]));
    inv.push((format!("{name}.bias_hh"), vec![3 * hs]));
}

fn mab(inv: &mut Inventory, p: &str, dq: usize, dk: usize, dv: usize) {
    linear(inv, &format!("{p}.fc_q"), dq, dv, true);
    linear(inv, &format!("{p}.fc_k"), dk, dv, true);
    linear(inv, &format!("{p}.fc_v"), dk, dv, true);
    linear(inv, &format!("{p}.fc_o"), dv, dv, true);
}

fn set_pool(inv: &mut Inventory, p: &str, di: usize, dh: usize, dout: usize) {
    mab(inv, &format!("{p}.enc.0.mab"), di, di, dh);
    mab(inv, &format!("{p}.enc.1.mab"), dh, dh, dh);
    inv.push((format!("{p}.dec.0.S"), vec![1, 1, dh]));
    mab(inv, &format!("{p}.dec.0.mab"), dh, dh, dh);
    linear(inv, &format!("{p}.dec.1"), dh, dout, true);
}

fn set_encoder(inv: &mut Inventory, s: &SetEncoderDims) {
    set_pool(
        inv,
        "intra_setpool",
        s.feat_dim,
        s.intra_hidden,
        s.proto_dim,
    );
    set_pool(inv, "inter_setpool", s.proto_dim, s.inter_hidden, s.out_dim);
}

/// The graph-encoder part shared by both official models (GRUs, gates, mappers, unify layers).
fn gates(inv: &mut Inventory, hs: usize, max_n: usize) {
    let vs = hs + max_n;
    linear(inv, "gate_forward.0", vs, hs, true);
    linear(inv, "gate_backward.0", vs, hs, true);
    linear(inv, "mapper_forward.0", vs, hs, false);
    linear(inv, "mapper_backward.0", vs, hs, false);
    linear(inv, "hv_unify.0", 2 * hs, hs, true);
    linear(inv, "hg_unify.0", 2 * hs, hs, true);
}

/// Every tensor of the official generator state_dict.
pub fn generator(d: &GeneratorDims) -> Inventory {
    let (hs, nz, nvt) = (d.hs, d.nz, d.nvt);
    let mut inv = Vec::new();
    gru(&mut inv, "grue_forward", nvt, hs);
    gru(&mut inv, "grue_backward", nvt, hs);
    linear(&mut inv, "enc_g_mu", hs, nz, true);
    linear(&mut inv, "enc_g_var", hs, nz, true);
    linear(&mut inv, "fc1", d.set.out_dim, nz, true);
    linear(&mut inv, "fc2", d.set.out_dim, nz, true);
    gru(&mut inv, "grud", nvt, hs);
    linear(&mut inv, "fc3", nz, hs, true);
    linear(&mut inv, "add_vertex.0", hs, 2 * hs, true);
    linear(&mut inv, "add_vertex.2", 2 * hs, nvt, true);
    linear(&mut inv, "add_edge.0", 2 * hs, 4 * hs, true);
    linear(&mut inv, "add_edge.2", 4 * hs, 1, true);
    linear(&mut inv, "decoding_gate.0", hs + d.max_n, hs, true);
    linear(&mut inv, "decoding_mapper.0", hs + d.max_n, hs, false);
    gates(&mut inv, hs, d.max_n);
    set_encoder(&mut inv, &d.set);
    linear(&mut inv, "set_fc.0", d.set.feat_dim, nz, true);
    inv
}

/// Every tensor of the official predictor state_dict.
pub fn predictor(d: &PredictorDims) -> Inventory {
    let (hs, nz, nvt) = (d.hs, d.nz, d.nvt);
    let mut inv = Vec::new();
    gru(&mut inv, "grue_forward", nvt, hs);
    gru(&mut inv, "grue_backward", nvt, hs);
    linear(&mut inv, "fc1", hs, nz, true);
    linear(&mut inv, "fc2", hs, nz, true);
    gates(&mut inv, hs, d.max_n);
    set_encoder(&mut inv, &d.set);
    linear(&mut inv, "set_fc.0", d.set.feat_dim, nz, true);
    linear(
        &mut inv,
        "pred_fc.0",
        d.set.out_dim + nz,
        d.head_hidden,
        true,
    );
    linear(&mut inv, "pred_fc.2", d.head_hidden, 1, true);
    inv
}

/// Number of scalars in an inventory.
pub fn count(inv: &Inventory) -> usize {
    inv.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// Official NB201 sizes of the generator.
pub fn nb201_generator_dims() -> GeneratorDims {
    GeneratorDims {
        set: official_set_dims(512),
        nz: 56,
        hs: 56,
        nvt: 7,
        max_n: 8,
    }
}

/// Official NB201 sizes of the predictor.
pub fn nb201_predictor_dims() -> PredictorDims {
    PredictorDims {
        set: official_set_dims(512),
        nz: 56,
        hs: 512,
        nvt: 7,
        max_n: 8,
        head_hidden: 512,
    }
}

/// The official set-encoder widths (all 56) for a feature dim.
pub fn official_set_dims(feat_dim: usize) -> SetEncoderDims {
    SetEncoderDims {
        feat_dim,
        intra_hidden: 56,
        proto_dim: 56,
        inter_hidden: 56,
        out_dim: 56,
        heads: super::dims::HEADS,
    }
}

/// Values for every tensor of an inventory, drawn as PyTorch initialises them: `Linear` weights
/// and biases `U(±1/√fan_in)`, GRU tensors `U(±1/√H)`, PMA seeds Xavier-uniform.
pub fn pytorch_init(inv: &Inventory, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = crate::rng::Rng::new(seed, 0x1417);
    let fan_in_of = |prefix: &str| -> usize {
        inv.iter()
            .find(|(n, _)| n == &format!("{prefix}.weight"))
            .map_or(1, |(_, s)| s[1])
    };
    inv.iter()
        .map(|(name, shape)| {
            let numel: usize = shape.iter().product();
            let bound = if name.ends_with(".S") {
                (6.0 / (2.0 * shape[2] as f64)).sqrt()
            } else if name.contains("weight_ih")
                || name.contains("weight_hh")
                || name.contains("bias_ih")
                || name.contains("bias_hh")
            {
                1.0 / ((shape[0] / 3) as f64).sqrt()
            } else if name.ends_with(".weight") {
                1.0 / (shape[1] as f64).sqrt()
            } else if let Some(p) = name.strip_suffix(".bias") {
                1.0 / (fan_in_of(p) as f64).sqrt()
            } else {
                0.1
            };
            let vals = (0..numel)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect();
            (name.clone(), shape.clone(), vals)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_parameter_counts() {
        // Counts from the specification's parameter inventory (section 10).
        assert_eq!(count(&generator(&nb201_generator_dims())), 304_200);
        assert_eq!(generator(&nb201_generator_dims()).len(), 99);
        assert_eq!(count(&predictor(&nb201_predictor_dims())), 4_020_361);
        assert_eq!(predictor(&nb201_predictor_dims()).len(), 82);
    }
}
