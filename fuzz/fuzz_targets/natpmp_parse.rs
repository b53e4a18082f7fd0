//! Fuzzes the NAT-PMP (RFC 6886) codec: both parsers, the emit → parse round trip, the
//! server's error reply, and the "unsupported version" detector. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcp_client::natpmp::{
    self, MAX_MESSAGE_LEN, Packet, RequestRepr, ResponseRepr, ResultCode, emit_error_reply,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; MAX_MESSAGE_LEN];

    // Server side: a request that parses re-emits to a request that parses the same. A parse
    // error the server must answer can be answered, and the answer reads back as that error.
    match RequestRepr::parse(data) {
        Ok(request) => {
            let len = request.emit(&mut buf).expect("parsed request emits");
            assert_eq!(len, request.buffer_len());
            assert_eq!(RequestRepr::parse(&buf[..len]), Ok(request));
        }
        Err(error) => {
            if let Some(code) = error.result_code() {
                let len = emit_error_reply(data, code, 0x0102_0304, &mut buf)
                    .expect("an answerable request gets an answer");
                match ResponseRepr::parse(&buf[..len]) {
                    Ok(ResponseRepr::Error(reply)) => {
                        assert_eq!((reply.result(), reply.epoch()), (code, 0x0102_0304));
                    }
                    other => panic!("error reply {:?} parsed as {other:?}", &buf[..len]),
                }
                if code == ResultCode::UnsupportedVersion {
                    assert!(natpmp::is_unsupp_version_reply(&buf[..len]));
                }
            }
        }
    }

    // Client side: a response that parses re-emits to a response that parses the same.
    if let Ok(response) = ResponseRepr::parse(data) {
        let len = response.emit(&mut buf).expect("parsed response emits");
        assert_eq!(len, response.buffer_len());
        assert_eq!(ResponseRepr::parse(&buf[..len]), Ok(response));
    }

    // The server helper never panics, whatever it is given.
    let _ = emit_error_reply(data, ResultCode::NotAuthorized, u32::MAX, &mut buf);

    // The typed view: a checked packet's header fields are readable.
    if let Ok(packet) = Packet::new_checked(data) {
        let _ = (packet.version(), packet.opcode(), packet.is_response());
    }

    // The detector is exactly the digest §1.11 predicate.
    let detected = natpmp::is_unsupp_version_reply(data);
    assert_eq!(
        detected,
        data.len() >= 4 && data[0] == 0 && data[2..4] == [0, 1]
    );
    assert_eq!(
        natpmp::unsupp_version_reply_epoch(data).is_some(),
        detected && data.len() >= 8
    );
});
