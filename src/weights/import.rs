//! Import of official MetaD2A checkpoints (`torch.save(model.state_dict())`) into a weights
//! directory: `generator.safetensors`, `predictor.safetensors` and `manifest.json`.
//!
//! Tensor names are kept as in the state_dict. Tensors the inference path never reads are
//! dropped unless asked otherwise, and listed in the manifest. The written files are loaded back
//! with the models before the import reports success, so an import that finishes is loadable.

use std::path::{Path, PathBuf};

use super::manifest::{InputFile, Manifest, ModelEntry, Provenance, FORMAT, VERSION};
use super::store::WeightStore;
use super::torch::{read_state_dict, StateDict};
use crate::error::{Error, Result};
use crate::model::{Generator, Predictor};
use crate::space::Space;

pub use super::ExportDtype;

/// Module prefixes of the official generator that inference never reads (the leftover D-VAE
/// graph encoder and the unused `set_fc`).
pub const GENERATOR_UNUSED: &[&str] = &[
    "grue_forward.",
    "grue_backward.",
    "enc_g_mu.",
    "enc_g_var.",
    "gate_forward.",
    "gate_backward.",
    "mapper_forward.",
    "mapper_backward.",
    "hv_unify.",
    "hg_unify.",
    "set_fc.",
];

/// Module prefixes of the official predictor that inference never reads.
pub const PREDICTOR_UNUSED: &[&str] = &["fc2.", "hv_unify.", "set_fc."];

/// What to import and how.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub generator: PathBuf,
    pub predictor: PathBuf,
    pub out: PathBuf,
    pub dtype: ExportDtype,
    /// Keep the tensors inference does not read (for later training from these weights).
    pub keep_unused: bool,
    /// The command line, recorded in the manifest.
    pub command: String,
    /// What the checkpoints were trained on, as far as known, recorded in the manifest.
    pub data: String,
    pub feature_extractor: String,
}

fn read_checkpoint(path: &Path) -> Result<(StateDict, InputFile)> {
    let bytes = crate::weights::torch::read_checkpoint_file(path)?;
    let sd = read_state_dict(&bytes).map_err(|reason| Error::Checkpoint {
        file: path.display().to_string(),
        reason,
    })?;
    let input = InputFile::of(path.display().to_string(), &bytes);
    Ok((sd, input))
}

/// Serialises the float tensors of a state_dict (minus `drop` prefixes) as safetensors bytes.
/// Returns the bytes and the names left out.
pub fn export_state_dict(
    sd: &StateDict,
    drop: &[&str],
    dtype: ExportDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let mut dropped = Vec::new();
    let mut kept = Vec::new();
    for (name, t) in &sd.tensors {
        if drop.iter().any(|p| name.starts_with(p)) || !t.dtype.is_float() {
            dropped.push(name.clone());
        } else {
            kept.push((name.clone(), t.shape.clone(), t.to_f32()));
        }
    }
    let bytes = super::serialize(&kept, dtype, metadata)?;
    Ok((bytes, dropped))
}

fn require(sd: &StateDict, file: &InputFile, name: &str, what: &str) -> Result<()> {
    if sd.get(name).is_none() {
        return Err(Error::Checkpoint {
            file: file.path.clone(),
            reason: format!("no tensor `{name}`: this is not a MetaD2A {what} state_dict"),
        });
    }
    Ok(())
}

/// Imports the two official checkpoints into `opts.out` and returns the written manifest.
pub fn import_official(opts: &ImportOptions) -> Result<Manifest> {
    let (gsd, gin) = read_checkpoint(&opts.generator)?;
    let (psd, pin) = read_checkpoint(&opts.predictor)?;
    require(&gsd, &gin, "grud.weight_ih", "generator")?;
    require(&psd, &pin, "pred_fc.0.weight", "predictor")?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;

    let meta = Some(
        [("heads".to_string(), crate::model::HEADS.to_string())]
            .into_iter()
            .collect(),
    );
    let none: &[&str] = &[];
    let (gdrop, pdrop) = if opts.keep_unused {
        (none, none)
    } else {
        (GENERATOR_UNUSED, PREDICTOR_UNUSED)
    };
    let (gbytes, gdropped) = export_state_dict(&gsd, gdrop, opts.dtype, meta.clone())?;
    let (pbytes, pdropped) = export_state_dict(&psd, pdrop, opts.dtype, meta)?;

    // Load both back before writing anything: a checkpoint of another model fails here.
    let generator = Generator::load(&WeightStore::from_bytes(gin.path.clone(), gbytes.clone())?)?;
    let predictor = Predictor::load(&WeightStore::from_bytes(pin.path.clone(), pbytes.clone())?)?;
    let (gd, pd) = (generator.dims, predictor.dims);
    if gd.nvt != pd.nvt || gd.max_n != pd.max_n || gd.set.feat_dim != pd.set.feat_dim {
        return Err(Error::InconsistentModel {
            file: format!("{} + {}", gin.path, pin.path),
            reason: format!(
                "generator (types {}, vertices {}, features {}) and predictor (types {}, vertices {}, features {}) do not belong together",
                gd.nvt, gd.max_n, gd.set.feat_dim, pd.nvt, pd.max_n, pd.set.feat_dim
            ),
        });
    }
    let space =
        Space::from_graph_sizes(gd.nvt, gd.max_n).ok_or_else(|| Error::InconsistentModel {
            file: gin.path.clone(),
            reason: format!(
                "{} vertex types and {} vertices match no known search space",
                gd.nvt, gd.max_n
            ),
        })?;

    let gfile = "generator.safetensors";
    let pfile = "predictor.safetensors";
    crate::util::write_atomic(&opts.out.join(gfile), &gbytes)?;
    crate::util::write_atomic(&opts.out.join(pfile), &pbytes)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        space,
        dtype: opts.dtype.name().into(),
        feature_extractor: opts.feature_extractor.clone(),
        generator: ModelEntry::describe(
            gfile,
            &gbytes,
            serde_json::to_value(gd).expect("dims serialise"),
            gdropped,
        )?,
        predictor: ModelEntry::describe(
            pfile,
            &pbytes,
            serde_json::to_value(pd).expect("dims serialise"),
            pdropped,
        )?,
        provenance: Provenance {
            source: "MetaD2A checkpoints (state_dict), imported".into(),
            inputs: vec![gin, pin],
            command: opts.command.clone(),
            tool: format!("metad2a {}", env!("CARGO_PKG_VERSION")),
            licence: "as the source checkpoints (official MetaD2A code and checkpoints: MIT)"
                .into(),
            data: opts.data.clone(),
            commit: None,
        },
        extra: Default::default(),
    };
    // A cache left from earlier weights would not match these (the search layer writes a new
    // one: `search::import_with_graph_cache`).
    let cache = opts.out.join(super::GRAPH_CACHE_FILE);
    if cache.exists() {
        std::fs::remove_file(&cache).map_err(|e| Error::io(&cache, e))?;
    }
    manifest.write(&opts.out)?;
    Ok(manifest)
}
