//! What the server sends without being asked: ANNOUNCE after a restart (RFC 6887 §14.1.3)
//! and Mapping Updates after a change (RFC 6887 §14.2), with what they need: the clients to
//! announce to, the addresses to send from and the queue the driver drains.
//!
//! One part of the [`Server`](crate::server::Server)'s state, kept apart from the table and
//! the pool: it holds datagrams and their schedule, never mapping state. Its invariant: every
//! queued datagram is sent once ([`Unsolicited::pop`]) and every Mapping Update goes out
//! [`MAPPING_UPDATE_COPIES`] times at most, then is forgotten.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::announce::{AnnounceSchedule, MAPPING_UPDATE_COPIES};
use crate::clients::RememberedClients;

/// An unsolicited datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The server address to send from (port 5351 by default); `None`: the default socket.
    pub source: Option<SocketAddr>,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub payload: Vec<u8>,
}

/// A Mapping Update in flight (RFC 6887 §14.2).
#[derive(Debug, Clone)]
pub(crate) struct PendingUpdate {
    pub binding: u32,
    /// The remote peer of a PEER session's update; `None`: the binding's MAP part.
    pub remote: Option<SocketAddrV4>,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
    pub next: Instant,
    pub sent: u32,
}

/// ANNOUNCE schedule, remembered clients, source addresses, Mapping Updates and the queue of
/// unsolicited datagrams.
#[derive(Debug)]
pub(crate) struct Unsolicited {
    announce: AnnounceSchedule,
    clients: RememberedClients,
    server_addrs: Vec<SocketAddr>,
    out: VecDeque<Transmit>,
    updates: Vec<PendingUpdate>,
}

impl Unsolicited {
    /// Nothing scheduled; up to `max_clients` clients remembered for unicast ANNOUNCE.
    pub fn new(max_clients: usize) -> Unsolicited {
        Unsolicited {
            announce: AnnounceSchedule::default(),
            clients: RememberedClients::new(max_clients),
            server_addrs: Vec::new(),
            out: VecDeque::new(),
            updates: Vec::new(),
        }
    }

    /// The addresses unsolicited messages are sent from.
    pub fn set_server_addresses(&mut self, addrs: Vec<SocketAddr>) {
        self.server_addrs = addrs;
    }

    /// Each source an ANNOUNCE copy goes out from (`None`: the driver's default socket).
    pub fn sources(&self) -> Vec<Option<SocketAddr>> {
        if self.server_addrs.is_empty() {
            vec![None]
        } else {
            self.server_addrs.iter().copied().map(Some).collect()
        }
    }

    /// Remembers `client` (a request's source) at engine second `now_s`.
    pub fn remember(&mut self, client: SocketAddrV4, now_s: u32) {
        self.clients.remember(client, now_s);
    }

    /// The remembered clients' endpoints.
    pub fn clients(&self) -> Vec<SocketAddrV4> {
        self.clients.endpoints()
    }

    /// The endpoint `ip` last sent a request from.
    pub fn latest_client(&self, ip: Ipv4Addr) -> Option<SocketAddrV4> {
        self.clients.latest(ip)
    }

    /// Queues one datagram.
    pub fn push(&mut self, t: Transmit) {
        self.out.push_back(t);
    }

    /// The next datagram to send.
    pub fn pop(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Starts `count` ANNOUNCE copies from `now`.
    pub fn start_announce(&mut self, now: Instant, count: u32) {
        self.announce.start(now, count);
    }

    /// True (once per copy) when an ANNOUNCE copy is due at `now`.
    pub fn announce_due(&mut self, now: Instant) -> bool {
        self.announce.take_due(now)
    }

    /// ANNOUNCE copies sent so far in this round.
    pub fn announce_copy(&self) -> u32 {
        self.announce.sent()
    }

    /// Schedules a Mapping Update.
    pub fn queue_update(&mut self, u: PendingUpdate) {
        self.updates.push(u);
    }

    /// Stops the updates of `binding`'s MAP part (`remote` `None`) or of its PEER session
    /// with `remote`.
    pub fn cancel_updates(&mut self, binding: u32, remote: Option<SocketAddrV4>) {
        self.updates
            .retain(|u| !(u.binding == binding && u.remote == remote));
    }

    /// Forgets every scheduled Mapping Update (state loss, renumbering).
    pub fn clear_updates(&mut self) {
        self.updates.clear();
    }

    /// Queues the Mapping Update copies due at `now` (0 ms, 250 ms, then 500 ms more,
    /// RFC 6887 §14.2); returns how many.
    pub fn send_due_updates(&mut self, now: Instant) -> u64 {
        let mut sent = 0;
        let mut i = 0;
        while i < self.updates.len() {
            if self.updates[i].next <= now {
                let u = &mut self.updates[i];
                self.out.push_back(Transmit {
                    source: None,
                    destination: u.destination,
                    payload: u.payload.clone(),
                });
                sent += 1;
                u.sent += 1;
                u.next += Duration::from_millis(250 * u64::from(u.sent));
                if u.sent >= MAPPING_UPDATE_COPIES {
                    self.updates.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        sent
    }

    /// The next ANNOUNCE or Mapping Update copy.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.announce.next();
        for u in &self.updates {
            next = Some(next.map_or(u.next, |n| n.min(u.next)));
        }
        next
    }
}
