//! The tokio driver: one task owns the [`Engine`], one connected UDP socket per server address
//! (the Client IP field comes from `getsockname`, RFC 6887 §16.4), and the ANNOUNCE listeners
//! on 224.0.0.1:5350 and [ff02::1]:5350 (§14.1.3), joined only on the interface that faces the
//! server. Requests and answers travel over channels, so every public future is
//! cancellation-safe.
//!
//! # Back-pressure
//! No event that changes a mapping's state is ever dropped: the engine keeps every event
//! (`max_queued_events = 0`) and the driver drains it after every input, and each
//! [`Client::events`] stream and each [`Mapping`] has an unbounded queue of its own. A reader
//! that falls behind makes its own queue grow (a few dozen bytes per event) and slows nobody
//! else; a reader that is done must drop its stream, which unsubscribes it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::wire::{CLIENT_PORT, Nonce, ResultCode};

use super::discovery::{discover_gateways, interface_index};
use super::{
    Config, Engine, ErrorCode, Event, Exchange, MapRequest, MappingId, MappingInfo, MappingUpdate,
    Path, PeerRequest, RequestError, ServerId, Stats, Version,
};

/// How often the driver looks up the source address it would use towards each server
/// address (a route lookup: a UDP `connect` of a new socket, no traffic), to follow the
/// host when it is renumbered (RFC 6887 §11.5).
pub const ADDRESS_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the client finds its server and how it behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The addresses of the PCP server, in preference order (RFC 7488 §3: they are one server,
    /// tried in turn). Empty: the default gateways of this host (RFC 6887 §8.1).
    pub servers: Vec<SocketAddr>,
    /// Engine timers and limits.
    pub engine: Config,
    /// Do not listen for multicast ANNOUNCE on port 5350 (unicast ANNOUNCE on the request
    /// sockets is always accepted).
    pub no_announce_listener: bool,
    /// The interface that faces the PCP server (e.g. the router's WAN), where the ANNOUNCE
    /// listener joins 224.0.0.1 / ff02::1 and to which it is bound (SO_BINDTODEVICE, needs
    /// CAP_NET_RAW or root). `None`: join on the interface of the local address used towards
    /// the server (IPv4) and accept only that membership (IP_MULTICAST_ALL off), so an
    /// ANNOUNCE sent by a LAN host on another interface never reaches the client.
    pub announce_interface: Option<String>,
    /// How often to check whether the host's source address towards the server changed
    /// ([`ADDRESS_CHECK`] by default; `None`: never). On a change the driver opens a new
    /// socket from the new address and re-creates every mapping from it
    /// ([`Engine::local_address_changed`], [`Event::Renumbered`], then [`Event::Restored`]
    /// per mapping); [`Client::paths`] shows the new address.
    pub address_check: Option<std::time::Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            servers: Vec::new(),
            engine: Config::default(),
            no_announce_listener: false,
            announce_interface: None,
            address_check: Some(ADDRESS_CHECK),
        }
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// No server was configured and no default gateway was found.
    #[error("no PCP server: none configured and no default gateway found")]
    NoServer,
    /// The engine refused the request before sending it.
    #[error("invalid request: {0}")]
    Request(#[from] RequestError),
    /// The server answered with an error.
    #[error("{code}: {} (server suggests retrying after {lifetime} s)", code.description())]
    Server {
        /// The result code.
        code: ErrorCode,
        /// The error's lifetime in seconds.
        lifetime: u32,
    },
    /// The server ignores PREFER_FAILURE: it offered another external endpoint (which the
    /// client deletes again).
    #[error("the server ignores PREFER_FAILURE: it offered {offered} instead (deleted again)")]
    PreferFailureIgnored {
        /// What the server offered.
        offered: SocketAddr,
    },
    /// The exchange ran out of retransmissions (MRC/MRD) or its [`super::GiveUp`] bound.
    #[error("no answer from the PCP server")]
    TimedOut,
    /// The driver task stopped.
    #[error("the PCP client task has stopped")]
    Closed,
}

/// Answer to [`Client::announce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The server's epoch.
    pub epoch: u32,
    /// The result (SUCCESS, or e.g. UNSUPP_OPCODE from a server without ANNOUNCE).
    pub result: ResultCode,
}

/// What a granted mapping looks like when [`Client::map`] or [`Client::peer`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GrantInfo {
    external: SocketAddr,
    lifetime: u32,
    epoch: u32,
    nonce: Nonce,
    via: Version,
}

