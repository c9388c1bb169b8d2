//! Every size read from a file is checked against the file and against the documented caps
//! (docs/reliability.md) before anything is allocated, and each refusal says which limit was
//! hit. Also: outputs are written atomically (a process killed mid-write leaves the old file).

mod common;

use std::path::Path;
use std::process::Command;

use metad2a::features::readers::{maybe_gunzip, maybe_gunzip_within, parse_idx};
use metad2a::features::Image;
use metad2a::weights::torch::{read_state_dict, TENSOR_BYTES_PER_FILE_BYTE};
use metad2a::Dataset;

/// CRC-32 (IEEE), bit by bit, for patching PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let dir = common::temp_dir("png");
    let p = dir.join("a.png");
    common::write_png(&p, w, h, false, 7);
    std::fs::read(p).unwrap()
}

#[test]
fn png_header_claiming_more_pixels_than_the_file_can_hold() {
    let good = png_bytes(3, 2);
    assert_eq!(
        Image::decode(&good).unwrap().width,
        3,
        "the unpatched file decodes"
    );
    // IHDR: 8-byte signature, length, "IHDR", width, height, ...; CRC over type + data.
    assert_eq!(&good[12..16], b"IHDR");
    let forge = |w: u32, h: u32| {
        let mut b = good.clone();
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    };
    // 4000x4000 = 16 Mi pixels is under the 64 Mi pixel cap, but not from ~80 bytes.
    let e = Image::decode(&forge(4000, 4000)).unwrap_err();
    assert!(e.contains("4000x4000") && e.contains("forged"), "{e}");
    // Over the per-side cap.
    let e = Image::decode(&forge(20_000, 1)).unwrap_err();
    assert!(e.contains("limit of 16384 per side"), "{e}");
    // Over the pixel cap while under the side cap.
    let e = Image::decode(&forge(16_000, 16_000)).unwrap_err();
    assert!(e.contains("limit"), "{e}");
}

#[test]
#[cfg_attr(
    shared_missing,
    ignore = "needs ../shared (fixtures and data), which is missing"
)]
fn jpeg_header_claiming_more_pixels_than_the_file_can_hold() {
    let shared = need_shared!();
    let good = std::fs::read(shared.join("parity/effnet-lite0/cifar_cat.jpg")).unwrap();
    assert!(Image::decode(&good).is_ok(), "the unpatched file decodes");
    // SOFn: FF C0..C2, length (2), precision (1), height (2), width (2).
    let at = good
        .windows(2)
        .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]))
        .expect("a SOF marker");
    let mut b = good.clone();
    b[at + 5..at + 7].copy_from_slice(&8000u16.to_be_bytes());
    b[at + 7..at + 9].copy_from_slice(&8000u16.to_be_bytes());
    let e = Image::decode(&b).unwrap_err();
    assert!(e.contains("8000x8000") && e.contains("forged"), "{e}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

#[test]
fn gzip_streams_stop_at_the_cap() {
    let zeros = vec![0u8; 1 << 20];
    let gz = gzip(&zeros);
    assert!(gz.len() < 2000, "a small bomb: {} bytes", gz.len());
    assert_eq!(maybe_gunzip(gz.clone()).unwrap(), zeros);
    let e = maybe_gunzip_within(gz, 100_000).unwrap_err();
    assert!(e.contains("more than 100000 bytes"), "{e}");
    // Uncompressed input obeys the same cap.
    let e = maybe_gunzip_within(vec![1; 2000], 1000).unwrap_err();
    assert!(e.contains("limit of 1000 bytes"), "{e}");
    // A broken stream is an error, not a panic.
    let mut bad = gzip(b"hello idx world");
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    bad.truncate(n - 3);
    assert!(maybe_gunzip(bad).is_err());
}

fn idx_images(n: u32, rows: u32, cols: u32, data: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        b.extend(v.to_be_bytes());
    }
    b.extend((0..data).map(|i| i as u8));
    b
}

fn idx_labels(labels: &[u8], claimed: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend(claimed.to_be_bytes());
    b.extend(labels);
    b
}

