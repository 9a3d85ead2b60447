//! The listeners in front of a shard: binding and accepting, the native and Kafka
//! protocols, and the connection loop they share ([`pipeline`]).
//!
//! Each protocol talks to its shard only through the shard's door (`crate::shard::Shard`)
//! and maps [`ShardError`](crate::shard::ShardError)s to its own codes here, at its
//! boundary. Connection state (counts, limits, endpoints) is the listeners' own.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::TcpListener;

use crate::shard::Shard;

pub mod kafka;
pub mod metrics_http;
pub mod native;
mod pinned;
mod pipeline;

pub use kafka::KafkaLimits;
pub use native::ServerLimits;

/// How long a connection may keep the broker waiting (both protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// A connection with no request in progress and none answered for this long is closed
    /// (Kafka's `connections.max.idle.ms`, 10 minutes).
    pub idle: std::time::Duration,
    /// A request must arrive whole within this long of its first bytes, plus one second per
    /// [`ARRIVAL_ALLOWANCE_BYTES_PER_SEC`] of its size; else the connection is closed (a
    /// peer trickling bytes keeps a buffer reserved).
    pub request_arrival: std::time::Duration,
    /// A response must be taken by the peer whole within this long of its first write, plus
    /// one second per [`ARRIVAL_ALLOWANCE_BYTES_PER_SEC`] of its size; else the connection
    /// is closed (a peer reading a byte now and then keeps the fetched buffers pinned).
    pub response_write: std::time::Duration,
}

/// A request's arrival deadline grows by one second per this many bytes of its size, so a
/// large request on a slow link is not cut.
pub const ARRIVAL_ALLOWANCE_BYTES_PER_SEC: usize = 1 << 20;

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        ConnectionTimeouts {
            idle: std::time::Duration::from_secs(600),
            request_arrival: std::time::Duration::from_secs(30),
            response_write: std::time::Duration::from_secs(60),
        }
    }
}

impl ConnectionTimeouts {
    /// The arrival deadline of a request of `bytes`, from its first bytes.
    pub fn arrival(&self, bytes: usize) -> std::time::Duration {
        let extra = (bytes / ARRIVAL_ALLOWANCE_BYTES_PER_SEC) as u64;
        self.request_arrival + std::time::Duration::from_secs(extra)
    }

    /// When a response of `bytes`, starting now, must have been taken whole.
    pub fn response_until(&self, bytes: usize) -> std::time::Instant {
        let extra = (bytes / ARRIVAL_ALLOWANCE_BYTES_PER_SEC) as u64;
        std::time::Instant::now() + self.response_write + std::time::Duration::from_secs(extra)
    }
}

/// Writes all of `buf`, failing with `TimedOut` if the peer has not taken it by `until`.
pub(crate) async fn write_by(
    stream: &mut glommio::net::TcpStream,
    buf: &[u8],
    until: std::time::Instant,
) -> std::io::Result<()> {
    use futures_lite::AsyncWriteExt;
    let left = until.saturating_duration_since(std::time::Instant::now());
    futures_lite::future::or(stream.write_all(buf), async move {
        glommio::timer::sleep(left).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer did not take the response in time",
        ))
    })
    .await
}

/// What the listeners need besides the shard.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Host advertised in native metadata for shard endpoints.
    pub advertised_host: String,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Bounds of the native listener.
    pub limits: ServerLimits,
    /// Host advertised to Kafka clients; `None`: the address each client reached us at.
    pub kafka_advertised_host: Option<String>,
    /// Bounds of the Kafka listener.
    pub kafka_limits: KafkaLimits,
    /// Idle, request-arrival and response-write deadlines of every connection.
    pub timeouts: ConnectionTimeouts,
    /// Connections one client address may hold on this shard, both protocols together.
    pub max_connections_per_ip: usize,
}

/// Every shard's endpoints, by shard, known once all have bound.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Each shard's own native address.
    pub native: Vec<SocketAddr>,
    /// Each shard's own Kafka address (node id = index); empty when Kafka is off.
    pub kafka: Vec<SocketAddr>,
}

/// Addresses one shard listens on.
#[derive(Debug, Clone, Copy)]
pub struct ShardAddrs {
    /// The shared native address (SO_REUSEPORT).
    pub shared: SocketAddr,
    /// This shard's own native address.
    pub own: SocketAddr,
    /// The shared Kafka bootstrap address.
    pub kafka_shared: Option<SocketAddr>,
    /// This shard's own Kafka address.
    pub kafka_own: Option<SocketAddr>,
}

/// Connections a listening socket queues before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket on `addr`, shared by every shard (`SO_REUSEPORT`: the kernel spreads
/// connections over them) and bindable while connections of a previous process on the port
/// are in TIME_WAIT (`SO_REUSEADDR`), so a supervisor's immediate restart after `kill -9`
/// works. (glommio's own `bind` sets only the first.)
///
/// With `receive_buffer`, the socket's receive buffer is fixed at that size (Kafka's
/// `socket.receive.buffer.bytes`) before `listen`, so that accepted connections inherit it
/// and their window scale is chosen for it; otherwise the kernel autotunes each connection's
/// buffer up to `tcp_rmem`'s maximum.
fn listen(addr: SocketAddr, receive_buffer: Option<usize>) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = listening_socket(addr, receive_buffer)?;
    // SAFETY: `into_raw_fd` hands over the only handle of a bound, listening TCP socket,
    // which is what glommio's `from_raw_fd` requires; nothing else closes that fd.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// The socket [`listen`] hands to glommio.
