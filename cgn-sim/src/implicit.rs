//! The dataplane's view of the mapping table: implicit (traffic-made) bindings, RFC 4787 and
//! RFC 6888, and the fast path's checks and fetches on the bindings its sessions run on.
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
        self.outbound_binding(now, protocol, internal, idle)
            .map(|(_, external)| external)
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

    /// Binding `id`, if it is live and maps `internal` to `external` for `protocol`: the fast
    /// path's check that a session still runs on the binding it was made on (outbound, the
    /// binding must also have no THIRD_PARTY_ID realm, as [`Server::outbound_binding`]
    /// looks up realm 0).
    #[inline]
    pub fn binding_mapping(
        &self,
        id: u32,
        protocol: u8,
        internal: SocketAddrV4,
        external: SocketAddrV4,
    ) -> Option<&crate::table::Binding> {
        self.table()
            .binding(id)
            .filter(|b| b.protocol == protocol && b.internal == internal && b.external == external)
    }

    /// Refreshes the implicit part of binding `id` to `expires`, as outbound traffic does
    /// in [`Server::outbound_binding`].
    #[inline]
    pub fn refresh_implicit(&mut self, id: u32, expires: u32) {
        self.table_mut().touch_implicit(id, expires);
    }

    /// Reads binding `id`'s first word, so its line is on its way to the cache when the fast
    /// path needs it (see [`crate::dataplane::flow_index`]).
    #[inline(always)]
    pub fn touch_binding(&self, id: u32) -> u8 {
        self.table().binding_flags(id)
    }
}