#[test]
fn idx_headers_are_checked_against_the_data() {
    let labels = idx_labels(&[0, 1, 0], 3);
    let ok = parse_idx(&idx_images(3, 2, 2, 12), &labels, None).unwrap();
    assert_eq!((ok.images.len(), ok.class_names.len()), (3, 2));
    // 60,000 images of 28x28 claimed, 100 bytes present: refused before allocating.
    let (which, e) = parse_idx(&idx_images(60_000, 28, 28, 100), &labels, None).unwrap_err();
    assert_eq!(which, 0);
    assert!(
        e.contains("60000 images of 28x28") && e.contains("116 bytes"),
        "{e}"
    );
    // Sizes whose product overflows.
    let (_, e) =
        parse_idx(&idx_images(u32::MAX, u32::MAX, u32::MAX, 4), &labels, None).unwrap_err();
    assert!(e.contains("header says"), "{e}");
    // Side cap.
    let (_, e) = parse_idx(
        &idx_images(1, 1, 20_000, 20_000),
        &idx_labels(&[0], 1),
        None,
    )
    .unwrap_err();
    assert!(e.contains("limit of 16384 per side"), "{e}");
    // Label count disagreeing with its header or with the images.
    let (which, e) =
        parse_idx(&idx_images(3, 2, 2, 12), &idx_labels(&[0, 1], 3), None).unwrap_err();
    assert_eq!(which, 1);
    assert!(e.contains("labels for 3 images"), "{e}");
}

#[test]
fn torch_views_may_not_rebuild_far_more_than_the_file() {
    let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // A transposed 2x2 view of the storage: read back correctly.
    let pkl = common::state_dict_pickle(&[("w", "0", 4, &[2, 2], &[1, 2])]);
    let sd = read_state_dict(&common::torch_zip_with_storages(&pkl, &[("0", &storage)])).unwrap();
    let w = sd.get("w").unwrap();
    assert_eq!(w.shape, vec![2, 2]);
    assert_eq!(w.to_f32(), vec![1.0, 3.0, 2.0, 4.0]);
    // A zero-stride view of 4 floats as 2^28 of them (1 GiB): refused.
    let pkl = common::state_dict_pickle(&[("w", "0", 4, &[1 << 28], &[0])]);
    let file = common::torch_zip_with_storages(&pkl, &[("0", &storage)]);
    let e = read_state_dict(&file).unwrap_err();
    assert!(
        e.contains(&format!("{TENSOR_BYTES_PER_FILE_BYTE}x the file's size")),
        "{e}"
    );
    // Many views of one storage add up against the same budget.
    let big = vec![0u8; 256 << 10]; // 64 Ki floats
    let views: Vec<(String, i64)> = (0..40).map(|i| (format!("v{i}"), 1 << 16)).collect();
    let entries: Vec<common::PickledTensor> = views
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                "0",
                1 << 16,
                std::slice::from_ref(s),
                &[1i64][..],
            )
        })
        .collect();
    let pkl = common::state_dict_pickle(&entries);
    let e = read_state_dict(&common::torch_zip_with_storages(&pkl, &[("0", &big)])).unwrap_err();
    assert!(e.contains("refused"), "{e}");
    // A view reaching past its storage.
    let pkl = common::state_dict_pickle(&[("w", "0", 4, &[8], &[1])]);
    assert!(read_state_dict(&common::torch_zip_with_storages(&pkl, &[("0", &storage)])).is_err());
}

