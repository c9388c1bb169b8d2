//! A safetensors weights file: the store must index it or refuse it, and the models must load
//! from it or refuse it, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(store) = metad2a::weights::WeightStore::from_bytes("fuzz", data.to_vec()) else {
        return;
    };
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for n in &names {
        let _ = store.shape(n);
        let _ = store.param_any(n);
    }
    let _ = store.sha256_hex();
    let _ = metad2a::model::Generator::load(&store);
    let _ = metad2a::model::Predictor::load(&store);
});
