//! Cuts square patches out of photographs and writes them as PNG files in class folders, one
//! class per photograph (a patch-classification task: which photograph a patch comes from):
//! `cargo run --release --example export_patches -- SIDE PER_CLASS SEED OUT_DIR PHOTO...`
//!
//! Each patch is a square crop at a random position whose side is SIDE times a scale drawn
//! log-uniformly from 1 to 8 (capped by the photograph), resized to SIDE x SIDE. Deterministic
//! for a given SEED. Classes are named by the photograph's file stem.
use std::path::{Path, PathBuf};

use metad2a::features::Image;
use metad2a::rng::Rng;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        eprintln!("usage: export_patches SIDE PER_CLASS SEED OUT_DIR PHOTO...");
        std::process::exit(2);
    }
    let side: usize = a[0].parse().expect("SIDE");
    let per: usize = a[1].parse().expect("PER_CLASS");
    let seed: u64 = a[2].parse().expect("SEED");
    let out = PathBuf::from(&a[3]);
    let mut written = 0;
    for (k, photo) in a[4..].iter().enumerate() {
        let path = Path::new(photo);
        let img = Image::open(path).unwrap_or_else(|e| panic!("{e}"));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .expect("a file name");
        let dir = out.join(&stem);
        std::fs::create_dir_all(&dir).expect("create class folder");
        let mut rng = Rng::new(seed, k as u64);
        let largest = img.width.min(img.height);
        assert!(largest >= side, "{photo} is smaller than {side} px");
        for n in 0..per {
            let scale = (8f64.ln() * rng.next_f64()).exp();
            let s = ((side as f64 * scale).round() as usize).clamp(side, largest);
            let x0 = rng.below((img.width - s + 1) as u64) as usize;
            let y0 = rng.below((img.height - s + 1) as u64) as usize;
            let mut rgb = Vec::with_capacity(s * s * 3);
            for y in y0..y0 + s {
                rgb.extend_from_slice(
                    &img.rgb[(y * img.width + x0) * 3..(y * img.width + x0 + s) * 3],
                );
            }
            let crop = Image {
                width: s,
                height: s,
                rgb,
            }
            .resize(side, side);
            let file = std::fs::File::create(dir.join(format!("{n:04}.png"))).expect("create file");
            let mut enc =
                png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()
                .and_then(|mut w| w.write_image_data(&crop.rgb))
                .expect("write PNG");
            written += 1;
        }
    }
    println!("wrote {written} patches into {}", out.display());
}
