//! MNIST-style idx files (optionally gzipped): the first byte says where the input splits
//! into the image file and the label file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metad2a::features::readers::{maybe_gunzip, parse_idx};

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let at = (k as usize * rest.len()) / 255;
    let (a, b) = rest.split_at(at);
    let (Ok(img), Ok(lab)) = (maybe_gunzip(a.to_vec()), maybe_gunzip(b.to_vec())) else {
        return;
    };
    if let Ok(set) = parse_idx(&img, &lab, Some(3)) {
        for im in set.images.iter().take(2) {
            let _ = im.resize(8, 8);
        }
    }
});
