//! Bad weights and checkpoints give clear errors that name the problem, never a panic.

mod common;

use std::io::Write;

use metad2a::model::dims::GeneratorDims;
use metad2a::model::inventory::{self, pytorch_init};
use metad2a::model::{Generator, Predictor};
use metad2a::weights::import::{import_official, ExportDtype, ImportOptions};
use metad2a::weights::torch::read_state_dict;
use metad2a::weights::{serialize, WeightStore};
use metad2a::Error;

fn generator_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    pytorch_init(&inventory::generator(&inventory::nb201_generator_dims()), 1)
}

fn good_generator_bytes() -> Vec<u8> {
    serialize(&generator_tensors(), ExportDtype::F32, None).unwrap()
}

fn load_generator(bytes: Vec<u8>) -> metad2a::Result<Generator> {
    Generator::load(&WeightStore::from_bytes("gen.safetensors", bytes)?)
}

#[test]
fn good_random_weights_load_with_the_right_sizes() {
    let g = load_generator(good_generator_bytes()).unwrap();
    let want: GeneratorDims = inventory::nb201_generator_dims();
    assert_eq!(g.dims, want);
}

#[test]
fn truncated_weights_file() {
    let b = good_generator_bytes();
    for cut in [0, 5, 8, 100, b.len() / 2, b.len() - 1] {
        let e = load_generator(b[..cut].to_vec()).unwrap_err();
        assert!(matches!(e, Error::BadWeightsFile { .. }), "cut {cut}: {e}");
        assert!(
            e.to_string()
                .contains("gen.safetensors: not a valid safetensors file"),
            "{e}"
        );
    }
}

#[test]
fn corrupt_header() {
    let mut b = good_generator_bytes();
    b[8] = b'#'; // the opening brace of the JSON header
    let e = load_generator(b).unwrap_err();
    assert!(matches!(e, Error::BadWeightsFile { .. }), "{e}");
    // a header length far beyond the file
    let mut b = good_generator_bytes();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = load_generator(b).unwrap_err();
    assert!(matches!(e, Error::BadWeightsFile { .. }), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let t: Vec<_> = generator_tensors()
        .into_iter()
        .filter(|(n, _, _)| n != "add_edge.2.bias")
        .collect();
    let e = load_generator(serialize(&t, ExportDtype::F32, None).unwrap()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "add_edge.2.bias"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "gen.safetensors: missing tensor `add_edge.2.bias`"
    );
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let mut t = generator_tensors();
    let i = t
        .iter()
        .position(|(n, _, _)| n == "add_vertex.2.weight")
        .unwrap();
    t[i].1 = vec![8, 112];
    t[i].2 = vec![0.1; 8 * 112];
    let e = load_generator(serialize(&t, ExportDtype::F32, None).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "gen.safetensors: tensor `add_vertex.2.weight` has shape [8, 112], expected [7, 112]"
    );
}

#[test]
fn inconsistent_sizes_are_reported() {
    let mut t = generator_tensors();
    // a GRU whose weight_hh is not [3H, H]
    let i = t
        .iter()
        .position(|(n, _, _)| n == "grud.weight_hh")
        .unwrap();
    t[i].1 = vec![100, 56];
    t[i].2 = vec![0.0; 100 * 56];
    let e = load_generator(serialize(&t, ExportDtype::F32, None).unwrap()).unwrap_err();
    assert!(matches!(e, Error::InconsistentModel { .. }), "{e}");
}

#[test]
fn unsupported_dtype_is_named() {
    use safetensors::tensor::TensorView;
    let data = vec![0u8; 8 * 3];
    let view = TensorView::new(safetensors::Dtype::I64, vec![3], &data).unwrap();
    let b = safetensors::serialize(vec![("steps".to_string(), view)], None).unwrap();
    let e = load_generator(b).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedDtype { name, .. } if name == "steps"),
        "{e}"
    );
}

