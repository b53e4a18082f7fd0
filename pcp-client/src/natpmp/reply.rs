//! The server's error replies to requests it cannot serve (RFC 6886 §3.5): unsupported
//! version, unsupported opcode, and failed external-address or mapping requests.

use super::{
    EXTERNAL_ADDRESS_REQUEST_LEN, Error, ErrorResponse, OP_EXTERNAL_ADDRESS, RESPONSE_BIT,
    ResponseRepr, ResultCode, Transport, VERSION,
};

impl ErrorResponse {
    /// The error reply a server sends to `request` (any bytes it received) with `result`
    /// (RFC 6886 §3.5).
    ///
    /// * Version ≠ 0 (typically a PCP request): the 8-byte reply, opcode 128 + the request's
    ///   opcode byte. RFC 6886 §3.5 prints OP = 0 here, but then the PCP R bit is clear and a
    ///   PCP client following RFC 6887 §8.3 drops the reply; miniupnpd sends 128 + op, so we
    ///   do too. Build [`ErrorResponse::Header`] with opcode 0 to send the printed form.
    /// * Version 0, opcode 0: the full 12-byte external address response, address 0.0.0.0
    ///   (RFC 6886 §3.2).
    /// * Version 0, opcode 1 or 2: the full 16-byte mapping response, internal port copied
    ///   from the request (0 if the request is too short to hold it), external port and
    ///   lifetime 0 (RFC 6886 §3.5).
    /// * Version 0, any other opcode below 128: the 8-byte reply, opcode 128 + op. RFC 6886
    ///   §3.5 says to return "the entire request" with the top opcode bit set and result 5,
    ///   but a request may be 2 bytes, too short to carry the result, and every server packet
    ///   carries Seconds Since Start of Epoch (§3.6); the 8-byte header is what miniupnpd
    ///   sends.
    ///
    /// Errors: [`Error::Truncated`] below 2 bytes; [`Error::NotARequest`] when the opcode's top
    /// bit is set (a server MUST ignore responses, RFC 6886 §3.5, whatever the version);
    /// [`Error::SuccessInErrorResponse`] when `result` is 0.
    pub fn reply_to(request: &[u8], result: ResultCode, epoch: u32) -> Result<Self, Error> {
        let [version, opcode, ..] = *request else {
            return Err(Error::Truncated {
                len: request.len(),
                need: EXTERNAL_ADDRESS_REQUEST_LEN,
            });
        };
        if opcode & RESPONSE_BIT != 0 {
            return Err(Error::NotARequest { opcode });
        }
        if result.is_success() {
            return Err(Error::SuccessInErrorResponse);
        }
        let header = ErrorResponse::Header {
            opcode: RESPONSE_BIT | opcode,
            result,
            epoch,
        };
        if version != VERSION {
            return Ok(header);
        }
        if opcode == OP_EXTERNAL_ADDRESS {
            return Ok(ErrorResponse::ExternalAddress { result, epoch });
        }
        Ok(match Transport::from_request_opcode(opcode) {
            Some(protocol) => ErrorResponse::Map {
                protocol,
                result,
                epoch,
                internal_port: match request.get(4..6) {
                    Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                    _ => 0,
                },
                external_port: 0,
            },
            None => header,
        })
    }
}