enum Command {
    Create {
        request: Box<Creation>,
        reply: CreateReply,
    },
    Delete {
        id: MappingId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    DeleteRequest {
        request: Box<MapRequest>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Forget(MappingId),
    Announce(oneshot::Sender<Result<Announcement, ClientError>>),
    Update {
        id: MappingId,
        update: Box<MappingUpdate>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Subscribe(mpsc::UnboundedSender<Event>),
    Stats(oneshot::Sender<Stats>),
    Info {
        id: Option<MappingId>,
        reply: oneshot::Sender<Vec<(MappingId, MappingInfo)>>,
    },
}

enum Creation {
    Map(MapRequest),
    Peer(PeerRequest),
}

type Subscription = mpsc::UnboundedReceiver<Event>;
type CreateReply = oneshot::Sender<Result<(MappingId, GrantInfo, Subscription), ClientError>>;

/// A PCP client over tokio. Cheap to clone; the driver task stops when the last `Client` and
/// the last [`Mapping`] are dropped.
///
/// ```no_run
/// use pcp_client::client::MapRequest;
/// use pcp_client::wire::Protocol;
/// use pcp_client::{Client, ClientConfig};
///
/// # async fn demo() -> Result<(), pcp_client::ClientError> {
/// // No server configured: the default gateway is the PCP server.
/// let client = Client::new(ClientConfig::default()).await?;
/// let mut mapping = client.map(MapRequest::new(Protocol::UDP, 5000, 3600)).await?;
/// println!("reachable at {} (nonce {})", mapping.external(), mapping.nonce());
/// // Renewed in the background; watch for changes until done, then delete.
/// if let Some(event) = mapping.next_event().await {
///     println!("{event:?}");
/// }
/// mapping.delete().await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    paths: Arc<Mutex<Vec<Path>>>,
}

/// A granted mapping, renewed in the background for as long as this value lives.
///
/// Dropping it stops the renewals without telling the server (the mapping lapses when its
/// lifetime ends, and the IWF can still renew it later with the stored [`Mapping::nonce`]);
/// call [`Mapping::delete`] to remove it at once.
#[derive(Debug)]
pub struct Mapping {
    id: MappingId,
    info: GrantInfo,
    events: Subscription,
    commands: mpsc::UnboundedSender<Command>,
    done: bool,
}

impl Client {
    /// Opens one connected UDP socket per server address and starts the driver task. Must be
    /// called inside a tokio runtime.
    pub async fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let servers = if config.servers.is_empty() {
            discover_gateways()
        } else {
            config.servers.clone()
        };
        if servers.is_empty() {
            return Err(ClientError::NoServer);
        }
        let mut sockets = Vec::new();
        let mut paths = Vec::new();
        for remote in servers {
            let socket = connected_socket(remote)?;
            let local = socket.local_addr()?;
            paths.push(Path {
                remote,
                local: local.ip(),
            });
            sockets.push(Arc::new(socket));
        }
        let mut engine_config = config.engine.clone();
        // The driver drains the engine after every input: keep every event (back-pressure
        // rule in the module docs).
        engine_config.max_queued_events = 0;
        let mut engine = Engine::new(engine_config);
        let server = engine
            .add_server(paths.clone())
            .ok_or(ClientError::NoServer)?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let mut listeners = Vec::new();
        if !config.no_announce_listener {
            let iface = config.announce_interface.as_deref();
            let local_v4 = paths.iter().find_map(|p| match p.local {
                IpAddr::V4(a) if p.remote.is_ipv4() => Some(a),
                _ => None,
            });
            if let Some(local) = local_v4 {
                match announce_socket_v4(iface, local) {
                    Ok(s) => listeners.push(s),
                    Err(e) => tracing::debug!("no IPv4 ANNOUNCE listener on 224.0.0.1:5350: {e}"),
                }
            }
            if paths.iter().any(|p| p.remote.is_ipv6()) {
                match announce_listener_v6(iface) {
                    Ok(s) => listeners.push(s),
                    Err(e) => tracing::debug!("no IPv6 ANNOUNCE listener on [ff02::1]:5350: {e}"),
                }
            }
        }
        let shared_paths = Arc::new(Mutex::new(paths));
        let driver = Driver {
            engine,
            server,
            sockets,
            paths: shared_paths.clone(),
            address_check: config.address_check,
            events: Vec::new(),
            updates: HashMap::new(),
            pending: HashMap::new(),
            subscribers: HashMap::new(),
            deletes: HashMap::new(),
            announces: Vec::new(),
        };
        tokio::spawn(driver.run(commands_rx, listeners));
        Ok(Client {
            commands,
            paths: shared_paths,
        })
    }

    /// The server's addresses with the local address used towards each (the current one,
    /// after a renumbering).
    pub fn paths(&self) -> Vec<Path> {
        self.paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every engine event from now on (granted, renewed, changed, restored, expired, failed,
    /// state loss …), none dropped; drop the stream to unsubscribe. An empty stream (`None`
    /// at once) means the driver has stopped.
    pub fn events(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Subscribe(tx));
        rx
    }

    /// The engine's counters.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(reply))
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// What the engine knows of one mapping (THIRD_PARTY, last external endpoint, lifetime
    /// left via [`MappingInfo::lifetime_left`], last result, phase).
    pub async fn mapping_info(&self, id: MappingId) -> Result<Option<MappingInfo>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Info {
                id: Some(id),
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(rx
            .await
            .map_err(|_| ClientError::Closed)?
            .pop()
            .map(|(_, m)| m))
    }

    /// Every mapping the engine holds, with its info.
    pub async fn mappings(&self) -> Result<Vec<(MappingId, MappingInfo)>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Info { id: None, reply })
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Creates a MAP and waits for the first answer: the granted mapping, or the server's
    /// error. Retransmits per RFC 6887 §8.1.1 meanwhile (forever by default: wrap the call in
    /// `tokio::time::timeout` to bound it). Dropping the future cancels the request; a
    /// mapping granted after that is deleted.
    pub async fn map(&self, request: MapRequest) -> Result<Mapping, ClientError> {
        self.create(Creation::Map(request)).await
    }

    /// Creates a PEER and waits for the first answer, like [`Client::map`].
    pub async fn peer(&self, request: PeerRequest) -> Result<Mapping, ClientError> {
        self.create(Creation::Peer(request)).await
    }

    async fn create(&self, request: Creation) -> Result<Mapping, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Create {
                request: Box::new(request),
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        let (id, info, events) = rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Mapping {
            id,
            info,
            events,
            commands: self.commands.clone(),
            done: false,
        })
    }

