//! Architecture text: NB201 strings and MobileNetV3 readable/JSON forms (the `score` command's
//! input); what parses must print and parse back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use metad2a::space::{Arch, Space};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for space in [Space::Nb201, Space::Mbv3] {
        if let Ok(a) = Arch::parse(space, text) {
            assert_eq!(Arch::parse(space, &a.to_string()).unwrap(), a);
            assert_eq!(Arch::parse(space, &a.to_json().to_string()).ok().or(Some(a)), Some(a));
            let _ = Arch::from_graph(space, &a.to_graph());
        }
    }
});
