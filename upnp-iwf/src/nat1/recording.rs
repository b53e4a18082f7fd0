//! [`RecordingNat`]: an in-memory NAT1 backend for tests of the interworking core.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Nat1Backend, Nat1Error, Nat1Rule, WanSide, clash};
use crate::mapping::Protocol;

/// One call made on a [`RecordingNat`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nat1Call {
    /// [`Nat1Backend::reset`] with its arguments.
    Reset {
        /// The WAN side given.
        wan: WanSide,
        /// The rules given.
        rules: Vec<Nat1Rule>,
    },
    /// [`Nat1Backend::install`].
    Install(Nat1Rule),
    /// [`Nat1Backend::remove`].
    Remove(Nat1Rule),
    /// [`Nat1Backend::installed`].
    Installed,
    /// [`Nat1Backend::shutdown`].
    Shutdown,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Nat1Call>,
    wan: Option<WanSide>,
    rules: BTreeSet<Nat1Rule>,
    failures: BTreeMap<(Protocol, u16), Nat1Error>,
    fail_all: Option<Nat1Error>,
}

/// In-memory [`Nat1Backend`] that records every call and behaves like [`super::Nftables`]
/// (same `Duplicate`/`NotStarted` rules), with failures injectable per WAN port. Clones share
/// their state, so a test keeps one clone to inspect after moving the other into the core.
#[derive(Debug, Clone, Default)]
pub struct RecordingNat {
    state: Arc<Mutex<State>>,
}

impl RecordingNat {
    /// An empty backend (no WAN side until [`Nat1Backend::reset`]).
    pub fn new() -> RecordingNat {
        RecordingNat::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every later `install` and `remove` of `protocol`/`wan_port` fail with `error`
    /// (e.g. [`Nat1Error::ConflictWithOtherMechanisms`] or [`Nat1Error::Rejected`]) and change
    /// nothing, until [`RecordingNat::clear_failures`].
    pub fn fail_on(&self, protocol: Protocol, wan_port: u16, error: Nat1Error) {
        self.lock().failures.insert((protocol, wan_port), error);
    }

    /// Makes every later call fail with `error` (e.g. [`Nat1Error::Unavailable`]).
    pub fn fail_all(&self, error: Nat1Error) {
        self.lock().fail_all = Some(error);
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        let mut s = self.lock();
        s.failures.clear();
        s.fail_all = None;
    }

    /// Every call so far, in order (failed ones included).
    pub fn calls(&self) -> Vec<Nat1Call> {
        self.lock().calls.clone()
    }

    /// The rules currently installed, sorted (without recording a call).
    pub fn rules(&self) -> Vec<Nat1Rule> {
        self.lock().rules.iter().copied().collect()
    }

    /// The WAN side of the last successful reset, `None` before it or after shutdown.
    pub fn wan(&self) -> Option<WanSide> {
        self.lock().wan.clone()
    }

    fn call(&self, call: Nat1Call) -> Result<MutexGuard<'_, State>, Nat1Error> {
        let mut s = self.lock();
        s.calls.push(call);
        match &s.fail_all {
            Some(e) => Err(e.clone()),
            None => Ok(s),
        }
    }
}

impl Nat1Backend for RecordingNat {
    fn reset(&mut self, wan: &WanSide, rules: &[Nat1Rule]) -> Result<(), Nat1Error> {
        let mut s = self.call(Nat1Call::Reset {
            wan: wan.clone(),
            rules: rules.to_vec(),
        })?;
        let mut wanted = BTreeSet::new();
        for rule in rules {
            if let Some(existing) = clash(&wanted, rule) {
                return Err(Nat1Error::Duplicate { existing });
            }
            wanted.insert(*rule);
        }
        s.rules = wanted;
        s.wan = Some(wan.clone());
        Ok(())
    }

    fn install(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        let mut s = self.call(Nat1Call::Install(*rule))?;
        if s.wan.is_none() {
            return Err(Nat1Error::NotStarted);
        }
        if let Some(e) = s.failures.get(&(rule.protocol, rule.wan_port)) {
            return Err(e.clone());
        }
        if let Some(existing) = clash(&s.rules, rule) {
            return Err(Nat1Error::Duplicate { existing });
        }
        s.rules.insert(*rule);
        Ok(())
    }

    fn remove(&mut self, rule: &Nat1Rule) -> Result<(), Nat1Error> {
        let mut s = self.call(Nat1Call::Remove(*rule))?;
        if s.wan.is_none() {
            return Err(Nat1Error::NotStarted);
        }
        if let Some(e) = s.failures.get(&(rule.protocol, rule.wan_port)) {
            return Err(e.clone());
        }
        s.rules.remove(rule);
        Ok(())
    }

