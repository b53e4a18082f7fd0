//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use std::net::Ipv4Addr;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), not yet folded. Sums of several pieces can be added before [`fold`] as long as every
/// piece but the last has even length.
///
/// The words are added four bytes at a time: a 32-bit word `hi·2¹⁶ + lo` is congruent to
/// `hi + lo` modulo 0xffff, the modulus of one's-complement addition, so the folded result is
/// the same as adding 16-bit words (RFC 1071 §2(B), "parallel summation").
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for w in &mut chunks {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *chunks.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    // Fold the 64-bit accumulator into 32 bits without losing carries: two rounds always
    // suffice (after the first the value is below 2³³).
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

/// Folds carries into 16 bits (two rounds always suffice for a 32-bit sum, so no loop and no
/// data-dependent branch).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum of `data`: the complement of its folded sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Sum of the IPv4 pseudo header used by UDP and TCP (RFC 768, RFC 9293 §3.1).
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(protocol)
        + u32::from(length)
}

/// Updates a checksum for one 16-bit word changing from `old` to `new` (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`), which stays correct where eqn. 2 yields -0.
#[inline]
pub fn adjust(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(sum)
}

/// Updates a checksum for a 32-bit value (an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn adjust_addr(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    let o = old.octets();
    let n = new.octets();
    let c = adjust(
        checksum,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([n[0], n[1]]),
    );
    adjust(
        c,
        u16::from_be_bytes([o[2], o[3]]),
        u16::from_be_bytes([n[2], n[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 1071 §3 example: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    proptest! {
        // RFC 1624: the incremental update equals a full recomputation.
        #[test]
        fn incremental_update_matches_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 2..64),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            if data.len() % 2 == 1 {
                data.pop();
            }
            let before = checksum(&data);
            let i = word.index(data.len() / 2) * 2;
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let adjusted = adjust(before, old, new);
            // 0x0000 and 0xffff are both one's-complement zero.
            prop_assert!(adjusted == after || (adjusted ^ after) == 0xffff && (after == 0 || after == 0xffff));
        }
    }
}
