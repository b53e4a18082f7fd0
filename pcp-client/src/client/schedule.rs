//! When each mapping sends: the §8.1.1 schedule, §11.2.1 renewals, expiry, hold-downs,
//! RFC 7488 address failover, and re-creating everything after state loss.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::engine::{Engine, Grant, Job};
use super::event::{ErrorCode, Event, Exchange, MappingId, ServerId, Version};
use super::renewal;
use super::retransmit::Retransmit;

impl Engine {
    /// Marks an address failed and picks the next one (RFC 7488 §3). An address that had
    /// answered and then stopped clears the list and starts over.
    pub(crate) fn fail_path(&mut self, now: Instant, server: usize, path: usize) {
        let s = &mut self.servers[server];
        if s.answered == Some(path) {
            s.failed.iter_mut().for_each(|f| *f = false);
            s.answered = None;
        }
        s.failed[path] = true;
        match s.failed.iter().position(|f| !f) {
            Some(next) => s.active = next,
            None => {
                s.retry_at = Some(now + self.config.all_failed_retry);
                self.push_event(Event::ServerUnreachable {
                    server: ServerId(server),
                });
            }
        }
    }

    /// Handles a mapping whose deadline came: expiry, error hold-down end, a retransmission,
    /// or a renewal attempt.
    pub(crate) fn fire(&mut self, now: Instant, id: u64) {
        self.step(now, id);
        self.reschedule(id);
    }

