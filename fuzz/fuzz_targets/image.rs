//! PNG and JPEG decoding, then the resize every image goes through.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = metad2a::features::Image::decode(data) {
        let r = img.resize(16, 16);
        assert_eq!(r.rgb.len(), 16 * 16 * 3);
    }
});
