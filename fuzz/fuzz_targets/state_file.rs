//! Fuzzes the upnp-iwf state file parser (`upnp_iwf::state`): no input may panic, and anything
//! `parse` accepts must pass `validate`, render to bytes that parse back to the same mappings,
//! and render again to the same bytes (the format is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upnp_iwf::state;

fuzz_target!(|data: &[u8]| {
    let Ok(mappings) = state::parse(data) else {
        return;
    };
    assert!(state::validate(&mappings).is_ok(), "parse accepted an invalid set");
    let bytes = state::render(&mappings);
    match state::parse(&bytes) {
        Ok(again) => {
            assert_eq!(again, mappings, "render → parse is the identity");
            assert_eq!(state::render(&again), bytes, "rendering is stable");
        }
        Err(e) => panic!("own output rejected: {e}"),
    }
});
