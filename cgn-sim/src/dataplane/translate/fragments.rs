//! Fragments through the translator: later fragments follow the rewrite their first one
//! taught the fragment table (RFC 4787 REQ-14); packets over the MTU without DF are split
//! (RFC 791).

use super::*;

impl Translator {
    pub(super) fn learn_fragments(
        &mut self,
        now_s: u32,
        key: FragmentKey,
        rewrite: FragmentRewrite,
    ) {
        let (early, _) = self.fragments.learn(now_s, key, rewrite);
        for mut p in early {
            // A held fragment is its own packet: checked once, here, as it leaves.
            let applied = Ipv4Packet::new_checked(&mut p[..]).is_ok_and(|mut ip| {
                let ok = apply_fragment(&mut ip, rewrite).is_ok();
                if ok {
                    apply_ttl(&mut ip, self.config.ttl);
                }
                ok
            });
            if applied {
                self.counters.fragments += 1;
                self.out.push_back(p);
            }
        }
    }

    pub(super) fn later_fragment(
        &mut self,
        server: &Server,
        now: Instant,
        ip: &mut View<'_>,
        key: FragmentKey,
    ) -> Verdict {
        let now_s = server.seconds(now);
        match self.fragments.lookup(now_s, &key) {
            Some(rewrite) => match apply_fragment(ip, rewrite) {
                Ok(()) => {
                    self.counters.fragments += 1;
                    Verdict::Forward
                }
                Err(e) => Verdict::Drop(map_err(e)),
            },
            None if self.fragments.hold_early(now_s, key, ip.as_bytes()) => Verdict::Consumed,
            None => Verdict::Drop(DropReason::FragmentOrphan),
        }
    }
}

/// The fragment key of a first fragment with more to follow, as it arrives.
pub(super) fn first_fragment_key<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> Option<FragmentKey> {
    (ip.more_fragments() && ip.is_first_fragment()).then(|| FragmentKey {
        protocol: ip.protocol(),
        src: ip.src(),
        dst: ip.dst(),
        ident: ip.ident(),
    })
}

pub(super) fn apply_fragment<T: AsRef<[u8]> + AsMut<[u8]>>(
    ip: &mut Ipv4Packet<T>,
    rewrite: FragmentRewrite,
) -> Result<(), PacketError> {
    match rewrite {
        FragmentRewrite::Source(a) => rewrite_flow_checked(ip, Side::Source, (a, 0)),
        FragmentRewrite::Destination(a) => rewrite_flow_checked(ip, Side::Destination, (a, 0)),
    }
}
/// Splits a packet without DF into fragments of at most `mtu` bytes (RFC 791).
pub(super) fn fragment<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>, mtu: usize) -> Option<Vec<Vec<u8>>> {
    let hl = ip.header_len();
    let payload = ip.payload();
    let chunk = (mtu.checked_sub(hl)? / 8) * 8;
    if chunk == 0 {
        return None;
    }
    let base = ip.fragment_offset();
    let last_mf = ip.more_fragments();
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let more = end < payload.len() || last_mf;
        let mut p = Vec::with_capacity(hl + end - off);
        p.extend_from_slice(ip.header());
        p.extend_from_slice(&payload[off..end]);
        let total = u16::try_from(p.len()).ok()?;
        p[field::TOTAL_LEN..field::TOTAL_LEN + 2].copy_from_slice(&total.to_be_bytes());
        let frag = u16::try_from((base + off) / 8).ok()? | if more { 0x2000 } else { 0 };
        p[field::FLAGS_FRAG..field::FLAGS_FRAG + 2].copy_from_slice(&frag.to_be_bytes());
        // A new header (the original's, with its own length and offset): checksum from scratch.
        p[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let c = checksum::checksum(&p[..hl]);
        p[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        out.push(p);
        off = end;
    }
    Some(out)
}

/// [`fragment`] for tests.
#[cfg(test)]
pub(crate) fn fragment_for_test(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    Ipv4Packet::new_checked(packet)
        .ok()
        .and_then(|ip| fragment(&ip, mtu))
        .unwrap_or_default()
}