    fn step(&mut self, now: Instant, id: u64) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let server = m.server;
        // Expiry: fall back to the §8.1.1 schedule (digest §2.6 impl note).
        if let Some(g) = m.grant {
            if now >= g.expires_at && !m.deleting {
                m.grant = None;
                m.tx = None;
                m.renew_k = 0;
                m.next_send = Some(now);
                self.push_event(Event::Expired { id: MappingId(id) });
            }
        }
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        if m.next_send.is_none_or(|t| t > now) {
            return;
        }
        // Hold-downs (RFC 6887 §8.3, §11.4) and the RFC 7488 15-minute wait.
        let s = &mut self.servers[server];
        if s.retry_at.is_some_and(|t| t <= now) {
            s.retry_at = None;
            s.failed.iter_mut().for_each(|f| *f = false);
            s.active = 0;
            s.answered = None;
        }
        let new_mapping = m.grant.is_none() && !m.deleting;
        let hold = [
            m.hold_until,
            s.hold_all_until,
            s.hold_new_until.filter(|_| new_mapping),
            s.retry_at,
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t > now)
        .max();
        if let Some(until) = hold {
            m.next_send = Some(until);
            return;
        }
        if m.hold_until.take().is_some() && m.tx.is_some_and(|tx| tx.transmissions > 0) {
            m.tx = None;
        }
        // Renewals are one transmission per §11.2.1 window; re-creates after state loss and
        // updates run the §8.1.1 schedule until answered (RFC 6887 §8.5, §14.1.3).
        let renewal = m.grant.is_some() && !m.deleting && !m.recovering && !m.updating;
        if renewal {
            // A renewal attempt: one transmission per §11.2.1 window.
            m.natpmp = std::mem::take(&mut m.natpmp_next);
            if !m.natpmp {
                m.renew_k = m.renew_k.saturating_add(1);
            }
            m.tx = None;
            self.stats.renewals += 1;
            let path = s.active;
            self.transmit(now, id, path);
            let m = match self.mappings.get_mut(&id) {
                Some(m) => m,
                None => return,
            };
            m.next_send = m.grant.and_then(|g| {
                renewal::next_attempt(
                    &mut *self.rng,
                    g.granted_at,
                    Duration::from_secs(u64::from(g.lifetime)),
                    m.renew_k + 1,
                    Some(now),
                )
            });
            return;
        }
        // The §8.1.1 schedule (create, re-create, delete).
        let mut tx = match m.tx {
            Some(tx) => tx,
            None => {
                m.natpmp = false;
                Retransmit::new(now, self.config.irt, s.active).with_limit(m.exchange_limit())
            }
        };
        if tx.transmissions > 0 {
            if tx.exhausted(now, &self.config) {
                self.exhausted(now, id, tx.transmissions);
                return;
            }
            if s.paths.len() > 1 && tx.address_exhausted(&self.config) && tx.address == s.active {
                self.fail_path(now, server, tx.address);
                if let Some(retry) = self.servers[server].retry_at {
                    if let Some(m) = self.mappings.get_mut(&id) {
                        m.tx = None;
                        m.next_send = Some(retry);
                    }
                    return;
                }
            }
            self.stats.retransmissions += 1;
        }
        let path = self.servers[server].active;
        let next = tx.on_transmit(now, path, &self.config, &mut *self.rng);
        if let Some(m) = self.mappings.get_mut(&id) {
            m.tx = Some(tx);
            m.next_send = Some(next);
        }
        self.transmit(now, id, path);
    }

    /// An exchange ran out of transmissions or time: a bounded update is abandoned (the
    /// mapping goes back to its renewal schedule), a bounded create gives up, an unbounded
    /// one times out on the engine's MRC/MRD.
    fn exhausted(&mut self, now: Instant, id: u64, transmissions: u32) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let bounded = m.give_up.is_some();
        if m.updating {
            m.updating = false;
            m.give_up = None;
            m.tx = None;
            m.awaiting = false;
            m.next_send = match m.grant {
                Some(g) if now < g.expires_at => renewal::next_attempt(
                    &mut *self.rng,
                    g.granted_at,
                    Duration::from_secs(u64::from(g.lifetime)),
                    m.renew_k + 1,
                    m.last_sent,
                )
                .or(Some(g.expires_at)),
                _ => Some(now),
            };
            self.stats.gave_up += 1;
            self.push_event(Event::GaveUp {
                id: MappingId(id),
                exchange: Exchange::Update,
                transmissions,
            });
            return;
        }
        self.forget(MappingId(id));
        if bounded {
            self.stats.gave_up += 1;
            self.push_event(Event::GaveUp {
                id: MappingId(id),
                exchange: Exchange::Create,
                transmissions,
            });
        } else {
            self.push_event(Event::TimedOut { id: MappingId(id) });
        }
    }

    /// Queues one transmission of a mapping's request on `path`.
    fn transmit(&mut self, now: Instant, id: u64, path: usize) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        m.last_sent = Some(now);
        m.awaiting = true;
        m.sent_path = path;
        let (server, natpmp) = (m.server, m.natpmp);
        if !m.queued {
            m.queued = true;
            self.transmits.push_back(Job::Mapping(id));
        }
        // NAT-PMP maps carry no external address: ask the gateway for it alongside.
        let s = &mut self.servers[server];
        if natpmp && s.natpmp_external.is_none() && !s.natpmp_external_queued {
            s.natpmp_external_queued = true;
            self.transmits.push_back(Job::NatPmpExternal(server));
        }
    }

    /// Recomputes a mapping's deadline (next send or expiry) and pushes it on the heap.
    pub(crate) fn reschedule(&mut self, id: u64) {
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let expiry = m.grant.filter(|_| !m.deleting).map(|g| g.expires_at);
        let deadline = match (m.next_send, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline == m.deadline {
            return;
        }
        m.deadline = deadline;
        m.timer_gen = m.timer_gen.wrapping_add(1);
        if let Some(at) = deadline {
            self.timers.push(Reverse((at, id, m.timer_gen)));
        }
        self.compact_timers();
    }

    /// Lazy deletion leaves stale heap entries; rebuild the heap before they outnumber the
    /// live ones, so it stays within 2 × mappings + 64 entries (amortized O(1) per change).
    pub(crate) fn compact_timers(&mut self) {
        if self.timers.len() > 2 * self.mappings.len() + 64 {
            self.timers = self
                .mappings
                .iter()
                .filter_map(|(&id, m)| m.deadline.map(|at| Reverse((at, id, m.timer_gen))))
                .collect();
        }
    }

    /// Re-sends every mapping at `server` now (state loss, RFC 6887 §8.5, §14.1.3), except
    /// `except` (whose response showed the loss and already refreshed it). Hold-downs learned
    /// from the server before it lost its state are dropped.
    pub(crate) fn renew_all(&mut self, now: Instant, server: usize, except: Option<u64>) {
        let s = &mut self.servers[server];
        s.hold_new_until = None;
        s.hold_all_until = None;
        let ids: Vec<u64> = self
            .mappings
            .iter()
            .filter(|&(&id, m)| m.server == server && Some(id) != except)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(m) = self.mappings.get_mut(&id) {
                m.hold_until = None;
                // Every mapping restarts the §8.1.1 schedule from IRT; granted ones become
                // re-creates, retransmitted until answered (not one renewal attempt).
                m.tx = None;
                m.stale_offers = 0;
                if m.grant.is_some() && !m.deleting {
                    m.recovering = true;
                }
                m.next_send = Some(now);
            }
            self.fire(now, id);
        }
    }

    /// Applies an error hold-down to a mapping (RFC 6887 §8.3: do not resend the same
    /// request within the error lifetime).
    pub(crate) fn hold(&mut self, now: Instant, id: u64, seconds: u32) {
        if let Some(m) = self.mappings.get_mut(&id) {
            let until = now + Duration::from_secs(u64::from(seconds));
            m.hold_until = Some(until);
            m.awaiting = false;
            m.tx = None;
            m.next_send = Some(until);
        }
        self.reschedule(id);
    }

    /// Records a grant and schedules the first renewal (RFC 6887 §11.4: MUST set a timer).
    pub(crate) fn grant(
        &mut self,
        now: Instant,
        id: u64,
        external: SocketAddr,
        lifetime: u32,
        epoch: u32,
        via: Version,
    ) {
        let lifetime = lifetime.min(self.config.max_lifetime);
        let Some(m) = self.mappings.get_mut(&id) else {
            return;
        };
        let previous = m.grant.map(|g| g.external);
        // A re-create after state loss or expiry, or an update, is reported as such.
        let restored_from = m
            .last_external
            .filter(|_| m.recovering || previous.is_none());
        let updated = m.updating;
        let life = Duration::from_secs(u64::from(lifetime));
        m.grant = Some(Grant {
            external,
            lifetime,
            granted_at: now,
            expires_at: now + life,
            via,
        });
        m.last_external = Some(external);
        m.tx = None;
        m.awaiting = false;
        m.hold_until = None;
        m.renew_k = 0;
        m.recovering = false;
        m.updating = false;
        m.give_up = None;
        m.last_result = Some(ErrorCode::Pcp(crate::wire::ResultCode::Success));
        m.next_send = renewal::next_attempt(&mut *self.rng, now, life, 1, m.last_sent);
        let id = MappingId(id);
        if let Some(previous) = restored_from {
            self.stats.restores += 1;
            self.push_event(Event::Restored {
                id,
                previous,
                external,
                same_endpoint: previous == external,
                lifetime,
                epoch,
            });
        }
        if updated {
            self.push_event(Event::Updated {
                id,
                external,
                lifetime,
            });
        }
        if restored_from.is_some() || updated {
            self.reschedule(id.0);
            return;
        }
        let event = match previous {
            None => Event::Granted {
                id,
                external,
                lifetime,
                epoch,
                via,
            },
            Some(previous) if previous == external => Event::Renewed {
                id,
                external,
                lifetime,
            },
            Some(previous) => Event::Changed {
                id,
                previous,
                external,
                lifetime,
            },
        };
        self.push_event(event);
        self.reschedule(id.0);
    }
}
