//! Outbound, inbound and ICMP-error translation: the mapping-table lookups, filtering,
//! held SYNs, the DMZ and portless paths (see the parent module's docs for the rules).

use super::*;

impl Translator {
    pub(super) fn outbound(
        &mut self,
        server: &mut Server,
        now: Instant,
        ip: &mut View<'_>,
        flow: Flow,
        tcp_flags: u8,
    ) -> Verdict {
        let now_s = server.seconds(now);
        let protocol = Protocol(flow.protocol);
        let internal = ep(flow.src);
        let remote = remote_of(flow.protocol, flow.dst);
        let key = SessionKey {
            protocol: flow.protocol,
            internal,
            remote,
        };
        let state = self
            .sessions
            .get(&key)
            .map_or(crate::dataplane::session::TcpState::Closed, |s| s.tcp);
        let next = state.next(Dir::Out, tcp_flags);
        let idle = self.config.timeouts.idle(flow.protocol, next);
        let (binding, external) = match server.outbound_binding(now, protocol, internal, idle) {
            Ok(e) => e,
            Err(code) => {
                let reason = match code {
                    ResultCode::UserExQuota => DropReason::QuotaExceeded,
                    ResultCode::UnsuppProtocol => {
                        return Verdict::Drop(DropReason::UnsupportedProtocol);
                    }
                    _ => DropReason::NoResources,
                };
                self.emit_error(ip, self.config.inside_address, IcmpError::HostUnreachable);
                return Verdict::Drop(reason);
            }
        };
        let t = self.config.timeouts;
        // `outbound_binding` looked up realm 0 and set the implicit deadline to the one this
        // touch gives the session.
        let bound = Bound {
            id: binding,
            fast: FastPath::Both,
            wrote_implicit: true,
        };
        match self
            .sessions
            .touch(now_s, key, external, bound, Dir::Out, tcp_flags, &t, true)
        {
            Some(Touch::Live(_)) => {}
            Some(Touch::Full) | None => {
                self.emit_error(ip, self.config.inside_address, IcmpError::HostUnreachable);
                return Verdict::Drop(DropReason::SessionTableFull);
            }
        }
        if flow.protocol == proto::TCP && tcp_flags & TCP_SYN != 0 {
            self.silence_held_syns(external, ep(flow.dst));
        }
        let verdict = self.rewrite(now_s, ip, Side::Source, external);
        if verdict == Verdict::Forward {
            self.counters.outbound += 1;
        }
        verdict
    }

    pub(super) fn inbound(
        &mut self,
        server: &mut Server,
        now: Instant,
        ip: &mut View<'_>,
        flow: Flow,
        tcp_flags: u8,
    ) -> Verdict {
        let now_s = server.seconds(now);
        let ext_key = ExternalKey {
            protocol: flow.protocol,
            addr: flow.dst.0,
            port: flow.dst.1,
        };
        let is_syn = flow.protocol == proto::TCP && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let Some(id) = server.table().lookup_external(&ext_key) else {
            if let Some(v) = self.dmz_inbound(server, now_s, ip, flow, tcp_flags) {
                return v;
            }
            return self.refuse(ip, flow, is_syn, DropReason::NoMapping, now);
        };
        let Some(b) = server.table().binding(id) else {
            return self.refuse(ip, flow, is_syn, DropReason::NoMapping, now);
        };
        let internal = b.internal;
        let remote = remote_of(flow.protocol, flow.src);
        let key = SessionKey {
            protocol: flow.protocol,
            internal,
            remote,
        };
        let by_map = b.has_map() && {
            let filters = b.filters();
            filters.is_empty() || filters.iter().any(|f| filter_matches(f, ep(flow.src)))
        };
        let implicit = b.implicit_expires != 0 || b.peers > 0;
        let admitted = by_map
            || server.table().lookup_peer(id, ep(flow.src)).is_some()
            || self.sessions.get(&key).is_some()
            || (implicit && self.config.filtering == Filtering::EndpointIndependent);
        if !admitted {
            return self.refuse(ip, flow, is_syn, DropReason::Filtered, now);
        }
        // A full session table does not stop traffic a mapping admits; only state is lost.
        let bound = Bound {
            id,
            fast: if b.realm == 0 {
                FastPath::Both
            } else {
                FastPath::InboundOnly
            },
            wrote_implicit: false,
        };
        self.admit_inbound(now_s, ip, key, ep(flow.dst), bound, tcp_flags)
    }

    /// An admitted inbound packet: its session (to external endpoint `external`) is put on
    /// `bound` and refreshed, and the packet goes to the session's internal endpoint.
    fn admit_inbound(
        &mut self,
        now_s: u32,
        ip: &mut View<'_>,
        key: SessionKey,
        external: SocketAddrV4,
        bound: Bound,
        tcp_flags: u8,
    ) -> Verdict {
        let t = self.config.timeouts;
        let internal = key.internal;
        let _ = self
            .sessions
            .touch(now_s, key, external, bound, Dir::In, tcp_flags, &t, true);
        let verdict = self.rewrite(now_s, ip, Side::Destination, internal);
        if verdict == Verdict::Forward {
            self.counters.inbound += 1;
        }
        verdict
    }

