//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared`, where the fixtures live. When it is missing the test is skipped with a loud
/// message, except under CI (`CI` or `METAD2A_REQUIRE_SHARED` set), where it fails.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("parity/nb201/expected.json").is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() || std::env::var_os("METAD2A_REQUIRE_SHARED").is_some() {
        panic!(
            "../shared (parity fixtures and data) is missing: {} does not exist",
            p.display()
        );
    }
    eprintln!(
        "\n**************** SKIPPED: ../shared not found at {}; this test needs its fixtures ****************\n",
        p.display()
    );
    None
}

/// Returns the shared directory or ends the test early (see [`shared`]).
#[macro_export]
macro_rules! need_shared {
    () => {
        match common::shared() {
            Some(p) => p,
            None => return,
        }
    };
}

/// Runs `cmd` and returns its output; fails the test, showing its standard error, when it
/// does not succeed.
pub fn output_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh, empty temporary directory for this test.
/// A finished process as (succeeded, stdout, stderr).
pub fn outcome(out: &std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "metad2a-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// All tensors of a safetensors file, read with candle (independently of the engine's store),
/// as f32 vectors with their shapes.
pub fn read_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|(k, t)| {
            let shape = t.dims().to_vec();
            let v = t
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k, (shape, v))
        })
        .collect()
}

/// Largest `|a - b| / max(1, |b|)`; panics on a length mismatch.
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Asserts `|a - b| <= tol * max(1, |b|)` elementwise, and that the reference is not all zeros.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    assert!(
        want.iter().any(|&x| x != 0.0),
        "{what}: reference is all zeros"
    );
    let e = max_rel_err(got, want);
    assert!(e <= tol, "{what}: max error {e:e} exceeds {tol:e}");
    e
}

/// Deterministic pseudo-random values in [-scale, scale).
pub fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = metad2a::rng::Rng::new(seed, 99);
    (0..n).map(|_| (r.next_f32() * 2.0 - 1.0) * scale).collect()
}

/// A `w`x`h` PNG whose bytes follow a simple pattern set by `seed`.
pub fn write_png(path: &Path, w: u32, h: u32, grey: bool, seed: u8) {
    let ch = if grey { 1 } else { 3 };
    let data: Vec<u8> = (0..w * h * ch)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect();
    write_png_bytes(path, w, h, grey, &data);
}

/// A PNG of the given 8-bit grey or RGB pixels.
pub fn write_png_bytes(path: &Path, w: u32, h: u32, grey: bool, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(if grey {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
}

/// Tensors by name: shape and f32 values.
pub type Tensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A parity fixture directory of `../shared/parity` (`nb201` or `mbv3`).
pub struct Fixture {
    pub dir: PathBuf,
    pub inputs: Tensors,
    pub expected: Tensors,
    pub json: serde_json::Value,
}

impl Fixture {
    pub fn load(shared: &Path, space: &str) -> Self {
        let dir = shared.join("parity").join(space);
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        Fixture {
            inputs: read_tensors(&dir.join("inputs.safetensors")),
            expected: read_tensors(&dir.join("expected.safetensors")),
            dir,
            json,
        }
    }

    pub fn input(&self, k: &str) -> &[f32] {
        &self
            .inputs
            .get(k)
            .unwrap_or_else(|| panic!("fixture lacks input {k}"))
            .1
    }

    pub fn want(&self, k: &str) -> &[f32] {
        &self
            .expected
            .get(k)
            .unwrap_or_else(|| panic!("fixture lacks {k}"))
            .1
    }

    /// Imports the fixture's official checkpoints into a fresh directory.
    pub fn import(
        &self,
        dtype: metad2a::weights::import::ExportDtype,
        keep_unused: bool,
    ) -> PathBuf {
        let out = temp_dir(&format!("import-{}", dtype.name()));
        import_fixture(&self.dir, &out, dtype, keep_unused, false);
        out
    }

    /// The importer reproduces the fixture's reference safetensors: every tensor when asked to
    /// keep them all; by default the unused ones are dropped, listed, and the rest is exact.
    pub fn check_import(&self, space: metad2a::space::Space) {
        // With every tensor kept, the import equals the reference safetensors, tensor for tensor.
        let full = self.import(metad2a::weights::import::ExportDtype::F32, true);
        for model in ["generator", "predictor"] {
            let got = read_tensors(&full.join(format!("{model}.safetensors")));
            let want = read_tensors(&self.dir.join(format!("{model}.safetensors")));
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{model} names"
            );
            for (k, (shape, v)) in &want {
                assert_eq!(&got[k].0, shape, "{model}.{k} shape");
                assert!(got[k].1 == *v, "{model}.{k} values differ");
            }
        }
        // By default the unused tensors are dropped, listed in the manifest, and the rest is exact.
        let lean = self.import(metad2a::weights::import::ExportDtype::F32, false);
        let manifest = metad2a::weights::Manifest::read(&lean).unwrap();
        assert_eq!(manifest.space, space);
        for (model, entry, unused) in [
            (
                "generator",
                &manifest.generator,
                metad2a::weights::import::GENERATOR_UNUSED,
            ),
            (
                "predictor",
                &manifest.predictor,
                metad2a::weights::import::PREDICTOR_UNUSED,
            ),
        ] {
            let got = read_tensors(&lean.join(&entry.file));
            let want = read_tensors(&self.dir.join(format!("{model}.safetensors")));
            for k in want.keys() {
                let is_unused = unused.iter().any(|p| k.starts_with(p));
                assert_eq!(got.contains_key(k), !is_unused, "{model}.{k} kept/dropped");
                assert_eq!(
                    entry.dropped.contains(k),
                    is_unused,
                    "{model}.{k} listed as dropped"
                );
                if !is_unused {
                    assert!(got[k].1 == want[k].1, "{model}.{k} values differ");
                }
            }
            let bytes = std::fs::read(lean.join(&entry.file)).unwrap();
            assert_eq!(entry.sha256, metad2a::weights::sha256_hex(&bytes));
        }
        assert_eq!(manifest.generator.dropped.len(), 24);
        assert_eq!(manifest.predictor.dropped.len(), 6);
    }
}

/// A legacy-format torch file whose object pickle is `main` and that holds no storages.
pub fn torch_legacy_file(main: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 2, 0x8a, 10];
    f.extend_from_slice(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]);
    f.push(b'.');
    f.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']); // protocol version 1001
    f.extend([0x80, 2, b'}', b'.']); // sys info
    f.extend_from_slice(main);
    f.extend([0x80, 2, b']', b'.']); // no storages
    f
}

