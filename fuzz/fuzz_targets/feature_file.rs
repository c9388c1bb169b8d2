//! A feature file (the input of `search`); when it loads, a tiny search-side sampling of it
//! must work or fail cleanly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = metad2a::Dataset::from_safetensors(data, "fuzz") else {
        return;
    };
    let _ = d.check_per_class(1);
    let _ = d.min_class_rows();
    for i in 0..d.num_rows().min(4) {
        let _ = d.row(i as u32);
    }
});
