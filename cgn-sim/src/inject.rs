//! Error injection, for tests of PCP clients and of the UPnP IGD–PCP IWF (RFC 6970 §4.5):
//! `cgn-sim ctl inject RESULT [--lifetime SECS] [--count N]` makes the next N MAP requests
//! that would create or refresh a mapping fail with RESULT and that lifetime. An injected
//! answer changes no state: no mapping, no port, no quota, no hold-down. Deletes
//! (lifetime 0), PEER and ANNOUNCE are answered as usual.

use pcp_client::wire::ResultCode;

use crate::server::Server;

/// A pending injection: the error, its lifetime, and how many more MAP requests get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// The result code answered.
    pub result: ResultCode,
    /// The lifetime carried by the error response (RFC 6887 §7.4: how long the client should
    /// not retry).
    pub lifetime: u32,
    /// MAP requests still to be answered with it.
    pub remaining: u32,
}

/// Parses an injectable result code: its registered name (`NOT_AUTHORIZED`, case-insensitive)
/// or its number, 1 to 13 (the RFC 6887 §7.4 errors). Anything else, `SUCCESS` included, is
/// refused with a message naming the accepted values.
pub fn parse_result(s: &str) -> Result<ResultCode, String> {
    let s = s.trim();
    let code = match s.parse::<u8>() {
        Ok(n) => ResultCode::from(n),
        Err(_) => ResultCode::ALL
            .iter()
            .copied()
            .find(|c| c.name().is_some_and(|n| n.eq_ignore_ascii_case(s)))
            .unwrap_or(ResultCode::Unknown(0)),
    };
    match u8::from(code) {
        1..=13 => Ok(code),
        _ => Err(format!(
            "{s:?} is not a PCP error result (a name such as NOT_AUTHORIZED, or 1 to 13)"
        )),
    }
}

/// The armed injection, if any: the error part of the server. While armed, `remaining` is
/// at least 1; the last answer disarms it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Injector(Option<Injection>);

impl Injector {
    /// Arms `count` answers of `result` with `lifetime`; `count` 0 disarms.
    pub fn arm(&mut self, result: ResultCode, lifetime: u32, count: u32) {
        self.0 = (count > 0).then_some(Injection {
            result,
            lifetime,
            remaining: count,
        });
    }

    /// The pending injection, if any.
    pub fn pending(&self) -> Option<Injection> {
        self.0
    }

    /// Consumes one injected answer, if one is pending.
    pub fn take(&mut self) -> Option<(ResultCode, u32)> {
        let inj = self.0.as_mut()?;
        let taken = (inj.result, inj.lifetime);
        inj.remaining = inj.remaining.saturating_sub(1);
        if inj.remaining == 0 {
            self.0 = None;
        }
        Some(taken)
    }
}

impl Server {
    /// Answers the next `count` MAP requests that would create or refresh a mapping with
    /// `result` and `lifetime` (default: the server's error lifetime for `result`), changing
    /// no state. `count` 0 cancels a pending injection.
    pub fn inject(&mut self, result: ResultCode, lifetime: Option<u32>, count: u32) {
        let lifetime = lifetime.unwrap_or_else(|| self.error_lifetime(result));
        self.injector_mut().arm(result, lifetime, count);
        tracing::info!(%result, lifetime, count, "error injection armed");
    }

    /// The pending injection, if any.
    pub fn injection(&self) -> Option<Injection> {
        self.injector().pending()
    }

    /// Consumes one injected answer, if one is pending.
    pub(crate) fn take_injection(&mut self) -> Option<(ResultCode, u32)> {
        let taken = self.injector_mut().take()?;
        tracing::info!(result = %taken.0, lifetime = taken.1, "injected error answered");
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Instant;

    use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr};
    use pcp_client::wire::{ResponseRepr, ResultCode};
    use rand::SeedableRng;

    use super::parse_result;
    use crate::config::EngineConfig;
    use crate::server::{Interface, Server};

    fn map(server: &mut Server, now: Instant, port: u16, lifetime: u32) -> (ResultCode, u32) {
        let client = Ipv4Addr::new(100, 64, 0, 2);
        let request = RequestRepr {
            lifetime,
            client_ip: IpAddr::V4(client),
            data: OpcodeData::Map(MapData {
                nonce: Nonce([7; 12]),
                protocol: Protocol::UDP,
                internal_port: port,
                external_port: 0,
                external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            }),
            options: Options::EMPTY,
        };
        let mut buf = [0u8; 1100];
        let len = request.emit(&mut buf).expect("emit");
        let mut out = [0u8; 1100];
        let from = SocketAddr::new(IpAddr::V4(client), 40000);
        let n = server
            .handle(now, from, Interface::Inside, &buf[..len], &mut out)
            .expect("answer");
        let r = ResponseRepr::parse(&out[..n]).expect("response");
        (r.result, r.lifetime)
    }

    // RFC 6887 §7.4; RFC 6970 §4.5: the injected error reaches the client with the injected
    // lifetime, for exactly `count` creating/refreshing MAPs, and leaves the table, the pool
    // and the counts untouched; deletes are not affected.
    #[test]
    fn injected_error_answers_the_next_map_and_changes_nothing() {
        let now = Instant::now();
        let config = EngineConfig::with_pools(&["198.51.100.0/28"]);
        let mut server = Server::new(config, now, Box::new(rand::rngs::StdRng::seed_from_u64(1)))
            .expect("server");
        assert_eq!(map(&mut server, now, 5000, 3600).0, ResultCode::Success);
        let table = server.render_table(now);
        let counts = server.table().counts();

        server.inject(ResultCode::NotAuthorized, Some(1800), 2);
        // A new mapping and the refresh of the existing one both get the error.
        assert_eq!(
            map(&mut server, now, 5001, 3600),
            (ResultCode::NotAuthorized, 1800)
        );
        assert_eq!(
            map(&mut server, now, 5000, 3600),
            (ResultCode::NotAuthorized, 1800)
        );
        assert_eq!(server.render_table(now), table, "no state changed");
        assert_eq!(server.table().counts(), counts);
        assert_eq!(server.injection(), None, "count used up");
        assert_eq!(map(&mut server, now, 5001, 3600).0, ResultCode::Success);

        // Deletes pass through an armed injection, which stays armed.
        server.inject(ResultCode::NoResources, None, 1);
        assert_eq!(map(&mut server, now, 5001, 0).0, ResultCode::Success);
        assert!(server.injection().is_some());
        let (result, lifetime) = map(&mut server, now, 5002, 3600);
        assert_eq!(result, ResultCode::NoResources);
        assert_eq!(lifetime, server.config().short_error_lifetime, "default");
    }

    #[test]
    fn injectable_results_are_names_or_numbers_1_to_13() {
        assert_eq!(
            parse_result("NOT_AUTHORIZED"),
            Ok(ResultCode::NotAuthorized)
        );
        assert_eq!(parse_result("user_ex_quota"), Ok(ResultCode::UserExQuota));
        assert_eq!(parse_result("11"), Ok(ResultCode::CannotProvideExternal));
        assert!(parse_result("SUCCESS").is_err());
        assert!(parse_result("0").is_err());
        assert!(parse_result("14").is_err());
        assert!(parse_result("BOGUS").is_err());
    }
}