/// A zip-format torch file whose `archive/data.pkl` is `pkl`.
pub fn torch_zip_file(pkl: &[u8]) -> Vec<u8> {
    torch_zip_with_storages(pkl, &[])
}

/// A zip-format torch file with `archive/data.pkl` and storages `archive/data/<key>`.
pub fn torch_zip_with_storages(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pkl).unwrap();
        for (key, bytes) in storages {
            z.start_file(format!("archive/data/{key}"), opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.start_file("archive/version", opts).unwrap();
        z.write_all(b"3\n").unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// A tensor entry of [`state_dict_pickle`]: name, storage key, storage elements, size, stride.
pub type PickledTensor<'a> = (&'a str, &'a str, usize, &'a [i64], &'a [i64]);

/// A protocol-2 pickle of `{name: tensor}` as `torch.save` writes it: each tensor is
/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})` over a float
/// storage `('storage', torch.FloatStorage, key, 'cpu', numel)`.
pub fn state_dict_pickle(tensors: &[PickledTensor]) -> Vec<u8> {
    fn text(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: i64) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    fn tuple(p: &mut Vec<u8>, xs: &[i64]) {
        p.push(b'(');
        for &x in xs {
            int(p, x);
        }
        p.push(b't');
    }
    let mut p = vec![0x80, 2, b'}', b'('];
    for &(name, key, numel, size, stride) in tensors {
        text(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        text(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        text(&mut p, key);
        text(&mut p, "cpu");
        int(&mut p, numel as i64);
        p.extend(b"tQ");
        int(&mut p, 0);
        tuple(&mut p, size);
        tuple(&mut p, stride);
        p.extend([0x89, b'}', b't', b'R']);
    }
    p.extend(b"u.");
    p
}

/// Imports the official-format checkpoints of a parity fixture directory
/// (`../shared/parity/<space>`) into the weights directory `out`.
pub fn import_fixture(
    fixture: &Path,
    out: &Path,
    dtype: metad2a::weights::import::ExportDtype,
    keep_unused: bool,
    graph_cache: bool,
) {
    let opts = metad2a::weights::import::ImportOptions {
        generator: fixture.join("generator_ckpt.pt"),
        predictor: fixture.join("predictor_ckpt.pt"),
        out: out.to_path_buf(),
        dtype,
        keep_unused,
        command: "test".into(),
        data: "parity fixture".into(),
        feature_extractor: "fixture".into(),
    };
    if graph_cache {
        metad2a::search::import_with_graph_cache(&opts).unwrap();
    } else {
        metad2a::weights::import::import_official(&opts).unwrap();
    }
}