#[test]
fn feature_files_over_the_row_and_class_caps() {
    use metad2a::dataset::{MAX_CLASSES, MAX_ROWS};
    let e = Dataset::new(
        vec![0.5; 2],
        1,
        vec![0, 1],
        Some(vec!["a".into(); MAX_CLASSES + 1]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("limit of 100000"), "{e}");
    // A file claiming MAX_ROWS + 1 rows of width 1, in f16 and u8 labels.
    let n = MAX_ROWS + 1;
    let feats = vec![0u8; 2 * n];
    let labels = vec![0u8; n];
    let bytes = safetensors::serialize(
        [
            (
                "features",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![n, 1], &feats)
                    .unwrap(),
            ),
            (
                "labels",
                safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![n], &labels)
                    .unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let e = Dataset::from_safetensors(&bytes, "big").unwrap_err();
    assert!(e.to_string().contains("limit of 16777216 rows"), "{e}");
}

#[test]
fn whole_file_reads_refuse_files_over_their_cap() {
    let dir = common::temp_dir("caps");
    let p = dir.join("f.bin");
    std::fs::write(&p, vec![7u8; 5000]).unwrap();
    assert_eq!(
        metad2a::util::read_limited(&p, 5000, "a test file")
            .unwrap()
            .len(),
        5000
    );
    let e = metad2a::util::read_limited(&p, 4999, "a test file").unwrap_err();
    assert!(
        e.to_string()
            .contains("limit of 4999 bytes for a test file"),
        "{e}"
    );
    // The manifest cap.
    std::fs::write(
        dir.join("manifest.json"),
        vec![b' '; metad2a::weights::manifest::MAX_MANIFEST_BYTES as usize + 1],
    )
    .unwrap();
    let e = metad2a::weights::Manifest::read(&dir).unwrap_err();
    assert!(e.to_string().contains("for a manifest"), "{e}");
}

/// A feature matrix of 100 classes x 20 rows x 256 values (200 KB) for `features --tensor`.
fn matrix_file(dir: &Path) -> std::path::PathBuf {
    let v = common::random_vec(100 * 20 * 256, 3, 1.0);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let out = safetensors::serialize(
        [(
            "m",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2000, 256], &bytes)
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let p = dir.join("m.safetensors");
    std::fs::write(&p, out).unwrap();
    p
}

/// Runs `metad2a features --tensor ...` under a file-size limit of 8 KiB, with SIGXFSZ either
/// killing the process mid-write (the default) or ignored (the write then fails with EFBIG).
fn features_under_ulimit(
    dir: &Path,
    matrix: &Path,
    out: &Path,
    ignore_signal: bool,
) -> std::process::Output {
    let trap = if ignore_signal { "trap '' XFSZ; " } else { "" };
    Command::new("sh")
        .arg("-c")
        .arg(format!("{trap}ulimit -f 16; exec \"$0\" features --tensor \"$1:m\" --rows-per-class 20 --out \"$2\""))
        .arg(env!("CARGO_BIN_EXE_metad2a"))
        .arg(matrix)
        .arg(out)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_write_cut_short_leaves_the_old_file_intact() {
    let dir = common::temp_dir("atomic");
    let matrix = matrix_file(&dir);
    let out = dir.join("data.safetensors");
    let old = b"the previous feature file".to_vec();

    // Killed by SIGXFSZ in the middle of writing.
    std::fs::write(&out, &old).unwrap();
    let r = features_under_ulimit(&dir, &matrix, &out, false);
    assert!(
        !r.status.success(),
        "the file-size limit must stop the write"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        old,
        "old file intact after a kill"
    );

    // The write fails (EFBIG): a clear error, the old file intact, no temporary left.
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap().to_string_lossy().contains(".tmp-") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let r = features_under_ulimit(&dir, &matrix, &out, true);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("data.safetensors"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        old,
        "old file intact after a failed write"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");

    // Without the limit the same command replaces the file with a complete one.
    common::output_ok(
        Command::new(env!("CARGO_BIN_EXE_metad2a"))
            .args(["features", "--rows-per-class", "20", "--tensor"])
            .arg(format!("{}:m", matrix.display()))
            .arg("--out")
            .arg(&out),
    );
    let d = Dataset::load(&out).unwrap();
    assert_eq!((d.num_rows(), d.dim, d.num_classes()), (2000, 256, 100));
}

#[test]
fn committed_fuzz_seeds_are_accepted_by_their_parsers() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).unwrap();
    for f in [
        "torch_checkpoint/small_zip.pt",
        "torch_checkpoint/small_legacy.pt",
    ] {
        let sd = read_state_dict(&read(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!sd.tensors.is_empty(), "{f}");
    }
    Dataset::from_safetensors(&read("feature_file/small.safetensors"), "seed").unwrap();
    metad2a::weights::WeightStore::from_bytes("seed", read("weights_store/small.safetensors"))
        .unwrap();
    Image::decode(&read("image/fmnist.png")).unwrap();
    // idx seeds: the first byte says where images end and labels begin (see the target).
    for f in ["idx/raw.bin", "idx/gz.bin"] {
        let b = read(f);
        let rest = &b[1..];
        let (a, l) = rest.split_at(b[0] as usize * rest.len() / 255);
        let set = parse_idx(
            &maybe_gunzip(a.to_vec()).unwrap(),
            &maybe_gunzip(l.to_vec()).unwrap(),
            None,
        )
        .unwrap_or_else(|(_, e)| panic!("{f}: {e}"));
        assert!(!set.images.is_empty(), "{f}");
    }
}