    /// Deletes a MAP known by its nonce (e.g. created by an earlier run) and waits for the
    /// server's confirmation (RFC 6887 §15.1 with erratum 3621).
    pub async fn delete(&self, request: MapRequest) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::DeleteRequest {
                request: Box::new(request),
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends ANNOUNCE (RFC 6887 §14.1) and waits for the server's epoch.
    pub async fn announce(&self) -> Result<Announcement, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Announce(reply))
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

impl Mapping {
    /// The engine's id for this mapping.
    pub fn id(&self) -> MappingId {
        self.id
    }
    /// The external address and port, as last granted or updated.
    pub fn external(&self) -> SocketAddr {
        self.info.external
    }
    /// The granted lifetime (seconds).
    pub fn lifetime(&self) -> u32 {
        self.info.lifetime
    }
    /// The server's epoch in the last answer.
    pub fn epoch(&self) -> u32 {
        self.info.epoch
    }
    /// The mapping nonce; store it to renew or delete after a restart.
    pub fn nonce(&self) -> Nonce {
        self.info.nonce
    }
    /// PCP, or NAT-PMP after a fallback.
    pub fn via(&self) -> Version {
        self.info.via
    }

    /// The next event about this mapping (renewed, changed, expired, failed …); `None` once
    /// the client stopped. Keeps [`Mapping::external`] up to date.
    pub async fn next_event(&mut self) -> Option<Event> {
        let event = self.events.recv().await?;
        match event {
            Event::Granted {
                external,
                lifetime,
                epoch,
                ..
            } => {
                self.info.external = external;
                self.info.lifetime = lifetime;
                self.info.epoch = epoch;
            }
            Event::Renewed { lifetime, .. } => self.info.lifetime = lifetime,
            Event::Changed {
                external, lifetime, ..
            }
            | Event::Updated {
                external, lifetime, ..
            } => {
                self.info.external = external;
                self.info.lifetime = lifetime;
            }
            Event::Restored {
                external,
                lifetime,
                epoch,
                ..
            } => {
                self.info.epoch = epoch;
                self.info.external = external;
                self.info.lifetime = lifetime;
            }
            _ => {}
        }
        Some(event)
    }

