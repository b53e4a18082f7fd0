//! The 128-bit address fields of PCP (RFC 6887 §5).
//!
//! IPv4 addresses travel as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`). The two "no
//! preference" values differ: `::` asks for an IPv6 address, `::ffff:0.0.0.0` for an IPv4 one.
//! Decoding therefore maps `::ffff:0.0.0.0` to [`Ipv4Addr::UNSPECIFIED`] and `::` to
//! [`Ipv6Addr::UNSPECIFIED`], so the family survives a round trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first 96 bits of an IPv4-mapped address (RFC 4291 §2.5.5.2).
const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// True if the field holds an IPv4 address: all of the first 96 bits are checked, as RFC 6887
/// §5 requires (checking only bits 81 to 96 is not enough).
pub fn is_ipv4_mapped(field: &[u8; 16]) -> bool {
    field[..12] == V4_MAPPED_PREFIX
}

/// Decodes a 128-bit PCP address field. IPv4-mapped values become [`IpAddr::V4`]; everything
/// else, including `::` and IPv4-compatible `::a.b.c.d`, stays [`IpAddr::V6`]. This never fails:
/// every 16-byte value is some address.
pub fn decode_address(field: &[u8; 16]) -> IpAddr {
    if is_ipv4_mapped(field) {
        IpAddr::V4(Ipv4Addr::new(field[12], field[13], field[14], field[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*field))
    }
}

/// Encodes an address into a 128-bit PCP field: IPv6 as is, IPv4 as `::ffff:a.b.c.d`
/// (so [`Ipv4Addr::UNSPECIFIED`] becomes the IPv4 "no preference" value `::ffff:0:0`).
pub fn encode_address(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Reads the 16-byte field at `at`. The caller has checked the length.
pub(crate) fn read_field(buf: &[u8], at: usize) -> [u8; 16] {
    let mut field = [0u8; 16];
    field.copy_from_slice(&buf[at..at + 16]);
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6887 §5: IPv4 is stored as ::ffff:a.b.c.d.
    #[test]
    fn ipv4_is_encoded_mapped() {
        let field = encode_address(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(
            field,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 10]
        );
        assert!(is_ipv4_mapped(&field));
    }

    // RFC 6887 §5: all-zeros IPv4 is ::ffff:0:0 and all-zeros IPv6 is ::, and they differ.
    #[test]
    fn no_preference_forms_are_distinct_per_family() {
        let v4 = encode_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let v6 = encode_address(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(v4, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(v6, [0; 16]);
        assert_eq!(decode_address(&v4), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(decode_address(&v6), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    // RFC 6887 §5: the IPv4 test checks all of the first 96 bits.
    #[test]
    fn ipv4_test_checks_all_96_bits() {
        // ffff in bits 81..96 but a non-zero bit earlier: IPv6.
        let mut field = encode_address(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        for byte in 0..10 {
            let mut f = field;
            f[byte] = 0x01;
            assert!(!is_ipv4_mapped(&f), "byte {byte}");
            assert!(decode_address(&f).is_ipv6());
        }
        // IPv4-compatible (deprecated) ::198.51.100.7 is not IPv4 (to_ipv4() would say it is).
        field[10] = 0;
        field[11] = 0;
        assert_eq!(
            decode_address(&field),
            IpAddr::V6("::198.51.100.7".parse().expect("literal"))
        );
    }
}