#[test]
fn predictor_weights_are_not_a_generator() {
    let p = pytorch_init(&inventory::predictor(&inventory::nb201_predictor_dims()), 2);
    let e = load_generator(serialize(&p, ExportDtype::F32, None).unwrap()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "grud.weight_hh"),
        "{e}"
    );
    let g = good_generator_bytes();
    let e = Predictor::load(&WeightStore::from_bytes("g", g).unwrap()).unwrap_err();
    assert!(matches!(&e, Error::MissingTensor { .. }), "{e}");
}

#[test]
fn checkpoint_that_is_not_a_state_dict() {
    // a pickled list
    let list = [0x80, 2, b']', b'.'];
    for bytes in [
        common::torch_legacy_file(&list),
        common::torch_zip_file(&list),
    ] {
        let e = read_state_dict(&bytes).unwrap_err();
        assert!(e.contains("holds a list, not a state_dict"), "{e}");
    }
    // a dict with a non-tensor entry: {'epoch': 3}
    let dict = [
        0x80, 2, b'}', b'(', 0x8c, 5, b'e', b'p', b'o', b'c', b'h', b'K', 3, b'u', b'.',
    ];
    let e = read_state_dict(&common::torch_zip_file(&dict)).unwrap_err();
    assert!(e.contains("entry `epoch`: is an int, not a tensor"), "{e}");
    // an empty dict
    let e = read_state_dict(&common::torch_zip_file(&[0x80, 2, b'}', b'.'])).unwrap_err();
    assert!(e.contains("empty"), "{e}");
    // not a torch file at all
    let e = read_state_dict(b"hello world").unwrap_err();
    assert!(e.contains("neither a zip-format nor a legacy"), "{e}");
    // a zip without data.pkl
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        z.start_file("notes.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"hi").unwrap();
        z.finish().unwrap();
    }
    let e = read_state_dict(&buf.into_inner()).unwrap_err();
    assert!(e.contains("no <prefix>/data.pkl"), "{e}");
    // a pickle that would call a function with a forbidden opcode (INST)
    let e = read_state_dict(&common::torch_zip_file(b"\x80\x02ios\nsystem\n.")).unwrap_err();
    assert!(e.contains("not accepted"), "{e}");
}

#[test]
fn importer_errors_name_the_file_and_write_nothing() {
    let dir = common::temp_dir("bad-import");
    let bad = dir.join("bad.pt");
    std::fs::write(&bad, common::torch_zip_file(&[0x80, 2, b']', b'.'])).unwrap();
    let out = dir.join("out");
    let e = import_official(&ImportOptions {
        generator: bad.clone(),
        predictor: bad.clone(),
        out: out.clone(),
        dtype: ExportDtype::F32,
        keep_unused: false,
        command: String::new(),
        data: String::new(),
        feature_extractor: String::new(),
    })
    .unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(e.to_string().starts_with(&bad.display().to_string()), "{e}");
    assert!(!out.exists(), "nothing is written on failure");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn truncated_official_checkpoint() {
    let shared = need_shared!();
    let b = std::fs::read(shared.join("parity/nb201/generator_ckpt.pt")).unwrap();
    for cut in [10, b.len() / 3, b.len() - 30] {
        let e = read_state_dict(&b[..cut]).unwrap_err();
        assert!(!e.is_empty());
    }
    assert!(read_state_dict(&b).is_ok());
}

#[test]
fn cli_reports_errors_without_panicking() {
    let dir = common::temp_dir("cli");
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metad2a"))
        .arg("inspect")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("not a valid safetensors file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The engine's API is the same with and without feature `cuda`: without it, `use_cuda` says
/// why and the engine keeps searching on the CPU.
#[cfg(not(feature = "cuda"))]
#[test]
fn use_cuda_without_the_feature_is_an_error_not_a_missing_method() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/nb201-lite0-ranker");
    let mut engine = metad2a::Engine::load(dir).unwrap();
    let why = engine.use_cuda().unwrap_err();
    assert!(why.contains("--features cuda"), "{why}");
    assert!(engine.device_name().is_none());
}
