//! Whole PCP requests and responses as plain structs (`Repr`s) with `parse` and `emit`.

use std::net::IpAddr;

use super::address::{decode_address, encode_address, read_field};
use super::error::{EmitError, Error};
use super::option::{self, Context, Options, RequestContext};
use super::packet::{Packet, R_BIT, be_u16, be_u32};
use super::types::{Nonce, Opcode, Protocol, ResultCode};
use super::{HEADER_LEN, MAX_MESSAGE_LEN, VERSION};

/// Offsets inside the opcode-specific data (from the end of the common header).
mod body {
    use std::ops::Range;

    pub const NONCE: Range<usize> = 0..12;
    pub const PROTOCOL: usize = 12;
    pub const MAP_RESERVED: Range<usize> = 13..16;
    pub const INTERNAL_PORT: usize = 16;
    pub const EXTERNAL_PORT: usize = 18;
    pub const EXTERNAL_ADDRESS: usize = 20;
    pub const REMOTE_PEER_PORT: usize = 36;
    pub const PEER_RESERVED: Range<usize> = 38..40;
    pub const REMOTE_PEER_ADDRESS: usize = 40;
    pub const SESSION_ID: usize = 0;
    pub const SEQUENCE_NUMBER: usize = 4;
}

/// MAP opcode data (RFC 6887 §11.1). In a request the external fields are the *suggested*
/// ones (port 0 and the family's all-zeros address mean no preference); in a response they are
/// the *assigned* ones (or, in an error response, the suggested ones copied back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapData {
    /// Mapping nonce.
    pub nonce: Nonce,
    /// Protocol; [`Protocol::ALL`] with internal port 0 maps every protocol.
    pub protocol: Protocol,
    /// Internal port; 0 means all ports.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port.
    pub external_port: u16,
    /// Suggested (request) or assigned (response) external address.
    pub external_address: IpAddr,
}

/// PEER opcode data (RFC 6887 §12.1): MAP's fields plus the remote peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerData {
    /// The fields PEER shares with MAP.
    pub map: MapData,
    /// Remote peer port (never 0).
    pub remote_peer_port: u16,
    /// Remote peer address, as the client sees it.
    pub remote_peer_address: IpAddr,
}

/// AUTHENTICATION opcode data (RFC 7652 §5.1), recognised but not acted on by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthData {
    /// Session ID.
    pub session_id: u32,
    /// Sequence number.
    pub sequence_number: u32,
}

/// Opcode-specific data of a request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpcodeData {
    /// ANNOUNCE carries no data.
    Announce,
    /// MAP.
    Map(MapData),
    /// PEER.
    Peer(PeerData),
    /// AUTHENTICATION (RFC 7652).
    Authentication(AuthData),
}

impl OpcodeData {
    /// The opcode this data belongs to.
    pub const fn opcode(&self) -> Opcode {
        match self {
            OpcodeData::Announce => Opcode::Announce,
            OpcodeData::Map(_) => Opcode::Map,
            OpcodeData::Peer(_) => Opcode::Peer,
            OpcodeData::Authentication(_) => Opcode::Authentication,
        }
    }

    /// Length on the wire.
    pub const fn buffer_len(&self) -> usize {
        match self {
            OpcodeData::Announce => 0,
            OpcodeData::Map(_) => super::MAP_LEN,
            OpcodeData::Peer(_) => super::PEER_LEN,
            OpcodeData::Authentication(_) => super::AUTHENTICATION_LEN,
        }
    }

    /// The MAP fields of a MAP or PEER message.
    pub const fn map_fields(&self) -> Option<&MapData> {
        match self {
            OpcodeData::Map(map) | OpcodeData::Peer(PeerData { map, .. }) => Some(map),
            _ => None,
        }
    }

    /// Decodes the data of `opcode` from `body`, which the caller checked is long enough.
    fn parse(opcode: Opcode, body: &[u8]) -> OpcodeData {
        let map = || MapData {
            nonce: Nonce(read12(body)),
            protocol: Protocol(body[body::PROTOCOL]),
            internal_port: be_u16(body, body::INTERNAL_PORT),
            external_port: be_u16(body, body::EXTERNAL_PORT),
            external_address: decode_address(&read_field(body, body::EXTERNAL_ADDRESS)),
        };
        match opcode {
            Opcode::Map => OpcodeData::Map(map()),
            Opcode::Peer => OpcodeData::Peer(PeerData {
                map: map(),
                remote_peer_port: be_u16(body, body::REMOTE_PEER_PORT),
                remote_peer_address: decode_address(&read_field(body, body::REMOTE_PEER_ADDRESS)),
            }),
            Opcode::Authentication => OpcodeData::Authentication(AuthData {
                session_id: be_u32(body, body::SESSION_ID),
                sequence_number: be_u32(body, body::SEQUENCE_NUMBER),
            }),
            Opcode::Announce | Opcode::Unknown(_) => OpcodeData::Announce,
        }
    }