    fn installed(&mut self) -> Result<Vec<Nat1Rule>, Nat1Error> {
        let s = self.call(Nat1Call::Installed)?;
        Ok(s.rules.iter().copied().collect())
    }

    fn shutdown(&mut self) -> Result<(), Nat1Error> {
        let mut s = self.call(Nat1Call::Shutdown)?;
        s.rules.clear();
        s.wan = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat1::NoNat;
    use std::net::Ipv4Addr;

    fn wan() -> WanSide {
        WanSide {
            iface: "wan0".into(),
            address: Ipv4Addr::new(100, 64, 0, 2),
        }
    }

    fn rule(protocol: Protocol, wan_port: u16) -> Nat1Rule {
        Nat1Rule {
            protocol,
            wan_port,
            client: Ipv4Addr::new(192, 168, 0, 10),
            client_port: wan_port.wrapping_add(1),
        }
    }

    #[test]
    fn nat1_recording_keeps_calls_and_rules_shared_between_clones() {
        let probe = RecordingNat::new();
        let mut nat = probe.clone();
        nat.reset(&wan(), &[rule(Protocol::Udp, 1000)])
            .expect("reset");
        nat.install(&rule(Protocol::Tcp, 2000)).expect("install");
        nat.remove(&rule(Protocol::Udp, 1000)).expect("remove");
        assert_eq!(nat.installed(), Ok(vec![rule(Protocol::Tcp, 2000)]));
        assert_eq!(probe.rules(), vec![rule(Protocol::Tcp, 2000)]);
        assert_eq!(
            probe.calls(),
            vec![
                Nat1Call::Reset {
                    wan: wan(),
                    rules: vec![rule(Protocol::Udp, 1000)]
                },
                Nat1Call::Install(rule(Protocol::Tcp, 2000)),
                Nat1Call::Remove(rule(Protocol::Udp, 1000)),
                Nat1Call::Installed,
            ]
        );
        nat.shutdown().expect("shutdown");
        assert!(probe.rules().is_empty());
        assert_eq!(probe.wan(), None);
    }

    #[test]
    fn nat1_recording_injected_conflict_and_rejection_change_nothing() {
        let mut nat = RecordingNat::new();
        nat.reset(&wan(), &[]).expect("reset");
        let conflict = Nat1Error::ConflictWithOtherMechanisms {
            protocol: Protocol::Tcp,
            wan_port: 5000,
            table: "inet fw4".into(),
        };
        nat.fail_on(Protocol::Tcp, 5000, conflict.clone());
        nat.fail_on(Protocol::Udp, 6000, Nat1Error::Rejected("no".into()));
        assert_eq!(nat.install(&rule(Protocol::Tcp, 5000)), Err(conflict));
        assert_eq!(
            nat.install(&rule(Protocol::Udp, 6000)),
            Err(Nat1Error::Rejected("no".into()))
        );
        nat.install(&rule(Protocol::Udp, 5000))
            .expect("other protocol");
        assert_eq!(nat.rules(), vec![rule(Protocol::Udp, 5000)]);
        nat.clear_failures();
        nat.install(&rule(Protocol::Tcp, 5000)).expect("cleared");
        nat.fail_all(Nat1Error::Unavailable("gone".into()));
        assert!(matches!(nat.installed(), Err(Nat1Error::Unavailable(_))));
    }

    #[test]
    fn nat1_recording_refuses_duplicates_and_use_before_reset() {
        let mut nat = RecordingNat::new();
        assert_eq!(
            nat.install(&rule(Protocol::Udp, 1)),
            Err(Nat1Error::NotStarted)
        );
        nat.reset(&wan(), &[]).expect("reset");
        nat.install(&rule(Protocol::Udp, 1)).expect("first");
        nat.install(&rule(Protocol::Udp, 1))
            .expect("identical again");
        let same_port = Nat1Rule {
            client_port: 99,
            ..rule(Protocol::Udp, 1)
        };
        assert_eq!(
            nat.install(&same_port),
            Err(Nat1Error::Duplicate {
                existing: rule(Protocol::Udp, 1)
            })
        );
    }

    #[test]
    fn nat1_none_does_nothing() {
        let mut nat = NoNat;
        nat.reset(&wan(), &[rule(Protocol::Udp, 1)]).expect("reset");
        nat.install(&rule(Protocol::Udp, 2)).expect("install");
        assert_eq!(nat.installed(), Ok(vec![]));
        nat.remove(&rule(Protocol::Udp, 2)).expect("remove");
        nat.shutdown().expect("shutdown");
    }
}
