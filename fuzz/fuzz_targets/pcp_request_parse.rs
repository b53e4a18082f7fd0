//! PCP request parsing, as the CGN's server does it: never panics; what parses re-emits to a
//! message that parses to the same value; what fails gets a well-formed error response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcp_client::wire::{ErrorResponse, RequestRepr, ResponseRepr, emit_error_response};

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; 1100];
    match RequestRepr::parse(data) {
        Ok(repr) => {
            assert!(RequestRepr::check_header(data).is_ok());
            let len = repr.emit(&mut out).expect("a parsed request re-emits");
            assert_eq!(len, data.len());
            assert_eq!(RequestRepr::parse(&out[..len]), Ok(repr));
        }
        Err(error) => {
            if let Some(e) = ErrorResponse::for_parse_error(&error, 7, |_| 30) {
                let len = emit_error_response(data, &e, &mut out).expect("1100 bytes suffice");
                assert!(len >= 24 && len <= 1100 && len % 4 == 0);
                assert_eq!(out[0], 2);
                assert_eq!(out[3], u8::from(e.result));
                // A client can at least read the header of what we answer.
                let _ = ResponseRepr::parse(&out[..len]);
            }
        }
    }
});
