//! The TUN adapter: the device the dataplane reads untranslated packets from and writes
//! translated ones to, and the routing that steers traffic through it (set up over netlink with
//! `rtnetlink`, no shelling out).
//!
//! Routing in the CGN's network namespace, with `T` the TUN device:
//!
//! * `PREFIX dev T` in the main table for every pool prefix: packets from the Internet to pool
//!   addresses enter the translator (and so do hairpinned ones, which then leave it translated
//!   back towards the other subscriber);
//! * `ip rule iif INSIDE lookup TABLE` (priority `rule_priority`) with `default dev T` in
//!   `TABLE`: everything subscribers send is translated. Packets for the CGN's own addresses
//!   (PCP on UDP 5351) still reach it, because the `local` table is consulted first; packets
//!   the CGN sends itself (PCP answers, ANNOUNCE) have no input interface and are not caught;
//! * translated packets written to `T` are routed by the main table: towards the outside
//!   interface, or back to the inside for inbound traffic.
//!
//! The device is not persistent: it disappears when the daemon exits, and so do the routes
//! through it. The policy rule is removed by [`Tun::close`] (and a stale one with the same
//! priority and table is replaced at start).
//!
//! # Batched I/O
//!
//! A TUN file descriptor hands over one packet per `read` and takes one per `write`: there
//! is no `recvmmsg` for it. What batches at the system-call level is the kernel's offload
//! interface (`IFF_VNET_HDR` + `TUNSETOFFLOAD` with checksum, TSO and USO, through
//! `tun-rs`): every read and write carries a virtio-net header, and one of them may be a GSO
//! super-packet holding many segments of one flow.
//!
//! * [`Tun::recv_batch`] reads until the queue is empty or the batch is full; a super-packet
//!   (the kernel's GRO made it, e.g. on a veth with `rx-udp-gro-forwarding`) is split into
//!   its segments, each with a complete checksum, so the translator sees ordinary packets;
//! * [`Tun::send_batch`] coalesces the translated packets of one flow again (UDP and TCP,
//!   same rules as the kernel's GRO: consecutive, same size, valid checksums, no IP options)
//!   and writes each group as one super-packet, which the kernel forwards as one skb and
//!   segments at the last moment (often only in the receiver's socket).
//!
//! Packets that do not coalesce cost one write each, as before. If the kernel refuses the
//! offload flags the device is opened without them ([`Tun::offload`] says which) and the
//! same calls degrade to one read and one write per packet.

mod routes;

use routes::{add_pool_route, link_index, netlink};
pub use routes::{covering_prefixes, interface_with_address};

use std::io::{self, IoSlice};
use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};

/// How to build the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Device name (at most 15 bytes).
    pub name: String,
    /// Device MTU.
    pub mtu: u16,
    /// Pool prefixes routed into the device.
    pub pool: Vec<(Ipv4Addr, u8)>,
    /// Subscriber-facing interfaces whose forwarded traffic goes into the device.
    pub inside_interfaces: Vec<String>,
    /// Routing table for subscriber traffic.
    pub table: u32,
    /// Priority of the `iif` rules.
    pub rule_priority: u32,
    /// Ask for the offload interface (virtio-net headers, GSO super-packets both ways); the
    /// device falls back to plain packets if the kernel refuses it.
    pub offload: bool,
    /// Packets the device queues for the daemon before the kernel drops (`txqueuelen`; the
    /// kernel's default for TUN is 500).
    pub queue_len: u32,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: "cgn0".to_string(),
            mtu: 1500,
            pool: Vec::new(),
            inside_interfaces: Vec::new(),
            table: 4444,
            rule_priority: 4444,
            offload: true,
            queue_len: DEFAULT_QUEUE_LEN,
        }
    }
}

/// Default [`TunConfig::queue_len`]: 8 batches, about 10 ms of 200 k packets/s, so a daemon
/// that is off the CPU for a scheduler tick does not lose the packets that arrived meanwhile.
pub const DEFAULT_QUEUE_LEN: u32 = 2048;

/// Why the adapter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// Opening or configuring the device failed (usually: not root / no CAP_NET_ADMIN, or no
    /// /dev/net/tun).
    #[error("TUN device {name}: {source}")]
    Device {
        /// Device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// An interface was not found.
    #[error("interface {0} not found")]
    NoSuchInterface(String),
}

/// The open adapter.
pub struct Tun {
    device: tun_rs::AsyncDevice,
    handle: Handle,
    rules: Vec<netlink_packet_route::rule::RuleMessage>,
    /// Interface index of the device.
    index: u32,
    /// Pool prefixes routed into the device.
    pool: Vec<(Ipv4Addr, u8)>,
    name: String,
    mtu: usize,
    /// Coalescing state of [`Tun::send_batch`], reused (it keeps its allocations).
    gro: tun_rs::GROTable,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("rules", &self.rules.len())
            .field("offload", &self.offload())
            .finish()
    }
}

