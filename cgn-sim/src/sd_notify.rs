//! systemd readiness notification (`sd_notify(3)`) without libsystemd: one datagram to the
//! Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without the variable nothing is sent. (upnp-iwf has the same few lines: the crates share
//! nothing but the PCP codec.)

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (`KEY=VALUE` lines) to `$NOTIFY_SOCKET`; `Ok(false)` when it is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path.as_ref())?;
    }
    Ok(true)
}
