//! Writes images stored as CSV rows (`pixel, ..., label`, optionally gzip-compressed) as PNG files
//! in class folders: `cargo run --release --example export_csv -- FILE SIDE MAX_VALUE PER_CLASS OUT_DIR`
//! (pixels are scaled from 0..=MAX_VALUE to 0..=255; classes are named by the label).
use std::io::Read;
use std::path::PathBuf;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        eprintln!("usage: export_csv FILE SIDE MAX_VALUE PER_CLASS OUT_DIR");
        std::process::exit(2);
    }
    let raw = std::fs::read(&a[0]).expect("read the CSV file");
    let mut text = String::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .expect("gunzip");
    } else {
        text = String::from_utf8(raw).expect("UTF-8 CSV");
    }
    let side: usize = a[1].parse().expect("SIDE");
    let max: f64 = a[2].parse().expect("MAX_VALUE");
    let per: usize = a[3].parse().expect("PER_CLASS");
    let out = PathBuf::from(&a[4]);
    let mut count = std::collections::HashMap::<String, usize>::new();
    let mut written = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != side * side + 1 {
            continue; // header or blank line
        }
        let Ok(px) = f[..side * side]
            .iter()
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let label = f[side * side].trim().trim_end_matches(".0").to_string();
        let n = count.entry(label.clone()).or_insert(0);
        if *n >= per {
            continue;
        }
        let dir = out.join(&label);
        std::fs::create_dir_all(&dir).expect("create class folder");
        let grey: Vec<u8> = px
            .iter()
            .map(|&v| (v / max * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let file = std::fs::File::create(dir.join(format!("{:04}.png", n))).expect("create file");
        *n += 1;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&grey))
            .expect("write PNG");
        written += 1;
    }
    println!("wrote {written} images into {}", out.display());
}