    /// Writes the data into `body`, which holds exactly [`Self::buffer_len`] bytes. Reserved
    /// fields are written as zeros (RFC 6887 §11.1, §12.1).
    fn emit(&self, body: &mut [u8]) {
        let emit_map = |body: &mut [u8], map: &MapData| {
            body[body::NONCE].copy_from_slice(&map.nonce.0);
            body[body::PROTOCOL] = map.protocol.0;
            body[body::MAP_RESERVED].fill(0);
            body[body::INTERNAL_PORT..body::INTERNAL_PORT + 2]
                .copy_from_slice(&map.internal_port.to_be_bytes());
            body[body::EXTERNAL_PORT..body::EXTERNAL_PORT + 2]
                .copy_from_slice(&map.external_port.to_be_bytes());
            body[body::EXTERNAL_ADDRESS..body::EXTERNAL_ADDRESS + 16]
                .copy_from_slice(&encode_address(map.external_address));
        };
        match self {
            OpcodeData::Announce => {}
            OpcodeData::Map(map) => emit_map(body, map),
            OpcodeData::Peer(peer) => {
                emit_map(body, &peer.map);
                body[body::REMOTE_PEER_PORT..body::REMOTE_PEER_PORT + 2]
                    .copy_from_slice(&peer.remote_peer_port.to_be_bytes());
                body[body::PEER_RESERVED].fill(0);
                body[body::REMOTE_PEER_ADDRESS..body::REMOTE_PEER_ADDRESS + 16]
                    .copy_from_slice(&encode_address(peer.remote_peer_address));
            }
            OpcodeData::Authentication(auth) => {
                body[body::SESSION_ID..body::SESSION_ID + 4]
                    .copy_from_slice(&auth.session_id.to_be_bytes());
                body[body::SEQUENCE_NUMBER..body::SEQUENCE_NUMBER + 4]
                    .copy_from_slice(&auth.sequence_number.to_be_bytes());
            }
        }
    }
}

fn read12(body: &[u8]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&body[body::NONCE]);
    nonce
}

/// Checks the header rules shared by requests and responses after the R bit and version, and
/// returns the opcode and where the options start.
fn check_common(bytes: &[u8]) -> Result<(Opcode, usize), Error> {
    let packet = Packet::new_checked(bytes)?;
    let opcode = packet.opcode();
    let Some(body_len) = opcode.body_len() else {
        return Err(Error::UnsupportedOpcode {
            opcode: opcode.into(),
        });
    };
    let need = HEADER_LEN + body_len;
    if bytes.len() < need {
        return Err(Error::OpcodeTruncated {
            opcode,
            len: bytes.len(),
            need,
        });
    }
    Ok((opcode, need))
}

/// A PCP request (RFC 6887 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRepr<'a> {
    /// Requested lifetime in seconds; 0 deletes a MAP; ANNOUNCE sends 0.
    pub lifetime: u32,
    /// The PCP Client's IP Address: the source address of the datagram.
    pub client_ip: IpAddr,
    /// Opcode and opcode-specific data.
    pub data: OpcodeData,
    /// Options, in order.
    pub options: Options<'a>,
}

impl<'a> RequestRepr<'a> {
    /// Applies the header rules of the server's receive pipeline (RFC 6887 §8.2 steps 2 to 7,
    /// and 9) without looking at opcode data or options: R bit, version, length, a known
    /// opcode with room for its data. A server checks ADDRESS_MISMATCH on the returned view,
    /// then calls [`RequestRepr::parse`].
    pub fn check_header(bytes: &[u8]) -> Result<Packet<&[u8]>, Error> {
        match bytes {
            [] | [_] => return Err(Error::Truncated { len: bytes.len() }),
            [_, op, ..] if op & R_BIT != 0 => return Err(Error::NotARequest),
            [version, ..] if *version != VERSION => {
                return Err(Error::UnsupportedVersion { version: *version });
            }
            _ => {}
        }
        check_common(bytes)?;
        Ok(Packet::new_unchecked(bytes))
    }

