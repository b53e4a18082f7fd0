//! Error injection, for tests of PCP clients and of the UPnP IGD–PCP IWF (RFC 6970 §4.5):
//! `cgn-sim ctl inject RESULT [--lifetime SECS] [--count N]` makes the next N MAP requests
//! that would create or refresh a mapping fail with RESULT and that lifetime. An injected
//! answer changes no state: no mapping, no port, no quota, no hold-down. Deletes
//! (lifetime 0), PEER and ANNOUNCE are answered as usual.

use pcp_client::wire::ResultCode;

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

#[cfg(test)]
mod tests;
