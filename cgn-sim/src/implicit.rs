//! The dataplane's view of the mapping table: implicit (traffic-made) bindings, RFC 4787 and
//! RFC 6888, their refresh, and the log of freed or changed bindings the translator drains.
//!
//! The translator ([`crate::dataplane::translate`], [`crate::dataplane::fast`]) reaches the
//! server's table only through these methods and the read-only accessors
//! ([`Server::table`], [`Server::pool`], [`Server::is_subscriber`]); PCP's own MAP processing
//! is in [`crate::map`].

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Protocol, ResultCode};

use crate::allocate::BindingRequest;
use crate::pool::proto_index;
use crate::server::Server;
use crate::table::InternalKey;

impl Server {
    /// Dataplane hook: outbound traffic from `internal` (implicit mapping, RFC 4787). Finds or
    /// creates the endpoint-independent binding and refreshes its implicit part for the
    /// protocol's idle timeout. Returns the external endpoint, or the reason it cannot be
    /// created (quota, resources): the packet is then dropped (RFC 6888 REQ-11).
    pub fn outbound(
        &mut self,
        now: std::time::Instant,
        protocol: Protocol,
        internal: SocketAddrV4,
    ) -> Result<SocketAddrV4, ResultCode> {
        let idle = if protocol == Protocol::TCP {
            self.config().tcp_idle_secs
        } else {
            self.config().udp_idle_secs
        };
        self.outbound_with_idle(now, protocol, internal, idle)
    }

    /// [`Server::outbound`] with the idle timeout chosen by the caller (the dataplane's TCP
    /// state machine: transitory or established, RFC 7857 §2). The implicit part then lives
    /// `idle_secs` from `now`.
    pub fn outbound_with_idle(
        &mut self,
        now: std::time::Instant,
        protocol: Protocol,
        internal: SocketAddrV4,
        idle: u32,
    ) -> Result<SocketAddrV4, ResultCode> {
        let (id, external) = self.outbound_binding(now, protocol, internal, idle)?;
        // Not the translator's own refresh: tell it the binding changed, so the session that
        // believed it set the binding's deadline checks again.
        self.table_mut().changes_mut().push(id);
        Ok(external)
    }

    /// [`Server::outbound_with_idle`], also returning the binding's id in the table.
    pub fn outbound_binding(
        &mut self,
        now: std::time::Instant,
        protocol: Protocol,
        internal: SocketAddrV4,
        idle: u32,
    ) -> Result<(u32, SocketAddrV4), ResultCode> {
        let now_s = self.seconds(now);
        self.handle_timeout(now);
        let key = InternalKey {
            protocol: protocol.0,
            realm: 0,
            addr: *internal.ip(),
            port: internal.port(),
        };
        if let Some(id) = self.table().lookup_internal(&key) {
            let ext = self.table().binding(id).map(|b| b.external);
            self.table_mut()
                .touch_implicit(id, now_s.saturating_add(idle));
            return ext.map(|e| (id, e)).ok_or(ResultCode::NoResources);
        }
        if proto_index(protocol).is_none() {
            return Err(ResultCode::UnsuppProtocol);
        }
        self.admit_new_binding(0, *internal.ip(), now_s)?;
        // A host with an all-protocol mapping owns its address: keep its ports, so answers to
        // what reached it through that mapping leave from the port they were sent to.
        let dmz = self.dmz_address_of(*internal.ip());
        let chosen = self.choose_endpoint(&BindingRequest {
            protocol,
            realm: 0,
            subscriber: *internal.ip(),
            internal_port: internal.port(),
            nonce: Default::default(),
            suggested_address: IpAddr::V4(dmz.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            suggested_port: if dmz.is_some() { internal.port() } else { 0 },
            exact: false,
        })?;
        let id =
            self.insert_pool_binding(protocol, 0, internal, chosen.external, chosen.addr_index);
        self.table_mut()
            .touch_implicit(id, now_s.saturating_add(idle));
        self.account_new_binding(0, *internal.ip(), chosen.addr_index, now_s);
        Ok((id, chosen.external))
    }

    /// The log of bindings freed or changed since the dataplane last drained it: the
    /// translator marks the sessions on them stale, so its fast path can trust a session's
    /// binding without reading it ([`crate::table::Changes`]).
    pub fn binding_changes(&mut self) -> &mut crate::table::Changes {
        self.table_mut().changes_mut()
    }

    /// Refreshes the implicit part of binding `id` to `expires`, as outbound traffic does
    /// in [`Server::outbound_binding`].
    #[inline]
    pub fn refresh_implicit(&mut self, id: u32, expires: u32) {
        self.table_mut().touch_implicit(id, expires);
    }
}
