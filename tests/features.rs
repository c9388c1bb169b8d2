//! The built-in EfficientNet-Lite0 backbone against an independent PyTorch forward pass
//! (`../shared/parity/effnet-lite0`), against the composed candle reference, and the readers.

mod common;

use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};
use metad2a::features::readers::{read_folder, read_idx};
use metad2a::features::{FeatureExtractor, Image, BACKBONE_FILE};
use metad2a::nn::reference::{to_vec, RefWeights};
use serde_json::Value;

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(5);
    idx
}

/// Max |a − b| relative to the largest |b|.
fn rel_to_max(got: &[f32], want: &[f32]) -> f32 {
    let m = want.iter().fold(0f32, |a, b| a.max(b.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / m
}

/// NCHW → NHWC of one image of a `[n, 3, h, w]` buffer.
fn nhwc(x: &[f32], i: usize, h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    let img = &x[i * 3 * plane..(i + 1) * 3 * plane];
    (0..plane)
        .flat_map(|p| (0..3).map(move |c| img[c * plane + p]))
        .collect()
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn backbone_matches_the_pytorch_reference() {
    let shared = need_shared!();
    let dir = shared.join("parity/effnet-lite0");
    let inputs = common::read_tensors(&dir.join("inputs.safetensors"));
    let expected = common::read_tensors(&dir.join("expected.safetensors"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let fx = FeatureExtractor::builtin(224).unwrap();
    let x = &inputs["x"].1;
    let (mut feats, mut logits) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let f = fx.net.features(&nhwc(x, i, 224, 224), 224, 224);
        logits.extend(fx.net.logits(&f).unwrap());
        feats.extend(f);
    }
    let ef = rel_to_max(&feats, &expected["features"].1);
    let el = rel_to_max(&logits, &expected["logits"].1);
    eprintln!(
        "backbone (f16 weights) vs PyTorch: features {ef:e}, logits {el:e} (max error / max value)"
    );
    assert!(ef < 2e-3 && el < 2e-3, "features {ef}, logits {el}");
    for i in 0..4 {
        let want: Vec<usize> = json["top5_imagenet_indices"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let got = top5(&logits[i * 1000..(i + 1) * 1000]);
        assert_eq!(got[0], want[0], "image {i}: top-1");
        let common = got.iter().filter(|g| want.contains(g)).count();
        assert!(common >= 4, "image {i}: top-5 {got:?} vs {want:?}");
    }
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn real_photos_from_jpeg_are_recognised() {
    let shared = need_shared!();
    let dir = shared.join("parity/effnet-lite0");
    let fx = FeatureExtractor::builtin(224).unwrap();
    for (file, expect_top1, also) in [
        ("china.jpg", 442usize, [698usize, 975]),
        ("flower.jpg", 985, [309, 738]),
    ] {
        let img = Image::open(&dir.join(file)).unwrap();
        assert_eq!((img.width, img.height), (640, 427));
        let f = fx.extract(&[img], &mut |_, _| {});
        let t = top5(&fx.net.logits(&f).unwrap());
        eprintln!("{file}: top-5 ImageNet classes {t:?}");
        assert_eq!(t[0], expect_top1, "{file}: {t:?}");
        assert!(also.iter().any(|c| t.contains(c)), "{file}: {t:?}");
    }
}

#[test]
fn fast_backbone_matches_the_composed_reference() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights/effnet-lite0")
        .join(BACKBONE_FILE);
    let fx = FeatureExtractor::load(&path, 64).unwrap();
    let r = RefWeights::load(&path).unwrap();
    // a smooth random image, odd size to exercise the asymmetric SAME padding
    let (h, w) = (67, 45);
    let x = common::random_vec(h * w * 3, 9, 1.0);
    let fast = fx.net.features(&x, h, w);
    let nchw: Vec<f32> = (0..3)
        .flat_map(|c| (0..h * w).map(move |p| (c, p)))
        .map(|(c, p)| x[p * 3 + c])
        .collect();
    let t = Tensor::from_vec(nchw, (1, 3, h, w), &Device::Cpu).unwrap();
    let (feats, logits) = metad2a::features::reference::forward(&r, &t).unwrap();
    let want = to_vec(&feats).unwrap();
    let e = rel_to_max(&fast, &want);
    assert!(e < 1e-4, "features differ by {e}");
    let e = rel_to_max(&fx.net.logits(&fast).unwrap(), &to_vec(&logits).unwrap());
    assert!(e < 1e-4, "logits differ by {e}");
}

#[test]
fn folder_reader_handles_mixed_images_and_reports_problems() {
    let dir = common::temp_dir("folder");
    for (c, n) in [("cat", 3), ("dog", 2)] {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        for i in 0..n {
            // mixed sizes and grey vs colour
            common::write_png(
                &dir.join(c).join(format!("{i}.png")),
                10 + i,
                8,
                i % 2 == 0,
                3 + i as u8,
            );
        }
    }
    std::fs::write(dir.join("dog/notes.txt"), b"not an image").unwrap();
    let imgs = read_folder(&dir, None, &mut |_, _| {}).unwrap();
    assert_eq!(imgs.class_names, vec!["cat", "dog"]);
    assert_eq!(imgs.labels, vec![0, 0, 0, 1, 1]);
    assert!(imgs
        .images
        .iter()
        .all(|i| i.rgb.len() == i.width * i.height * 3));
    assert_eq!(imgs.images[0].width, 10);
    let two = read_folder(&dir, Some(2), &mut |_, _| {}).unwrap();
    assert_eq!(two.labels, vec![0, 0, 1, 1]);
    // the features of mixed sizes come out at one width
    let fx = FeatureExtractor::builtin(32).unwrap();
    let data = fx.dataset(&two, &mut |_, _| {}).unwrap();
    assert_eq!(
        (data.num_rows(), data.dim, data.num_classes()),
        (4, 1280, 2)
    );
    assert_eq!(
        data.class_names.as_deref(),
        Some(&["cat".to_string(), "dog".to_string()][..])
    );

    // an unreadable image is named
    std::fs::write(dir.join("cat/9.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let e = read_folder(&dir, None, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("9.png") && e.contains("unreadable PNG"), "{e}");
    std::fs::remove_file(dir.join("cat/9.png")).unwrap();
    // an empty class is named
    std::fs::create_dir_all(dir.join("emu")).unwrap();
    let e = read_folder(&dir, None, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("emu") && e.contains("no PNG or JPEG"), "{e}");
    // not a folder of folders
    let e = read_folder(&dir.join("cat"), None, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no class sub-folders"), "{e}");
}

fn idx_files(dir: &Path, n: usize, gz: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut img = vec![0, 0, 8, 3];
    img.extend((n as u32).to_be_bytes());
    img.extend(4u32.to_be_bytes());
    img.extend(5u32.to_be_bytes());
    img.extend((0..n * 20).map(|i| (i * 7) as u8));
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    lab.extend((0..n).map(|i| (i % 3) as u8));
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        if gz {
            let mut e = flate2::write::GzEncoder::new(
                std::fs::File::create(&p).unwrap(),
                flate2::Compression::fast(),
            );
            e.write_all(b).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(&p, b).unwrap();
        }
        p
    };
    (write("images.idx", &img), write("labels.idx", &lab))
}

#[test]
fn idx_reader_reads_plain_and_gzip_and_rejects_bad_files() {
    let dir = common::temp_dir("idx");
    for gz in [false, true] {
        let (i, l) = idx_files(&dir, 9, gz);
        let d = read_idx(&i, &l, None).unwrap();
        assert_eq!(d.images.len(), 9);
        assert_eq!((d.images[0].width, d.images[0].height), (5, 4));
        assert_eq!(d.labels[..4], [0, 1, 2, 0]);
        assert_eq!(d.class_names.len(), 3);
        // grey replicated to RGB
        assert_eq!(d.images[1].rgb[..3], [140, 140, 140]);
        let two = read_idx(&i, &l, Some(2)).unwrap();
        assert_eq!(two.labels, vec![0, 1, 2, 0, 1, 2]);
    }
    let (i, l) = idx_files(&dir, 9, false);
    // truncated images
    let b = std::fs::read(&i).unwrap();
    std::fs::write(&i, &b[..b.len() - 3]).unwrap();
    let e = read_idx(&i, &l, None).unwrap_err().to_string();
    assert!(e.contains("header says 9 images"), "{e}");
    // labels and images swapped
    let e = read_idx(&l, &l, None).unwrap_err().to_string();
    assert!(e.contains("not an idx image file"), "{e}");
    // label count mismatch
    let (i, _) = idx_files(&dir, 9, false);
    let (_, l4) = {
        let d2 = common::temp_dir("idx2");
        idx_files(&d2, 4, false)
    };
    let e = read_idx(&i, &l4, None).unwrap_err().to_string();
    assert!(e.contains("labels for 9 images"), "{e}");
}

#[test]
fn cli_features_from_images_and_idx() {
    let bin = env!("CARGO_BIN_EXE_metad2a");
    let tmp = common::temp_dir("cli-features");
    let out = tmp.join("f.safetensors");
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/fashion-mnist");
    common::output_ok(
        std::process::Command::new(bin)
            .args([
                "features",
                "--per-class",
                "3",
                "--resolution",
                "32",
                "--images",
            ])
            .arg(&ex)
            .arg("--out")
            .arg(&out),
    );
    let d = metad2a::Dataset::load(&out).unwrap();
    assert_eq!((d.num_rows(), d.dim, d.num_classes()), (30, 1280, 10));
    assert_eq!(d.class_names.as_ref().unwrap()[0], "ankle_boot");
    // idx input
    let (i, l) = idx_files(&tmp, 12, true);
    common::output_ok(
        std::process::Command::new(bin)
            .args(["features", "--resolution", "32", "--idx"])
            .arg(&i)
            .arg(&l)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(metad2a::Dataset::load(&out).unwrap().num_rows(), 12);
    // no input at all is a clear error
    let run = std::process::Command::new(bin)
        .args(["features", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("give one of --images"));
}
