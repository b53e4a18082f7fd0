//! PCP response parsing, as the client does it: never panics; what parses re-emits to a
//! message that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcp_client::wire::{ResponseRepr, peek_response};

fuzz_target!(|data: &[u8]| {
    let _ = peek_response(data);
    if let Ok(repr) = ResponseRepr::parse(data) {
        assert!(peek_response(data).is_some());
        let mut out = [0u8; 1100];
        let len = repr.emit(&mut out).expect("a parsed response re-emits");
        assert_eq!(len, data.len());
        assert_eq!(ResponseRepr::parse(&out[..len]), Ok(repr));
        for option in repr.options.iter() {
            let _ = option.code().is_optional();
        }
    }
});