/// Writes the error reply to `request` (any received bytes) into `buf` and returns its length;
/// see [`ErrorResponse::reply_to`] for the form chosen and the errors, plus
/// [`Error::BufferTooSmall`] if `buf` is shorter than the reply (16 bytes always suffice).
///
/// A server calls this with the bytes whose [`super::RequestRepr::parse`] failed and the code
/// [`Error::result_code`] returned, or with a well-formed request it cannot satisfy.
pub fn emit_error_reply(
    request: &[u8],
    result: ResultCode,
    epoch: u32,
    buf: &mut [u8],
) -> Result<usize, Error> {
    ResponseRepr::Error(ErrorResponse::reply_to(request, result, epoch)?).emit(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natpmp::{MAX_MESSAGE_LEN, RequestRepr, is_unsupp_version_reply};
    use proptest::prelude::*;

    /// A PCP (RFC 6887) MAP request header: version 2, R = 0, opcode 1.
    fn pcp_map_request() -> [u8; 60] {
        let mut pcp = [0u8; 60];
        pcp[..4].copy_from_slice(&[2, 1, 0, 0]);
        pcp
    }

    fn reply(request: &[u8], result: ResultCode, epoch: u32) -> Result<Vec<u8>, Error> {
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        let len = emit_error_reply(request, result, epoch, &mut buf)?;
        Ok(buf[..len].to_vec())
    }

    #[test]
    fn pcp_request_gets_the_8_byte_unsupported_version_reply_with_r_bit_set() {
        // RFC 6886 §3, §3.5 (8-byte reply); op = 128 + 1 as miniupnpd, so RFC 6887 §8.3 keeps it
        let bytes = reply(
            &pcp_map_request(),
            ResultCode::UnsupportedVersion,
            0x0102_0304,
        );
        assert_eq!(bytes, Ok(vec![0, 0x81, 0, 1, 1, 2, 3, 4]));
        let bytes = bytes.unwrap_or_default();
        assert!(is_unsupp_version_reply(&bytes));
        // What the server's parser said about the same bytes leads to the same answer.
        let code = RequestRepr::parse(&pcp_map_request())
            .err()
            .and_then(|e| e.result_code());
        assert_eq!(code, Some(ResultCode::UnsupportedVersion));
        assert_eq!(
            reply(&[1, 0], ResultCode::UnsupportedVersion, 9),
            Ok(vec![0, 0x80, 0, 1, 0, 0, 0, 9])
        );
    }

    #[test]
    fn unsupported_opcode_gets_8_byte_reply_with_top_bit_set_and_result_5() {
        // RFC 6886 §3.5: top bit of the opcode set, result 5
        assert_eq!(
            reply(&[0, 3], ResultCode::UnsupportedOpcode, 7),
            Ok(vec![0, 0x83, 0, 5, 0, 0, 0, 7])
        );
        let long = [0, 0x7f, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 1, 2, 3, 4];
        assert_eq!(
            reply(&long, ResultCode::UnsupportedOpcode, 7),
            Ok(vec![0, 0xff, 0, 5, 0, 0, 0, 7])
        );
    }

    #[test]
    fn failed_external_address_request_gets_full_size_reply_with_zero_address() {
        // RFC 6886 §3.2: address MUST be zero on a non-zero result; §3.5 full response
        assert_eq!(
            reply(&[0, 0], ResultCode::NetworkFailure, 2),
            Ok(vec![0, 0x80, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0])
        );
    }

    #[test]
    fn failed_map_request_reply_echoes_the_internal_port() {
        // RFC 6886 §3.5: Internal Port MUST be the requested one; external port and lifetime 0
        let request = [0, 2, 0, 0, 0x1f, 0x90, 0x1f, 0x90, 0, 0, 0x1c, 0x20];
        assert_eq!(
            reply(&request, ResultCode::OutOfResources, 5),
            Ok(vec![
                0, 0x82, 0, 4, 0, 0, 0, 5, 0x1f, 0x90, 0, 0, 0, 0, 0, 0
            ])
        );
        // Too short to hold the internal port: reply with 0 there.
        assert_eq!(
            reply(&[0, 1, 0, 0, 0x1f], ResultCode::NotAuthorized, 5),
            Ok(vec![0, 0x81, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0])
        );
    }

    #[test]
    fn response_sent_to_the_server_gets_no_reply() {
        // RFC 6886 §3.5: opcode ≥ 128 MUST be silently ignored
        assert_eq!(
            reply(&[0, 0x80], ResultCode::UnsupportedOpcode, 0),
            Err(Error::NotARequest { opcode: 0x80 })
        );
        assert_eq!(
            reply(&[2, 0x81, 0, 1], ResultCode::UnsupportedVersion, 0),
            Err(Error::NotARequest { opcode: 0x81 })
        );
    }

    #[test]
    fn datagram_without_an_opcode_gets_no_reply() {
        // RFC 6886 §3: every packet starts with version and opcode
        assert_eq!(
            reply(&[], ResultCode::UnsupportedVersion, 0),
            Err(Error::Truncated { len: 0, need: 2 })
        );
        assert_eq!(
            reply(&[2], ResultCode::UnsupportedVersion, 0),
            Err(Error::Truncated { len: 1, need: 2 })
        );
    }

    #[test]
    fn error_reply_with_success_result_is_refused() {
        // RFC 6886 §3.5: an error reply carries a non-zero result
        assert_eq!(
            reply(&[0, 0], ResultCode::Success, 0),
            Err(Error::SuccessInErrorResponse)
        );
    }

    #[test]
    fn error_reply_into_short_buffer_is_buffer_too_small() {
        let mut buf = [0u8; 15];
        assert_eq!(
            emit_error_reply(&[0, 1], ResultCode::NotAuthorized, 0, &mut buf),
            Err(Error::BufferTooSmall { len: 15, need: 16 })
        );
        assert_eq!(
            emit_error_reply(&[2, 1], ResultCode::UnsupportedVersion, 0, &mut buf[..7]),
            Err(Error::BufferTooSmall { len: 7, need: 8 })
        );
    }

    proptest! {
        /// Every reply the helper emits parses back as an error with that result and epoch.
        #[test]
        fn error_reply_parses_back_as_the_error_sent(
            request in proptest::collection::vec(any::<u8>(), 2..64),
            result in 1u16..,
            epoch: u32,
        ) {
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let result = ResultCode::from_u16(result);
            match emit_error_reply(&request, result, epoch, &mut buf) {
                Ok(len) => {
                    let parsed = ResponseRepr::parse(&buf[..len]);
                    let Ok(ResponseRepr::Error(e)) = parsed else {
                        return Err(TestCaseError::fail(format!("{parsed:?}")));
                    };
                    prop_assert_eq!((e.result(), e.epoch()), (result, epoch));
                    prop_assert_eq!(e.opcode(), RESPONSE_BIT | request[1]);
                }
                Err(e) => prop_assert_eq!(e, Error::NotARequest { opcode: request[1] }),
            }
        }
    }
}
