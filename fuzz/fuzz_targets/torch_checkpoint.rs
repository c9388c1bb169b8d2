//! A PyTorch checkpoint (zip or legacy pickle): read as a state_dict without executing
//! anything, or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sd) = metad2a::weights::torch::read_state_dict(data) {
        for (_, t) in sd.tensors.iter().take(8) {
            let _ = t.to_f32();
        }
    }
});