    /// Parses a request, applying every rule of RFC 6887 §7, §8.2, §11.1, §12.1 and §13 that
    /// can be checked from the bytes alone. The error says which rule broke and
    /// [`Error::result_code`] what to answer. Never allocates.
    pub fn parse(bytes: &'a [u8]) -> Result<RequestRepr<'a>, Error> {
        let packet = Self::check_header(bytes)?;
        let (opcode, options_at) = check_common(bytes)?;
        let data = OpcodeData::parse(opcode, &bytes[HEADER_LEN..options_at]);
        let lifetime = packet.lifetime();
        let client_ip = packet.client_ip();
        let (internal_port, suggested_port) = match &data {
            OpcodeData::Map(map) => {
                // RFC 6887 §11.3 rejects this only when creating (lifetime ≠ 0); §11.1 has
                // the receiver ignore the port otherwise, so a delete still parses.
                if lifetime != 0 && map.protocol == Protocol::ALL && map.internal_port != 0 {
                    return Err(Error::AllProtocolsWithPort {
                        port: map.internal_port,
                    });
                }
                (map.internal_port, map.external_port)
            }
            OpcodeData::Peer(peer) => {
                let zero = if peer.map.protocol == Protocol::ALL {
                    Some("protocol")
                } else if peer.map.internal_port == 0 {
                    Some("internal port")
                } else if peer.remote_peer_port == 0 {
                    Some("remote peer port")
                } else {
                    None
                };
                if let Some(field) = zero {
                    return Err(Error::PeerFieldZero { field });
                }
                (peer.map.internal_port, peer.map.external_port)
            }
            _ => (0, 0),
        };
        let region = &bytes[options_at..];
        let ctx = Context {
            opcode,
            request: Some(RequestContext {
                lifetime,
                client_ip,
                internal_port,
                suggested_port,
            }),
        };
        option::validate(region, options_at, ctx)?;
        Ok(RequestRepr {
            lifetime,
            client_ip,
            data,
            options: Options::from_validated(region),
        })
    }

    /// Bytes the request takes on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.buffer_len() + self.options.buffer_len()
    }

    /// Writes the request at the start of `buf` and returns its length. Fails if `buf` is too
    /// small or the request would exceed 1100 bytes; writes nothing meaningful then.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let out = sized(buf, self.buffer_len())?;
        let mut packet = Packet::new_unchecked(&mut *out);
        packet.set_version(VERSION);
        packet.set_opcode(false, self.data.opcode());
        packet.set_lifetime(self.lifetime);
        packet.set_request_header_fields(self.client_ip);
        emit_body(&self.data, &self.options, out)
    }
}

/// A PCP response (RFC 6887 §7.2) to a request that parsed. Error responses to requests that
/// did not parse are built by [`super::emit_error_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRepr<'a> {
    /// Result code.
    pub result: ResultCode,
    /// Granted lifetime on success; on error, how long the error is expected to last.
    pub lifetime: u32,
    /// The server's Epoch Time.
    pub epoch: u32,
    /// Opcode and opcode-specific data.
    pub data: OpcodeData,
    /// Options, in order.
    pub options: Options<'a>,
}

impl<'a> ResponseRepr<'a> {
    /// Parses a response: R bit set ([`Error::NotAResponse`]), version 2, the length rules, a
    /// known opcode with room for its data, and the structure of the options (length, opcode,
    /// repetition, FILTER prefix). Never allocates.
    pub fn parse(bytes: &'a [u8]) -> Result<ResponseRepr<'a>, Error> {
        match bytes {
            [_, op, ..] if op & R_BIT == 0 => return Err(Error::NotAResponse),
            [version, _, ..] if *version != VERSION => {
                return Err(Error::UnsupportedVersion { version: *version });
            }
            _ => {}
        }
        let (opcode, options_at) = check_common(bytes)?;
        let packet = Packet::new_unchecked(bytes);
        let data = OpcodeData::parse(opcode, &bytes[HEADER_LEN..options_at]);
        let region = &bytes[options_at..];
        option::validate(
            region,
            options_at,
            Context {
                opcode,
                request: None,
            },
        )?;
        Ok(ResponseRepr {
            result: packet.result_code(),
            lifetime: packet.lifetime(),
            epoch: packet.epoch(),
            data,
            options: Options::from_validated(region),
        })
    }

    /// Bytes the response takes on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.buffer_len() + self.options.buffer_len()
    }

    /// Writes the response at the start of `buf` and returns its length; the 96 reserved bits
    /// are zero, as for a request that parsed (RFC 6887 §7.2).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let out = sized(buf, self.buffer_len())?;
        let mut packet = Packet::new_unchecked(&mut *out);
        packet.set_version(VERSION);
        packet.set_opcode(true, self.data.opcode());
        packet.set_result_code(self.result);
        packet.set_lifetime(self.lifetime);
        packet.set_epoch(self.epoch);
        packet.clear_response_reserved();
        emit_body(&self.data, &self.options, out)
    }
}

/// Writes the opcode data and the options after the common header of `out` (which is exactly
/// the message's size) and returns the message length.
#[inline]
fn emit_body(data: &OpcodeData, options: &Options<'_>, out: &mut [u8]) -> Result<usize, EmitError> {
    let body_end = HEADER_LEN + data.buffer_len();
    data.emit(&mut out[HEADER_LEN..body_end]);
    options.emit(&mut out[body_end..])?;
    Ok(out.len())
}

/// The first `need` bytes of `buf`, after the size rules.
fn sized(buf: &mut [u8], need: usize) -> Result<&mut [u8], EmitError> {
    if need > MAX_MESSAGE_LEN {
        return Err(EmitError::TooLong { len: need });
    }
    let have = buf.len();
    buf.get_mut(..need)
        .ok_or(EmitError::BufferTooSmall { need, have })
}
