//! Batched datagram I/O for the PCP socket: one `recvmmsg(2)` takes every queued request (up
//! to [`BATCH`]), one `sendmmsg(2)` sends all their answers.
//!
//! One system call per datagram each way made the daemon syscall-bound (≈ 2 socket calls
//! per answered request, 127–134 k requests/s on loopback); a batch costs two calls however
//! many requests it holds. The system calls go through `nix`'s safe wrappers (already in the
//! tree through `tun-rs` and `rtnetlink`), so this module needs no `unsafe`: its buffers and
//! headers are allocated once, and a batch neither allocates nor copies beyond the kernel's
//! own copy into and out of them (the `iovec` lists are arrays on the stack).
//!
//! Both halves are driven through tokio's readiness ([`UdpSocket::try_io`]), so a call that
//! finds the queue empty (`EAGAIN`) clears the readiness and the next wait goes back to epoll,
//! as with `try_recv_from`.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken per `recvmmsg` (and so answers per `sendmmsg`).
///
/// With `cgn-load --window 256` the queue holds up to 256 requests at a time; taking them all
/// in one call keeps the calls per answered request low without holding timers and control
/// requests back for long (a batch of 256 refreshes is about 100 µs of engine time).
pub const BATCH: usize = 256;

/// Receive buffer per datagram. A PCP message is at most 1 100 bytes (RFC 6887 §7); larger
/// datagrams are cut here, as `recv_from` into the same buffer did before, and the engine
/// answers what it sees.
pub const RECV_SIZE: usize = 2048;

/// Answer buffer per datagram: the largest PCP message (RFC 6887 §7).
pub const SEND_SIZE: usize = 1100;

/// Received datagrams of one batch.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams of up to [`RECV_SIZE`] bytes.
    pub fn new() -> Self {
        Self {
            buf: vec![0; BATCH * RECV_SIZE],
            headers: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Takes what is queued on `sock` (up to [`BATCH`] datagrams) without waiting. Returns the
    /// number taken; `Err(WouldBlock)` when nothing was queued (the socket's readiness is then
    /// cleared, so the next `readable().await` waits for new datagrams).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        let Self { buf, headers, got } = self;
        got.clear();
        sock.try_io(Interest::READABLE, || {
            let mut chunks = buf.chunks_exact_mut(RECV_SIZE);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            for r in results {
                got.push((r.bytes.min(RECV_SIZE), r.address.and_then(socket_addr)));
            }
            Ok(())
        })?;
        Ok(got.len())
    }

    /// Number of datagrams of the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Whether the last [`recv`](Self::recv) took nothing.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }

    /// The `i`-th datagram of the last batch and its sender (`None` for a sender address the
    /// kernel did not give as IPv4/IPv6, which a UDP socket never does).
    pub fn get(&self, i: usize) -> Option<(Option<SocketAddr>, &[u8])> {
        let (n, from) = *self.got.get(i)?;
        let start = i * RECV_SIZE;
        Some((from, &self.buf[start..start + n]))
    }
}

/// Answers of one batch, sent with as few `sendmmsg` calls as the socket buffer allows.
#[derive(Debug)]
pub struct SendBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    to: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// Room for [`BATCH`] answers of up to [`SEND_SIZE`] bytes.
    pub fn new() -> Self {
        Self {
            buf: vec![0; BATCH * SEND_SIZE],
            lens: Vec::with_capacity(BATCH),
            to: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Answers queued so far.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Whether [`BATCH`] answers are queued (send before writing more).
    pub fn is_full(&self) -> bool {
        self.lens.len() == BATCH
    }

    /// The buffer the next answer is written into, or `None` when the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let i = self.lens.len();
        (i < BATCH).then(|| &mut self.buf[i * SEND_SIZE..(i + 1) * SEND_SIZE])
    }

    /// Queues the `len` bytes just written into [`next_slot`](Self::next_slot) for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        if self.lens.len() < BATCH {
            self.lens.push(len.min(SEND_SIZE));
            self.to.push(Some(SockaddrStorage::from(to)));
        }
    }

    /// Sends every queued answer and empties the batch. Waits for room in the socket buffer
    /// when it is full; an answer the kernel refuses (for example `EPERM` from a firewall
    /// rule) is logged and dropped, and the rest are still sent.
    pub async fn send(&mut self, sock: &UdpSocket) {
        let fd = sock.as_raw_fd();
        let mut done = 0;
        while done < self.lens.len() {
            let r = sock.try_io(Interest::WRITABLE, || {
                let count = self.lens.len() - done;
                let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| {
                    let n = self.lens.get(done + k).copied().unwrap_or(0);
                    let start = ((done + k) * SEND_SIZE).min(self.buf.len());
                    [IoSlice::new(&self.buf[start..start + n])]
                });
                let sent = sendmmsg(
                    fd,
                    &mut self.headers,
                    iovs[..count].iter(),
                    &self.to[done..],
                    [],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                Ok(sent.count())
            });
            match r {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = sock.writable().await {
                        tracing::warn!(error = %e, "PCP socket failed");
                        break;
                    }
                }
                Err(e) => {
                    // `sendmmsg` reports an error only for the first message of the call.
                    let to = self.to[done].and_then(socket_addr);
                    tracing::warn!(?to, error = %e, "send failed");
                    done += 1;
                }
            }
        }
        self.lens.clear();
        self.to.clear();
    }
}

/// The standard-library form of a socket address the kernel filled in.
fn socket_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())));
    }
    s.as_sockaddr_in6().map(|a| {
        SocketAddr::V6(SocketAddrV6::new(
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two sockets on 127.0.0.1: everything sent in one batch arrives, in order, with the
    // sender's address, and one `recvmmsg` takes all of it.
    #[tokio::test]
    async fn one_call_takes_a_whole_batch_and_answers_go_back_to_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = server.local_addr().expect("addr");
        let mut out = SendBatch::new();
        for i in 0..100u8 {
            let slot = out.next_slot().expect("room");
            slot[..3].copy_from_slice(&[i, i, i]);
            out.commit(3, to);
        }
        out.send(&client).await;
        assert!(out.is_empty());
        let mut rx = RecvBatch::new();
        let mut got = Vec::new();
        // Loopback delivers before `sendmmsg` returns; bounded in case it ever does not.
        for _ in 0..100 {
            server.readable().await.expect("readable");
            match rx.recv(&server) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
            for i in 0..rx.len() {
                let (from, bytes) = rx.get(i).expect("datagram");
                assert_eq!(from, Some(client.local_addr().expect("addr")));
                got.push(bytes.to_vec());
            }
            if got.len() == 100 {
                break;
            }
        }
        assert_eq!(got.len(), 100);
        assert!(got.iter().enumerate().all(|(i, b)| b == &[i as u8; 3]));
        // Answers to the sender, one `sendmmsg`.
        for i in 0..rx.len() {
            let (from, _) = rx.get(i).expect("datagram");
            out.next_slot().expect("room")[0] = 7;
            out.commit(1, from.expect("sender"));
        }
        let n = out.len();
        out.send(&server).await;
        let mut back = [0u8; 8];
        for _ in 0..n {
            let (len, _) = client.recv_from(&mut back).await.expect("answer");
            assert_eq!(&back[..len], &[7]);
        }
    }

    #[test]
    fn a_full_batch_takes_no_more_answers() {
        let mut out = SendBatch::new();
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for _ in 0..BATCH {
            assert!(out.next_slot().is_some());
            out.commit(1, to);
        }
        assert!(out.is_full());
        assert!(out.next_slot().is_none());
        out.commit(1, to);
        assert_eq!(out.len(), BATCH);
    }
}
