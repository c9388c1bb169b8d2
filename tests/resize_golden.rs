//! The image resize against Pillow's own pixels: `tests/golden/pil_resize.json` holds what
//! Pillow's bilinear resize (the official feature pipeline's) makes of a synthetic image,
//! written by `scripts/pil-resize-golden.py`. Our resize must give the same bytes.

use metad2a::features::Image;

fn source(w: usize, h: usize) -> Image {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                rgb.push(((x * 37 + y * 91 + c * 53 + ((x * y) % 17) * 7) % 256) as u8);
            }
        }
    }
    Image {
        width: w,
        height: h,
        rgb,
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn resize_matches_pillow_bilinear() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/pil_resize.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dims = doc["source"].as_array().unwrap();
    let src = source(
        dims[0].as_u64().unwrap() as usize,
        dims[1].as_u64().unwrap() as usize,
    );
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let want = unhex(case["rgb_hex"].as_str().unwrap());
        assert_eq!(want.len(), w * h * 3);
        let got = src.resize(w, h);
        assert_eq!((got.width, got.height), (w, h));
        if let Some(i) = (0..want.len()).find(|&i| got.rgb[i] != want[i]) {
            let p = i / 3;
            panic!(
                "{}x{} -> {w}x{h}: pixel ({}, {}) channel {}: ours {}, Pillow {}",
                src.width,
                src.height,
                p % w,
                p / w,
                i % 3,
                got.rgb[i],
                want[i]
            );
        }
    }
}