fn listening_socket(
    addr: SocketAddr,
    receive_buffer: Option<usize>,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// One shard's bound listening sockets, not yet accepting.
pub struct Bound {
    shared: TcpListener,
    own: TcpListener,
    kafka: Option<(TcpListener, TcpListener)>,
    /// The same Kafka ports on a second address (`::1` beside `127.0.0.1`).
    kafka_twin: Option<(TcpListener, TcpListener)>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").finish_non_exhaustive()
    }
}

impl Bound {
    /// Binds the shared native address, an own native port, and (when `kafka` is given) the
    /// shared Kafka bootstrap address and this shard's own Kafka address.
    ///
    /// # Errors
    /// Which bind failed and why.
    /// With `twin`, the Kafka ports (as bound) are bound on that address too, best effort: a
    /// failure is logged and the broker serves on the first address alone.
    /// Every socket gets `receive_buffer` (see `listen`).
    pub fn bind(
        native_addr: SocketAddr,
        kafka: Option<(SocketAddr, SocketAddr)>,
        twin: Option<std::net::IpAddr>,
        receive_buffer: Option<usize>,
    ) -> Result<Bound, String> {
        let listen = |addr| listen(addr, receive_buffer);
        let shared = listen(native_addr).map_err(|e| format!("bind {native_addr}: {e}"))?;
        let own_addr = SocketAddr::new(native_addr.ip(), 0);
        let own = listen(own_addr).map_err(|e| format!("bind {own_addr}: {e}"))?;
        let kafka = match kafka {
            None => None,
            Some((shared_addr, own_addr)) => {
                let shared = listen(shared_addr)
                    .map_err(|e| format!("bind Kafka address {shared_addr}: {e}"))?;
                let own = listen(own_addr)
                    .map_err(|e| format!("bind Kafka node address {own_addr}: {e}"))?;
                Some((shared, own))
            }
        };
        let kafka_twin = match (&kafka, twin) {
            (Some((shared, own)), Some(ip)) => {
                let at = |l: &TcpListener| l.local_addr().map(|a| SocketAddr::new(ip, a.port()));
                let both = at(shared).and_then(|shared_addr| {
                    let own_addr = at(own)?;
                    Ok((listen(shared_addr)?, listen(own_addr)?))
                });
                match both {
                    Ok(both) => Some(both),
                    Err(e) => {
                        tracing::warn!(address = %ip, error = %e,
                            "Kafka listener not bound on this address too; clients that resolve \
                             localhost to it will not connect");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(Bound {
            shared,
            own,
            kafka,
            kafka_twin,
        })
    }

    /// The addresses bound (ports resolved).
    ///
    /// # Errors
    /// When the kernel cannot tell a socket's address.
    pub fn addrs(&self) -> Result<ShardAddrs, String> {
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
        let (kafka_shared, kafka_own) = match &self.kafka {
            Some((shared, own)) => (Some(addr(shared)?), Some(addr(own)?)),
            None => (None, None),
        };
        Ok(ShardAddrs {
            shared: addr(&self.shared)?,
            own: addr(&self.own)?,
            kafka_shared,
            kafka_own,
        })
    }
}

/// The listeners' state on one shard.
pub(crate) struct Server {
    pub shard: Rc<Shard>,
    pub config: ListenerConfig,
    pub endpoints: Endpoints,
    /// Open native connections on this shard.
    pub native_connections: Cell<usize>,
    /// Open Kafka connections on this shard.
    pub kafka_connections: Cell<usize>,
    /// The read buffers that stored batches keep alive, bounded.
    pub pinned: RefCell<pinned::PinnedReads>,
    /// Memory for large request frames, shared by the shard's connections (bytes).
    pub request_memory: Rc<pipeline::RequestMemory>,
    /// Open connections by client address (both protocols); addresses with none are
    /// removed, so it holds at most one entry per open connection.
    pub per_ip: RefCell<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl Server {
    /// Tells the shard's metrics the open connection counts (after one opens or closes).
    pub(crate) fn publish_connections(&self) {
        self.shard
            .metrics
            .set_connections(self.kafka_connections.get(), self.native_connections.get());
    }
}

/// A connection's place in [`Server::per_ip`], given back when dropped.
struct IpSlot {
    server: Rc<Server>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    /// A slot for a connection from `ip`, or `None` when that address holds its cap.
    fn take(server: &Rc<Server>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut per_ip = server.per_ip.borrow_mut();
        let held = per_ip.entry(ip).or_insert(0);
        if *held >= server.config.max_connections_per_ip {
            return None;
        }
        *held += 1;
        Some(IpSlot {
            server: Rc::clone(server),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.server.per_ip.borrow_mut();
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// How often the server releases read buffers no stored batch keeps alive any more, so that
/// an idle shard does not hold them until the next produce.
const PINNED_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts accepting on `bound` until the shard stops; returns at once.
pub fn serve(shard: Rc<Shard>, config: ListenerConfig, endpoints: Endpoints, bound: Bound) {
    let server = Rc::new(Server {
        shard,
        config,
        endpoints,
        native_connections: Cell::new(0),
        kafka_connections: Cell::new(0),
        pinned: RefCell::default(),
        request_memory: Rc::new(pipeline::RequestMemory::new()),
        per_ip: RefCell::default(),
    });
    {
        let server = Rc::downgrade(&server);
        glommio::spawn_local(async move {
            let mut copied_before = 0;
            loop {
                glommio::timer::sleep(PINNED_SWEEP_INTERVAL).await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                if server.shard.is_stopped() {
                    return;
                }
                let mut pinned = server.pinned.borrow_mut();
                pinned.sweep();
                if pinned.copied_bytes > copied_before {
                    copied_before = pinned.copied_bytes;
                    tracing::info!(
                        held_bytes = pinned.held(),
                        shared_bytes = pinned.shared_bytes,
                        copied_bytes = pinned.copied_bytes,
                        "produced batches copied: the read buffers stored batches keep alive reached their bound"
                    );
                }
            }
        })
        .detach();
    }
    for listener in [bound.shared, bound.own] {
        let server = Rc::clone(&server);
        glommio::spawn_local(async move {
            accept_until_stopped(server, listener, "native", native::serve_connection).await;
        })
        .detach();
    }
    for (shared, own) in bound.kafka.into_iter().chain(bound.kafka_twin) {
        for listener in [shared, own] {
            let server = Rc::clone(&server);
            glommio::spawn_local(async move {
                accept_until_stopped(server, listener, "kafka", kafka::serve_connection).await;
            })
            .detach();
        }
    }
}

/// Accepts connections on `listener` until the shard stops, running `serve` for each in a
/// task of its own. A failed accept is logged and retried after a short pause.
async fn accept_until_stopped<F, Fut>(
    server: Rc<Server>,
    listener: TcpListener,
    protocol: &'static str,
    serve: F,
) where
    F: Fn(Rc<Server>, glommio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            server.shard.stopping().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = server.shard.id(), protocol, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if server.shard.is_stopped() {
            return;
        }
        let slot = match stream.peer_addr() {
            Ok(peer) => match IpSlot::take(&server, peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(shard = server.shard.id(), protocol, peer = %peer.ip(),
                        "connection refused: this address holds its connection cap");
                    continue;
                }
            },
            Err(_) => None,
        };
        let work = serve(Rc::clone(&server), stream);
        glommio::spawn_local(async move {
            work.await;
            drop(slot);
        })
        .detach();
    }
}

/// A fetch's long-poll deadline and byte bounds: the request's, capped by the listener's.
pub(crate) struct FetchBounds {
    pub deadline: std::time::Instant,
    pub max_bytes: usize,
    pub min_bytes: usize,
}

impl FetchBounds {
    /// From the request's `max_wait_ms`, `max_bytes` and `min_bytes` (negative reads as 0)
    /// and the listener's caps.
    pub fn new(
        max_wait_ms: i32,
        max_bytes: i32,
        min_bytes: i32,
        wait_cap_ms: u32,
        bytes_cap: usize,
    ) -> Self {
        let wait = max_wait_ms.clamp(0, i32::try_from(wait_cap_ms).unwrap_or(i32::MAX));
        FetchBounds {
            deadline: std::time::Instant::now() + std::time::Duration::from_millis(wait as u64),
            max_bytes: (max_bytes.max(0) as usize).min(bytes_cap),
            min_bytes: min_bytes.max(0) as usize,
        }
    }
}

/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// The receive buffer set on the listening socket is the one every accepted connection
    /// gets (so that what unread client bytes may take of kernel memory is bounded), and
    /// without one the kernel's default applies.
    #[test]
    fn accepted_connections_inherit_the_configured_receive_buffer() {
        let fixed = listening_socket("127.0.0.1:0".parse().expect("addr"), Some(128 << 10))
            .expect("listen");
        let auto = listening_socket("127.0.0.1:0".parse().expect("addr"), None).expect("listen");
        let accepted = |listener: &socket2::Socket| {
            let addr = listener
                .local_addr()
                .expect("addr")
                .as_socket()
                .expect("inet");
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let (conn, _) = listener.accept().expect("accept");
            conn.recv_buffer_size().expect("SO_RCVBUF")
        };
        let fixed_size = accepted(&fixed);
        // Linux doubles the value asked for (bookkeeping overhead) and reports that.
        assert!(
            (128 << 10..=256 << 10).contains(&fixed_size),
            "accepted connection's receive buffer: {fixed_size}"
        );
        let auto_size = accepted(&auto);
        assert_ne!(auto_size, fixed_size, "the kernel default differs here");
    }
}
