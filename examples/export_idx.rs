//! Writes images of MNIST-style idx files as PNG files in class folders:
//! `cargo run --release --example export_idx -- IMAGES LABELS PER_CLASS OUT_DIR [NAME ...]`
//! (class folders are named by NAME arguments in label order, or by the label value).
use std::path::PathBuf;

fn main() -> metad2a::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!("usage: export_idx IMAGES LABELS PER_CLASS OUT_DIR [CLASS_NAME ...]");
        std::process::exit(2);
    }
    let per: usize = a[2].parse().expect("PER_CLASS is a number");
    let imgs = metad2a::features::readers::read_idx(
        &PathBuf::from(&a[0]),
        &PathBuf::from(&a[1]),
        Some(per),
    )?;
    let out = PathBuf::from(&a[3]);
    let names: Vec<String> = if a.len() > 4 {
        a[4..].to_vec()
    } else {
        imgs.class_names.clone()
    };
    let mut count = vec![0usize; names.len()];
    for (img, &l) in imgs.images.iter().zip(&imgs.labels) {
        let dir = out.join(&names[l as usize]);
        std::fs::create_dir_all(&dir).expect("create class folder");
        let path = dir.join(format!("{:04}.png", count[l as usize]));
        count[l as usize] += 1;
        let f = std::fs::File::create(&path).expect("create file");
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(f),
            img.width as u32,
            img.height as u32,
        );
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let grey: Vec<u8> = img.rgb.iter().step_by(3).copied().collect();
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&grey))
            .expect("write PNG");
    }
    println!("wrote {} images into {}", imgs.images.len(), out.display());
    Ok(())
}
