//! The server-side error response (RFC 6887 §7.2, §8.2): built from the request's bytes, so it
//! can answer requests that did not parse.

use super::error::{EmitError, Error};
use super::option::padded;
use super::packet::{Packet, R_BIT, field};
use super::types::{Opcode, ResultCode};
use super::{HEADER_LEN, MAX_MESSAGE_LEN, VERSION};

/// What to put in an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The error.
    pub result: ResultCode,
    /// How long the client should expect the same error (RFC 6887 §7.4: 30 s for short-lifetime
    /// errors, 30 min for long-lifetime ones, by default).
    pub lifetime: u32,
    /// The server's Epoch Time.
    pub epoch: u32,
    /// Whether the request parsed. If it did, the 96 reserved bits are zero; if not, they keep
    /// the last 96 bits of the request's Client IP field (RFC 6887 §7.2).
    pub request_parsed: bool,
}

impl ErrorResponse {
    /// The error response for a parse error, or `None` when the request is to be dropped
    /// silently (RFC 6887 §8.2). The lifetime is picked by the caller per result code.
    pub fn for_parse_error(
        error: &Error,
        epoch: u32,
        lifetime: impl Fn(ResultCode) -> u32,
    ) -> Option<ErrorResponse> {
        let result = error.result_code()?;
        Some(ErrorResponse {
            result,
            lifetime: lifetime(result),
            epoch,
            request_parsed: false,
        })
    }
}

/// Builds the error response to `request` in `out` and returns its length (RFC 6887 §7.2, §8.2):
///
/// * the request's bytes are copied (cut to 1100), zero-padded to a multiple of 4 and to at
///   least 24 bytes, so every option and the opcode data come back as sent (for MAP and PEER
///   the "assigned" fields hold the suggested values);
/// * Version = 2 (the only version this codec speaks, and so the closest one for
///   UNSUPP_VERSION), R = 1 with the request's opcode, reserved 0, the result code, lifetime
///   and epoch are set;
/// * the 96 reserved bits are zeroed if the request parsed, and otherwise keep the copy of the
///   last 96 bits of its Client IP field.
///
/// Works on any input, including empty or absurd datagrams; fails only if `out` is too small.
pub fn emit_error_response(
    request: &[u8],
    response: &ErrorResponse,
    out: &mut [u8],
) -> Result<usize, EmitError> {
    let copied = request.len().min(MAX_MESSAGE_LEN);
    let len = padded(copied).max(HEADER_LEN);
    let have = out.len();
    let out = out
        .get_mut(..len)
        .ok_or(EmitError::BufferTooSmall { need: len, have })?;
    out[..copied].copy_from_slice(&request[..copied]);
    out[copied..].fill(0);
    let opcode = Opcode::from(request.get(field::OPCODE).copied().unwrap_or(0));
    let mut packet = Packet::new_unchecked(&mut *out);
    packet.set_version(VERSION);
    packet.set_opcode(true, opcode);
    packet.set_result_code(response.result);
    packet.set_lifetime(response.lifetime);
    packet.set_epoch(response.epoch);
    if response.request_parsed {
        packet.clear_response_reserved();
    }
    debug_assert!(out[field::OPCODE] & R_BIT != 0);
    Ok(len)
}