/// Bytes in front of every packet in a [`PacketBatch`] slot: room for the virtio-net header
/// the offload interface puts before each packet.
pub const HEADROOM: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// Most segments one GSO super-packet from the kernel is split into: a read is only started
/// while this many slots are free (the kernel's UDP GRO stops at 64 segments, TCP GRO at
/// 64 KiB, i.e. 45 full-size segments; 128 leaves room for small MSS).
pub const MAX_SEGMENTS: usize = 128;

/// Largest super-packet [`Tun::send_batch`] builds (a slot's capacity): 16 KiB holds
/// [`MAX_COALESCED`] UDP packets of up to 256 bytes, or 11 full-size ones.
const COALESCE_MAX: usize = 16 * 1024;

/// Most packets coalesced into one write. The kernel refuses (`EINVAL`) a UDP super-packet
/// of more than `UDP_MAX_SEGMENTS` segments (128 on Linux 6.x, 64 before); its own GRO stops
/// at 64 too.
pub const MAX_COALESCED: usize = 64;

/// One packet buffer: [`HEADROOM`] bytes, the packet, and room to coalesce later packets of
/// its flow into it.
struct Slot {
    buf: Vec<u8>,
    /// The capacity tun-rs is shown: coalescing stops at [`MAX_COALESCED`] packets.
    limit: usize,
}

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsMut<[u8]> for Slot {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl tun_rs::ExpandBuffer for Slot {
    fn buf_capacity(&self) -> usize {
        self.limit.min(self.buf.capacity())
    }

    fn buf_resize(&mut self, new_len: usize, value: u8) {
        self.buf.resize(new_len, value);
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        self.buf.extend_from_slice(src);
    }
}

impl Slot {
    /// Truncates the slot to its packet of `size` bytes and sets the coalescing limit: the
    /// packet's headers plus [`MAX_COALESCED`] payloads of its size (tun-rs coalesces while
    /// `2 × HEADROOM + coalesced length ≤ capacity`).
    fn prepare_send(&mut self, size: usize) {
        self.buf.truncate(HEADROOM + size);
        let packet = self.buf.get(HEADROOM..).unwrap_or_default();
        let ip_header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        let headers = match packet.get(9) {
            Some(17) => ip_header + 8,
            Some(6) => {
                ip_header + usize::from(packet.get(ip_header + 12).map_or(0, |b| b >> 4)) * 4
            }
            _ => size,
        };
        let payload = size.saturating_sub(headers);
        self.limit = 2 * HEADROOM + headers.min(size) + MAX_COALESCED * payload;
    }
}

/// Reusable buffers for one batch of packets: `capacity + MAX_SEGMENTS` slots, each
/// [`HEADROOM`] bytes and then up to one MTU of packet. Nothing is allocated per packet or
/// per batch once it exists.
pub struct PacketBatch {
    slots: Vec<Slot>,
    sizes: Vec<usize>,
    len: usize,
    capacity: usize,
    slot_len: usize,
    /// One raw read in offload mode: header and up to 64 KiB of super-packet.
    raw: Vec<u8>,
}

impl std::fmt::Debug for PacketBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBatch")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl PacketBatch {
    /// Buffers for batches of about `capacity` packets of at most `mtu` bytes.
    pub fn new(capacity: usize, mtu: usize) -> PacketBatch {
        let slot_len = HEADROOM + mtu;
        // Coalescing appends the payloads of later packets of a flow to the first one, up to
        // the slot's capacity (tun-rs checks it, so a slot never reallocates).
        let slot_capacity = 2 * HEADROOM + mtu.max(COALESCE_MAX);
        let slots = (0..capacity + MAX_SEGMENTS)
            .map(|_| {
                let mut buf = Vec::with_capacity(slot_capacity);
                buf.resize(slot_len, 0);
                Slot { buf, limit: 0 }
            })
            .collect();
        PacketBatch {
            slots,
            sizes: vec![0; capacity + MAX_SEGMENTS],
            len: 0,
            capacity,
            slot_len,
            raw: vec![0; HEADROOM + usize::from(u16::MAX)],
        }
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No packet held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Packets a batch is filled up to by [`Tun::recv_batch`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The packets held, in order, each as the mutable slice the translator rewrites.
    pub fn packets_mut(&mut self) -> impl Iterator<Item = &mut [u8]> + '_ {
        self.slots
            .iter_mut()
            .zip(&self.sizes)
            .take(self.len)
            .map(|(slot, &size)| {
                slot.buf
                    .get_mut(HEADROOM..HEADROOM + size)
                    .unwrap_or_default()
            })
    }

    /// Keeps the packets for which `keep(index)` is true (indices as before the call), in
    /// order, and forgets the others.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            if keep(i) {
                self.slots.swap(kept, i);
                self.sizes.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
    }

    /// Adds a copy of `packet` (for packets made outside the batch, e.g. the translator's
    /// ICMP errors); `false` if there is no free slot or it is longer than the MTU.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let (Some(slot), Some(size)) = (self.slots.get_mut(self.len), self.sizes.get_mut(self.len))
        else {
            return false;
        };
        let Some(dst) = slot.buf.get_mut(HEADROOM..HEADROOM + packet.len()) else {
            return false;
        };
        dst.copy_from_slice(packet);
        *size = packet.len();
        self.len += 1;
        true
    }

    /// Forgets every packet and gives each slot back its full length.
    pub fn clear(&mut self) {
        for slot in self.slots.iter_mut().take(self.len) {
            slot.buf.resize(self.slot_len, 0);
        }
        self.len = 0;
    }
}