    /// Inbound to an external port without a binding of its own, on an address an
    /// all-protocol MAP dedicates to one host (RFC 6887 §11.1, [`crate::dmz`]): to that host,
    /// port unchanged, if the mapping's FILTERs admit the sender. `None`: no such mapping.
    pub(super) fn dmz_inbound(
        &mut self,
        server: &Server,
        now_s: u32,
        ip: &mut View<'_>,
        flow: Flow,
        tcp_flags: u8,
    ) -> Option<Verdict> {
        let id = server.dmz_binding(flow.dst.0)?;
        let b = server.table().binding(id)?;
        let filters = b.filters();
        if !(filters.is_empty() || filters.iter().any(|f| filter_matches(f, ep(flow.src)))) {
            return Some(Verdict::Drop(DropReason::Filtered));
        }
        let internal = SocketAddrV4::new(*b.internal.ip(), flow.dst.1);
        let key = SessionKey {
            protocol: flow.protocol,
            internal,
            remote: remote_of(flow.protocol, flow.src),
        };
        // The host's answer makes its own binding on this port (the server keeps a DMZ host's
        // ports) and the session moves onto it.
        let bound = Bound {
            id,
            fast: FastPath::None,
            wrote_implicit: false,
        };
        Some(self.admit_inbound(now_s, ip, key, ep(flow.dst), bound, tcp_flags))
    }

    /// A protocol without ports (GRE, ESP, SCTP, …; or an ICMP type that is neither a query
    /// nor an error): only an all-protocol MAP translates it (RFC 6887 §11.1), inbound to its
    /// address → to its host, outbound from its host → from its address; the IP addresses are
    /// all that change. Anything else is dropped as unsupported.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn portless(
        &mut self,
        server: &Server,
        now: Instant,
        ip: &mut View<'_>,
        from_inside: bool,
        to_pool: bool,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Verdict {
        let now_s = server.seconds(now);
        let (side, to) = if from_inside && !to_pool {
            match server.dmz_address_of(src) {
                Some(ext) => (Side::Source, ext),
                None => return Verdict::Drop(DropReason::UnsupportedProtocol),
            }
        } else if !from_inside {
            let Some(b) = server
                .dmz_binding(dst)
                .and_then(|id| server.table().binding(id))
            else {
                return Verdict::Drop(DropReason::UnsupportedProtocol);
            };
            let filters = b.filters();
            let remote = SocketAddrV4::new(src, 0);
            if !(filters.is_empty() || filters.iter().any(|f| filter_matches(f, remote))) {
                return Verdict::Drop(DropReason::Filtered);
            }
            (Side::Destination, *b.internal.ip())
        } else {
            return Verdict::Drop(DropReason::UnsupportedProtocol);
        };
        let first_of_many = first_fragment_key(ip);
        let rewrite = match side {
            Side::Source => {
                ip.set_src(to);
                self.counters.outbound += 1;
                FragmentRewrite::Source(to)
            }
            Side::Destination => {
                ip.set_dst(to);
                self.counters.inbound += 1;
                FragmentRewrite::Destination(to)
            }
        };
        if let Some(k) = first_of_many {
            self.learn_fragments(now_s, k, rewrite);
        }
        Verdict::Forward
    }

    /// Drops an inbound packet; an unsolicited SYN is held instead (RFC 5382 REQ-4).
    pub(super) fn refuse(
        &mut self,
        ip: &View<'_>,
        flow: Flow,
        is_syn: bool,
        reason: DropReason,
        now: Instant,
    ) -> Verdict {
        if is_syn && self.pending_syns.len() < self.config.max_pending_syns {
            let packet = ip.as_bytes();
            let keep = packet
                .len()
                .min(crate::dataplane::icmp::MAX_ERROR_LEN - MIN_HEADER_LEN - 8);
            self.pending_syns.push_back(PendingSyn {
                due: now + self.config.syn_hold,
                external: ep(flow.dst),
                remote: ep(flow.src),
                packet: packet[..keep].to_vec(),
            });
            return Verdict::Drop(DropReason::UnsolicitedSyn);
        }
        Verdict::Drop(reason)
    }

    /// An ICMP error about a translated flow (RFC 5508 REQ-4, REQ-5). Inbound, the embedded
    /// packet is one the NAT sent out (its source is the external endpoint): restore the
    /// internal endpoint and address the error to it. Outbound, the embedded packet is one the
    /// NAT delivered (its destination is the internal endpoint): show the external endpoint and
    /// send the error from it. Nothing is refreshed (REQ-6).
    pub(super) fn icmp_error(
        &mut self,
        server: &Server,
        ip: &mut View<'_>,
        embedded: Flow,
        dir: Dir,
    ) -> Verdict {
        let table = server.table();
        let id = match dir {
            Dir::In => table.lookup_external(&ExternalKey {
                protocol: embedded.protocol,
                addr: embedded.src.0,
                port: embedded.src.1,
            }),
            Dir::Out => table.lookup_internal(&InternalKey {
                protocol: embedded.protocol,
                realm: 0,
                addr: embedded.dst.0,
                port: embedded.dst.1,
            }),
        };
        let Some(b) = id.and_then(|id| table.binding(id)) else {
            return Verdict::Drop(DropReason::IcmpErrorNoMapping);
        };
        let (outer, inner, target) = match dir {
            Dir::In => (Side::Destination, Side::Source, b.internal),
            Dir::Out => (Side::Source, Side::Destination, b.external),
        };
        let endpoint = (*target.ip(), target.port());
        if let Err(e) = rewrite_icmp_error_checked(ip, outer, *target.ip(), inner, endpoint) {
            return Verdict::Drop(map_err(e));
        }
        self.counters.icmp_errors += 1;
        match dir {
            Dir::In => self.counters.inbound += 1,
            Dir::Out => self.counters.outbound += 1,
        }
        Verdict::Forward
    }
}
