//! The TCP connection state of a session (RFC 7857 §2, the NAT64 state machine of RFC 6146
//! §3.5.2, simplified) and the idle timers each state implies (RFC 4787 REQ-5, RFC 5382
//! REQ-5, RFC 5508 REQ-2, RFC 7857 §2).

/// Direction of a packet relative to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Subscriber → Internet.
    Out,
    /// Internet → subscriber.
    In,
}

/// TCP connection state (RFC 7857 §2.1, RFC 6146 §3.5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP, or nothing seen yet.
    Closed,
    /// SYN seen from the inside only.
    OutInit,
    /// SYN seen from the outside only (admitted by a MAP or by filtering).
    InInit,
    /// Both SYNs seen.
    Established,
    /// FIN seen from the inside.
    OutFin,
    /// FIN seen from the outside.
    InFin,
    /// FINs from both sides.
    BothFin,
    /// RST seen: kept for the RST hold time (RFC 7857 §2.2), revived by any other packet.
    Trans,
}

pub(super) const FIN: u8 = 0x01;
pub(super) const SYN: u8 = 0x02;
pub(super) const RST: u8 = 0x04;

impl TcpState {
    /// The state after a packet with `flags` travelling in `dir`.
    pub fn next(self, dir: Dir, flags: u8) -> TcpState {
        use TcpState::*;
        if flags & RST != 0 {
            return Trans;
        }
        let syn = flags & SYN != 0;
        let fin = flags & FIN != 0;
        match (self, dir) {
            (Closed, Dir::Out) if syn => OutInit,
            (Closed, Dir::In) if syn => InInit,
            (OutInit, Dir::In) | (InInit, Dir::Out) if syn => Established,
            (Established, Dir::Out) if fin => OutFin,
            (Established, Dir::In) if fin => InFin,
            (OutFin, Dir::In) | (InFin, Dir::Out) if fin => BothFin,
            // RFC 6146: any packet other than RST brings a TRANS session back.
            (Trans, _) => Established,
            (s, _) => s,
        }
    }

    /// True while the connection is opening or closing (the transitory timer applies).
    pub fn is_transitory(self) -> bool {
        matches!(
            self,
            TcpState::OutInit | TcpState::InInit | TcpState::BothFin | TcpState::Trans
        )
    }
}

/// Idle timers, in seconds (RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-2, RFC 7857 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// UDP idle (≥ 120; default 300).
    pub udp: u32,
    /// TCP established (≥ 7440 = 2 h 4 min).
    pub tcp_established: u32,
    /// TCP closing (FINs from both sides) and RST hold (≥ 240 recommended, RFC 7857 §2.1,
    /// §2.2).
    pub tcp_transitory: u32,
    /// TCP opening: a SYN seen in one direction only, or no SYN yet (RFC 7857 §2.1 asks for
    /// opening and closing timeouts to be configurable separately; default 240 as well).
    pub tcp_opening: u32,
    /// ICMP query (≥ 60).
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            tcp_opening: 240,
            icmp: 60,
        }
    }
}

impl Timeouts {
    /// Idle time of a session of `protocol` in `state`.
    pub fn idle(&self, protocol: u8, state: TcpState) -> u32 {
        match (protocol, state) {
            (
                crate::dataplane::ipv4::proto::TCP,
                TcpState::Closed | TcpState::OutInit | TcpState::InInit,
            ) => self.tcp_opening,
            (crate::dataplane::ipv4::proto::TCP, s) if s.is_transitory() => self.tcp_transitory,
            (crate::dataplane::ipv4::proto::TCP, _) => self.tcp_established,
            (crate::dataplane::ipv4::proto::ICMP, _) => self.icmp,
            _ => self.udp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: u8 = 0x10;

    // RFC 7857 §2.1 / RFC 6146 §3.5.2.2: the simplified state machine.
    #[test]
    fn tcp_state_machine_follows_rfc7857() {
        use TcpState::*;
        let s = Closed.next(Dir::Out, SYN);
        assert_eq!(s, OutInit);
        assert_eq!(s.next(Dir::In, SYN | ACK), Established);
        assert_eq!(
            Closed.next(Dir::In, SYN).next(Dir::Out, SYN | ACK),
            Established
        );
        assert_eq!(Established.next(Dir::Out, FIN | ACK), OutFin);
        assert_eq!(OutFin.next(Dir::In, FIN | ACK), BothFin);
        assert_eq!(Established.next(Dir::In, FIN), InFin);
        assert_eq!(InFin.next(Dir::Out, FIN), BothFin);
        assert_eq!(Established.next(Dir::In, RST), Trans);
        assert_eq!(
            Trans.next(Dir::Out, ACK),
            Established,
            "revived by a non-RST packet"
        );
        assert_eq!(Closed.next(Dir::Out, ACK), Closed, "no SYN, no connection");
    }

    // RFC 5382 REQ-5, RFC 7857 §2: transitory 4 min, established 2 h 4 min; UDP 5 min;
    // ICMP 60 s.
    #[test]
    fn idle_timers_by_protocol_and_state() {
        let t = Timeouts::default();
        assert_eq!(t.idle(6, TcpState::OutInit), 240);
        assert_eq!(t.idle(6, TcpState::Established), 7440);
        assert_eq!(t.idle(6, TcpState::OutFin), 7440);
        assert_eq!(t.idle(6, TcpState::BothFin), 240);
        assert_eq!(t.idle(6, TcpState::Trans), 240);
        assert_eq!(t.idle(17, TcpState::Closed), 300);
        assert_eq!(t.idle(1, TcpState::Closed), 60);
    }
}