impl Tun {
    /// Creates the device, brings it up and installs the routes and rules described in the
    /// module documentation. Must run inside a tokio runtime.
    pub async fn open(config: &TunConfig) -> Result<Tun, TunError> {
        let build = |offload: bool| {
            tun_rs::DeviceBuilder::new()
                .name(config.name.clone())
                .mtu(config.mtu)
                .offload(offload)
                .build_async()
        };
        let device = match build(config.offload) {
            Ok(d) => d,
            Err(e) if config.offload => {
                // IFF_VNET_HDR or TUNSETOFFLOAD refused (old kernel, restricted sandbox):
                // plain packets, one system call each.
                tracing::warn!(tun = %config.name, error = %e, "TUN offload unavailable, one read and one write per packet");
                build(false).map_err(|source| TunError::Device {
                    name: config.name.clone(),
                    source,
                })?
            }
            Err(source) => {
                return Err(TunError::Device {
                    name: config.name.clone(),
                    source,
                });
            }
        };
        device
            .set_tx_queue_len(config.queue_len)
            .map_err(|source| TunError::Device {
                name: format!("{} (txqueuelen {})", config.name, config.queue_len),
                source,
            })?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| TunError::Device {
                name: "netlink".into(),
                source,
            })?;
        tokio::spawn(connection);
        // The translator is IPv4 only: keep the kernel from sending router solicitations and
        // other IPv6 chatter into it. Best effort (IPv6 may be disabled altogether).
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.name),
            "1",
        );
        // ICMP errors the translator originates carry the CGN's own inside or outside
        // address as source; without `accept_local` the kernel drops them as martians when
        // they come back out of the device. No reverse-path check on the device either:
        // translated packets arrive from pool addresses routed through it.
        for (key, value) in [("accept_local", "1"), ("rp_filter", "0")] {
            let path = format!("/proc/sys/net/ipv4/conf/{}/{key}", config.name);
            if let Err(source) = std::fs::write(&path, value) {
                return Err(TunError::Device {
                    name: format!("{} ({path})", config.name),
                    source,
                });
            }
        }
        let index = link_index(&handle, &config.name).await?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("set {} up", config.name)))?;
        for (prefix, len) in &config.pool {
            add_pool_route(&handle, index, &config.name, *prefix, *len).await?;
        }
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .table_id(config.table)
            .build();
        handle
            .route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "default dev {} table {}",
                config.name, config.table
            )))?;
        let mut rules = Vec::new();
        for iface in &config.inside_interfaces {
            // Fail early with a clear message if the interface does not exist.
            link_index(&handle, iface).await?;
            let mut add = handle
                .rule()
                .add()
                .v4()
                .input_interface(iface.clone())
                .table_id(config.table)
                // rtnetlink leaves the action unspecified, which the kernel treats as a
                // failed lookup (`ip rule` shows `none`): it must say "go to the table".
                .action(netlink_packet_route::rule::RuleAction::ToTable)
                .priority(config.rule_priority)
                .replace();
            let message = add.message_mut().clone();
            add.execute()
                .await
                .map_err(netlink(format!("rule iif {iface} lookup {}", config.table)))?;
            rules.push(message);
        }
        Ok(Tun {
            device,
            handle,
            rules,
            index,
            pool: config.pool.clone(),
            name: config.name.clone(),
            mtu: usize::from(config.mtu),
            gro: tun_rs::GROTable::new(),
        })
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the offload interface is on (virtio-net headers, GSO super-packets); with
    /// UDP segmentation (USO, Linux ≥ 6.2) too in the second value.
    pub fn offload(&self) -> (bool, bool) {
        (self.device.tcp_gso(), self.device.udp_gso())
    }

    /// Device MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Waits until a packet can be read (cancel-safe: nothing is consumed).
    pub async fn readable(&self) -> io::Result<()> {
        self.device.readable().await
    }

    /// Reads queued packets into `batch` without waiting, until the device queue is empty or
    /// the batch holds [`PacketBatch::capacity`] packets; a super-packet counts as its
    /// segments. Returns the number of reads made (system calls that returned a packet).
    ///
    /// An error other than `WouldBlock` ends the batch (the packets read so far stay in it):
    /// a malformed super-packet from the kernel is dropped that way.
    pub fn recv_batch(&self, batch: &mut PacketBatch) -> (usize, io::Result<()>) {
        let mut reads = 0;
        while batch.len < batch.capacity {
            let at = batch.len;
            let (Some(slots), Some(sizes)) = (batch.slots.get_mut(at..), batch.sizes.get_mut(at..))
            else {
                break;
            };
            match self
                .device
                .try_recv_multiple(&mut batch.raw, slots, sizes, HEADROOM)
            {
                Ok(n) => {
                    reads += 1;
                    batch.len += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return (reads, Err(e)),
            }
        }
        (reads, Ok(()))
    }

    /// Writes every packet of `batch` (coalescing runs of one flow into super-packets in
    /// offload mode) and empties it. Returns how many packets went out: all of them, or 0 if
    /// a write failed (the device does not say which; a TUN write fails only if the device
    /// is going away or out of memory).
    pub fn send_batch(&mut self, batch: &mut PacketBatch) -> io::Result<usize> {
        let n = batch.len;
        for (slot, &size) in batch.slots.iter_mut().zip(&batch.sizes).take(n) {
            slot.prepare_send(size);
        }
        let sent = match batch.slots.get_mut(..n) {
            Some([]) | None => Ok(0),
            // The device's synchronous call on the non-blocking descriptor: a TUN write does
            // not wait for queue space.
            Some(slots) => {
                tun_rs::DeviceImpl::send_multiple(&self.device, &mut self.gro, slots, HEADROOM)
                    .map(|_| n)
            }
        };
        batch.clear();
        sent
    }

    /// Sends one packet (in offload mode behind an empty virtio-net header, so it is taken
    /// as is).
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        let header = [0u8; HEADROOM];
        let bufs: &[IoSlice<'_>] = if self.device.tcp_gso() {
            &[IoSlice::new(&header), IoSlice::new(packet)]
        } else {
            &[IoSlice::new(packet)]
        };
        // Non-blocking first: the device queue almost always has room.
        match self.device.try_send_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.device.send_vectored(bufs).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let built = etherparse::PacketBuilder::ipv4([198, 51, 100, 1], [203, 0, 113, 50], 63)
            .udp(src_port, 9999)
            .write(&mut out, payload);
        assert!(built.is_ok());
        out
    }

    #[test]
    fn a_batch_keeps_the_forwarded_packets_in_order_and_takes_extra_ones() {
        let mut batch = PacketBatch::new(4, 1500);
        for port in [1, 2, 3] {
            assert!(batch.push(&udp(port, b"x")));
        }
        batch.retain(|i| i != 1);
        assert!(batch.push(&udp(4, b"y")));
        let ports: Vec<u16> = batch
            .packets_mut()
            .map(|p| u16::from_be_bytes([p[20], p[21]]))
            .collect();
        assert_eq!(ports, vec![1, 3, 4]);
        // Longer than the MTU: not taken.
        assert!(!batch.push(&vec![0x45; 1501]));
        batch.clear();
        assert!(batch.is_empty());
    }

    #[test]
    fn coalescing_stops_at_64_packets_which_the_kernel_accepts_as_udp_gso() {
        // A UDP super-packet of more segments than UDP_MAX_SEGMENTS is refused with EINVAL:
        // 100 packets of one flow must go out as 64 + 36.
        let mut batch = PacketBatch::new(128, 1500);
        let payload = [0x5a; 36];
        for _ in 0..100 {
            assert!(batch.push(&udp(4000, &payload)));
        }
        let n = batch.len();
        for (slot, &size) in batch.slots.iter_mut().zip(&batch.sizes).take(n) {
            slot.prepare_send(size);
        }
        let mut gro = tun_rs::GROTable::new();
        let applied = gro.apply_gro(&mut batch.slots[..n], HEADROOM, true);
        assert!(applied.is_ok());
        let header_len = 20 + 8;
        assert_eq!(batch.slots[0].buf.len(), HEADROOM + header_len + 64 * 36);
        assert_eq!(batch.slots[64].buf.len(), HEADROOM + header_len + 36 * 36);
        let gso = tun_rs::VirtioNetHdr::decode(&batch.slots[0].buf[..HEADROOM]);
        assert!(
            matches!(gso, Ok(h) if h.gso_type == tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4 && h.gso_size == 36)
        );
    }
}