    /// Changes the live mapping (lifetime, DESCRIPTION, FILTER set, PREFER_FAILURE) with the
    /// same nonce and waits for the server's answer ([`Engine::update`]).
    pub async fn update(&mut self, update: MappingUpdate) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Update {
                id: self.id,
                update: Box::new(update),
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Deletes the mapping at the server (RFC 6887 §15.1) and waits for the confirmation.
    pub async fn delete(mut self) -> Result<(), ClientError> {
        self.done = true;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Delete { id: self.id, reply })
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Forget(self.id));
        }
    }
}

/// A datagram or socket error from one of the reader tasks.
enum Incoming {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Unreachable(SocketAddr),
}

struct Driver {
    engine: Engine,
    server: ServerId,
    sockets: Vec<Arc<UdpSocket>>,
    /// The paths as [`Client::paths`] shows them.
    paths: Arc<Mutex<Vec<Path>>>,
    address_check: Option<std::time::Duration>,
    events: Vec<mpsc::UnboundedSender<Event>>,
    updates: HashMap<MappingId, oneshot::Sender<Result<(), ClientError>>>,
    pending: HashMap<MappingId, CreateReply>,
    subscribers: HashMap<MappingId, mpsc::UnboundedSender<Event>>,
    deletes: HashMap<MappingId, oneshot::Sender<Result<(), ClientError>>>,
    announces: Vec<oneshot::Sender<Result<Announcement, ClientError>>>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        listeners: Vec<UdpSocket>,
    ) {
        let (in_tx, mut incoming) = mpsc::channel::<Incoming>(256);
        // Reader tasks end when `readers` is dropped (JoinSet aborts on drop): no task leaks.
        let mut readers = JoinSet::new();
        let mut socket_readers: Vec<_> = self
            .sockets
            .iter()
            .map(|socket| readers.spawn(read_loop(socket.clone(), in_tx.clone(), None)))
            .collect();
        for listener in listeners {
            let to = listener.local_addr().ok();
            readers.spawn(read_loop(Arc::new(listener), in_tx.clone(), to));
        }
        let mut address_check = self.address_check.filter(|d| !d.is_zero()).map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            self.flush().await;
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(item) = incoming.recv() => {
                    let now = Instant::now();
                    match item {
                        Incoming::Datagram { from, to, bytes } => {
                            self.engine.handle_datagram(now, from, to, &bytes)
                        }
                        Incoming::Unreachable(remote) => self.engine.handle_icmp_error(now, remote),
                    }
                }
                () = sleep => self.engine.handle_timeout(Instant::now()),
                _ = async {
                    match address_check.as_mut() {
                        Some(i) => i.tick().await,
                        None => std::future::pending().await,
                    }
                } => {
                    for path in self.renumbered() {
                        // The old socket's reader goes with it; the new one reads the new socket.
                        socket_readers[path].abort();
                        socket_readers[path] = readers.spawn(read_loop(
                            self.sockets[path].clone(),
                            in_tx.clone(),
                            None,
                        ));
                    }
                }
            }
        }
        readers.shutdown().await;
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Create { request, reply } => {
                let result = match *request {
                    Creation::Map(r) => self.engine.map(now, self.server, r),
                    Creation::Peer(r) => self.engine.peer(now, self.server, r),
                };
                match result {
                    Ok(id) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Delete { id, reply } => {
                self.subscribers.remove(&id);
                match self.engine.delete(now, id) {
                    Ok(()) => {
                        self.deletes.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::DeleteRequest { request, reply } => {
                match self.engine.delete_mapping(now, self.server, *request) {
                    Ok(id) => {
                        self.deletes.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Forget(id) => {
                self.subscribers.remove(&id);
                self.engine.forget(id);
            }
            Command::Announce(reply) => {
                if self.engine.announce(now, self.server).is_ok() {
                    self.announces.push(reply);
                }
            }
            Command::Update { id, update, reply } => match self.engine.update(now, id, *update) {
                Ok(()) => {
                    if let Some(old) = self.updates.insert(id, reply) {
                        let _ = old.send(Err(ClientError::Request(RequestError::Duplicate)));
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Subscribe(tx) => self.events.push(tx),
            Command::Stats(reply) => {
                let _ = reply.send(self.engine.stats());
            }
            Command::Info { id, reply } => {
                let ids: Vec<MappingId> = match id {
                    Some(id) => vec![id],
                    None => self.engine.mapping_ids().collect(),
                };
                let infos = ids
                    .into_iter()
                    .filter_map(|id| self.engine.mapping(id).map(|m| (id, m)))
                    .collect();
                let _ = reply.send(infos);
            }
        }
    }

    /// Sends what the engine queued and hands out its events.
    async fn flush(&mut self) {
        let mut buf = [0u8; crate::wire::MAX_MESSAGE_LEN];
        let now = Instant::now();
        while let Some(t) = self.engine.poll_transmit(now, &mut buf) {
            let Some(i) = self.path_index(t.destination) else {
                continue;
            };
            if let Err(e) = self.sockets[i].send(&buf[..t.len]).await {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    self.engine.handle_icmp_error(now, t.destination);
                } else {
                    tracing::debug!("send to {}: {e}", t.destination);
                }
            }
        }
        while let Some(event) = self.engine.poll_event() {
            self.events.retain(|tx| tx.send(event).is_ok());
            self.dispatch(event);
        }
        // A create whose future was dropped before any answer: stop asking for it.
        let abandoned: Vec<MappingId> = self
            .pending
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in abandoned {
            self.pending.remove(&id);
            self.engine.forget(id);
        }
        // Stop announcing once nobody waits for the answer.
        self.announces.retain(|a| !a.is_closed());
        if self.announces.is_empty() {
            self.engine.cancel_announce(self.server);
        }
    }

    /// Looks up the source address towards each server address; where it changed, opens a
    /// socket from the new address in place of the old one and tells the engine. The paths
    /// that changed.
    fn renumbered(&mut self) -> Vec<usize> {
        let Some(paths) = self.engine.server_paths(self.server).map(<[Path]>::to_vec) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            // Connecting a UDP socket is the route lookup (it sends nothing); the socket is
            // kept only when its source differs. No route (an interface down): keep the old
            // socket until one comes back.
            let socket = match connected_socket(path.remote) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("no socket towards {}: {e}", path.remote);
                    continue;
                }
            };
            let Ok(bound) = socket.local_addr() else {
                continue;
            };
            if bound.ip() == path.local {
                continue;
            }
            self.sockets[i] = Arc::new(socket);
            self.engine
                .local_address_changed(Instant::now(), self.server, i, bound.ip());
            if let Some(p) = self
                .paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(i)
            {
                p.local = bound.ip();
            }
            changed.push(i);
        }
        changed
    }

    fn path_index(&self, remote: SocketAddr) -> Option<usize> {
        self.engine
            .server_paths(self.server)?
            .iter()
            .position(|p| p.remote == remote)
    }

    fn dispatch(&mut self, event: Event) {
        let now = Instant::now();
        if let Event::Announced { result, epoch, .. } = event {
            for reply in self.announces.drain(..) {
                let _ = reply.send(Ok(Announcement { epoch, result }));
            }
            return;
        }
        let Some(id) = event.mapping() else {
            return;
        };
        if let Some(reply) = self.updates.remove(&id) {
            let outcome = match event {
                Event::Updated { .. } => Some(Ok(())),
                Event::GaveUp {
                    exchange: Exchange::Update,
                    ..
                } => Some(Err(ClientError::TimedOut)),
                Event::Failed { code, lifetime, .. } => {
                    Some(Err(ClientError::Server { code, lifetime }))
                }
                Event::Deleted { .. } | Event::TimedOut { .. } => Some(Err(ClientError::Closed)),
                _ => None,
            };
            match outcome {
                Some(o) => {
                    let _ = reply.send(o);
                }
                None => {
                    self.updates.insert(id, reply);
                }
            }
        }
        if let Some(reply) = self.pending.remove(&id) {
            let outcome = match event {
                Event::Granted {
                    external,
                    lifetime,
                    epoch,
                    via,
                    ..
                } => {
                    let nonce = self.engine.mapping(id).map(|m| m.nonce).unwrap_or_default();
                    let (tx, rx) = mpsc::unbounded_channel();
                    let info = GrantInfo {
                        external,
                        lifetime,
                        epoch,
                        nonce,
                        via,
                    };
                    if reply.send(Ok((id, info, rx))).is_ok() {
                        self.subscribers.insert(id, tx);
                    } else {
                        // The caller gave up before the grant: do not leave it behind.
                        let _ = self.engine.delete(now, id);
                    }
                    return;
                }
                Event::Failed { code, lifetime, .. } => {
                    self.engine.forget(id);
                    Err(ClientError::Server { code, lifetime })
                }
                Event::TimedOut { .. } | Event::GaveUp { .. } => Err(ClientError::TimedOut),
                Event::PreferFailureIgnored { offered, .. } => {
                    Err(ClientError::PreferFailureIgnored { offered })
                }
                _ => {
                    self.pending.insert(id, reply);
                    return;
                }
            };
            let _ = reply.send(outcome);
            return;
        }
        if let Some(reply) = self.deletes.remove(&id) {
            let outcome = match event {
                Event::Deleted { .. } => Ok(()),
                Event::Failed { code, lifetime, .. } => Err(ClientError::Server { code, lifetime }),
                Event::TimedOut { .. } => Err(ClientError::TimedOut),
                _ => {
                    self.deletes.insert(id, reply);
                    return;
                }
            };
            let _ = reply.send(outcome);
            return;
        }
        if let Some(tx) = self.subscribers.get(&id) {
            if tx.send(event).is_err() {
                self.subscribers.remove(&id);
            }
        }
    }
}

async fn read_loop(socket: Arc<UdpSocket>, tx: mpsc::Sender<Incoming>, to: Option<SocketAddr>) {
    let mut buf = vec![0u8; 2048];
    let local = to.or_else(|| socket.local_addr().ok());
    let peer = socket.peer_addr().ok();
    loop {
        let item = match socket.recv_from(&mut buf).await {
            Ok((n, from)) => Incoming::Datagram {
                from,
                to: local.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                bytes: buf[..n].to_vec(),
            },
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match peer {
                Some(p) => Incoming::Unreachable(p),
                None => continue,
            },
            Err(e) => {
                tracing::debug!("recv: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// A UDP socket on a random local port (RFC 6056; RFC 6887 §8.1), connected to the server.
fn connected_socket(remote: SocketAddr) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(remote);
    let socket = Socket::new(domain, Type::DGRAM, Some(SockProtocol::UDP))?;
    let any: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&SockAddr::from(any))?;
    socket.connect(&SockAddr::from(remote))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Listens for ANNOUNCE on 224.0.0.1:5350 (RFC 6887 §14.1.3; RFC 6886 advises binding the
/// group address rather than 0.0.0.0), shared with other clients (SO_REUSEADDR/PORT), joined
/// only on the interface that faces the server: `iface` when given (and bound to it), else
/// the interface of `local`. IP_MULTICAST_ALL is off, so memberships other sockets hold on
/// other interfaces (a LAN) deliver nothing here.
///
/// Also usable by a driver of its own (e.g. an IWF that runs the [`Engine`] itself): feed
/// what it receives to [`Engine::handle_datagram`] with `to = 224.0.0.1:5350`.
pub fn announce_socket_v4(iface: Option<&str>, local: Ipv4Addr) -> io::Result<UdpSocket> {
    let group = crate::natpmp::ANNOUNCE_ADDRESS;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProtocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_multicast_all_v4(false)?;
    socket.bind(&SockAddr::from(SocketAddr::from((group, CLIENT_PORT))))?;
    match iface {
        Some(name) => {
            socket.bind_device(Some(name.as_bytes()))?;
            let index = interface_index(name)?;
            socket.join_multicast_v4_n(&group, &socket2::InterfaceIndexOrAddress::Index(index))?;
        }
        None => socket.join_multicast_v4(&group, &local)?,
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Listens for ANNOUNCE on [ff02::1]:5350 (RFC 6887 §14.1.3), on `iface` when given.
fn announce_listener_v6(iface: Option<&str>) -> io::Result<UdpSocket> {
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(SockProtocol::UDP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_multicast_all_v6(false)?;
    socket.bind(&SockAddr::from(SocketAddr::from((
        Ipv6Addr::UNSPECIFIED,
        CLIENT_PORT,
    ))))?;
    let index = match iface {
        Some(name) => {
            socket.bind_device(Some(name.as_bytes()))?;
            interface_index(name)?
        }
        None => 0,
    };
    socket.join_multicast_v6(&group, index)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}
