//! Node-to-node connections of the metadata Raft: one outgoing TCP connection per peer
//! (each direction has its own), frames of `u32 length | u8 kind | body`, bounded everywhere.
//!
//! Raft tolerates lost messages, so a full queue drops (and reports the peer unreachable to
//! raft-rs, which then probes instead of streaming); a broken connection drops what was
//! queued and reconnects with back-off. An incoming connection must first say who it is
//! (`HELLO`: its node id and the fingerprint of its peer list); a node started with another
//! list is refused and logged.
//!
//! A node that is not in the peer list is a broker-only node (no vote in the metadata
//! quorum): its connections carry requests and answers instead of Raft messages, one at a
//! time: `OBSERVE` (the metadata committed after an index, long-polled) answered by
//! `STATE`, and `PROPOSE` (a metadata command) answered by `OUTCOME`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use raft::eraftpb::Message;

use super::codec::{self, Reader, Writer};
use super::state::NodeId;
use super::Peer;
use crate::sync::Event;

/// Largest frame a node accepts (a snapshot of the metadata, or a batch of entries, fits).
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;
/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Bytes queued for one peer before new messages are dropped.
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
/// A peer connection that carries nothing for this long is closed (heartbeats flow every
/// few hundred milliseconds while the peer is alive).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting, the hello and each frame write may take.
pub const PEER_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Incoming peer connections held at once (a peer's new connection replaces its old one).
pub const PEER_CONNECTIONS_MAX: usize = 2 * super::state::NODES_MAX;

const HELLO: u8 = 1;
const RAFT: u8 = 2;
const OBSERVE: u8 = 3;
const STATE: u8 = 4;
const PROPOSE: u8 = 5;
const OUTCOME: u8 = 6;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Runs `fut`, or gives up after `limit`.
async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// One frame's bytes.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// A decoded frame.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// Who is calling: node id, peer-list fingerprint.
    Hello(NodeId, u64),
    /// A Raft message.
    Raft(Message),
    /// A broker-only node asks for the metadata committed after index `known` (answered
    /// at once when there is some, else after a short wait).
    Observe {
        /// The index of the metadata it holds.
        known: u64,
    },
    /// A voter's answer to [`Frame::Observe`].
    State {
        /// The voter's applied index.
        applied: u64,
        /// The metadata leader it knows (0: none).
        leader: NodeId,
        /// Its metadata (a snapshot's data) when newer than asked.
        state: Option<Vec<u8>>,
    },
    /// A broker-only node proposes a metadata command (its encoding).
    Propose(Vec<u8>),
    /// A voter's answer to [`Frame::Propose`]: the encoded outcome.
    Outcome(Vec<u8>),
}

impl Frame {
    /// The frame's bytes, length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32);
        let kind = match self {
            Frame::Hello(node, fingerprint) => {
                w.u64(*node);
                w.u64(*fingerprint);
                HELLO
            }
            Frame::Raft(m) => return frame(RAFT, &codec::encode_message(m)),
            Frame::Observe { known } => {
                w.u64(*known);
                OBSERVE
            }
            Frame::State {
                applied,
                leader,
                state,
            } => {
                w.u64(*applied);
                w.u64(*leader);
                match state {
                    None => w.u8(0),
                    Some(bytes) => {
                        w.u8(1);
                        w.bytes(bytes);
                    }
                }
                STATE
            }
            Frame::Propose(command) => {
                w.bytes(command);
                PROPOSE
            }
            Frame::Outcome(outcome) => {
                w.bytes(outcome);
                OUTCOME
            }
        };
        frame(kind, &w.out)
    }
}

/// What a voter does for broker-only nodes (the controller).
pub trait ObserverService {
    /// Answers [`Frame::Observe`] from `node`.
    fn observe(
        &self,
        node: NodeId,
        known: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Frame>>>;
    /// Answers [`Frame::Propose`] from `node`.
    fn propose(
        &self,
        node: NodeId,
        command: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Frame>>>;
}

/// Decodes a frame's kind and body (after its length).
///
/// # Errors
/// [`codec::DecodeError`] for anything malformed.
pub fn decode_frame(bytes: &[u8]) -> codec::Decoded<Frame> {
    let mut r = Reader::new(bytes, "peer frame");
    match r.u8()? {
        HELLO => {
            let node = r.u64()?;
            let fingerprint = r.u64()?;
            r.finish()?;
            Ok(Frame::Hello(node, fingerprint))
        }
        RAFT => {
            let m = codec::get_message(&mut r)?;
            r.finish()?;
            Ok(Frame::Raft(m))
        }
        OBSERVE => {
            let known = r.u64()?;
            r.finish()?;
            Ok(Frame::Observe { known })
        }
        STATE => {
            let applied = r.u64()?;
            let leader = r.u64()?;
            let state = if r.bool()? {
                Some(r.bytes()?.to_vec())
            } else {
                None
            };
            r.finish()?;
            Ok(Frame::State {
                applied,
                leader,
                state,
            })
        }
        PROPOSE => {
            let command = r.bytes()?.to_vec();
            r.finish()?;
            Ok(Frame::Propose(command))
        }
        OUTCOME => {
            let outcome = r.bytes()?.to_vec();
            r.finish()?;
            Ok(Frame::Outcome(outcome))
        }
        _ => r.fail("unknown frame kind"),
    }
}

/// Reads one frame's bytes (kind and body), refusing an announced length over the bound
/// before reading it.
async fn read_frame(stream: &mut glommio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > PEER_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer frame of {len} bytes (at most {PEER_FRAME_BYTES_MAX})"),
        ));
    }
    // Grows as bytes arrive, never to the announced size up front.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    let mut taken = (&mut *stream).take(len as u64);
    taken.read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(body)
}

/// Messages queued for one peer.
#[derive(Default)]
struct Link {
    queue: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<usize>,
    wake: Event,
}

/// The sending side: a queue and a connection task per peer.
pub struct Transport {
    links: HashMap<NodeId, Rc<Link>>,
    /// Peers whose messages were dropped since the last call to
    /// [`take_unreachable`](Self::take_unreachable).
    unreachable: RefCell<Vec<NodeId>>,
}

impl Transport {
    /// Starts a connection task to every peer but `me`.
    pub fn start(me: NodeId, peers: &[Peer], fingerprint: u64, stopping: Rc<Event>) -> Rc<Self> {
        let mut links = HashMap::new();
        for peer in peers.iter().filter(|p| p.id != me) {
            let link = Rc::new(Link::default());
            links.insert(peer.id, Rc::clone(&link));
            let (id, addr) = (peer.id, peer.addr);
            let stopping = Rc::clone(&stopping);
            glommio::spawn_local(async move {
                futures_lite::future::or(send_loop(me, id, addr, fingerprint, link), async {
                    stopping.listen().await;
                })
                .await;
            })
            .detach();
        }
        Rc::new(Transport {
            links,
            unreachable: RefCell::new(Vec::new()),
        })
    }

    /// Queues a message for its recipient; a full queue drops it (the peer is reported
    /// unreachable).
    pub fn send(&self, message: &Message) {
        let Some(link) = self.links.get(&message.to) else {
            return;
        };
        let bytes = frame(RAFT, &codec::encode_message(message));
        let mut queue = link.queue.borrow_mut();
        if queue.len() >= PEER_QUEUE_MESSAGES_MAX
            || link.bytes.get() + bytes.len() > PEER_QUEUE_BYTES_MAX
        {
            drop(queue);
            self.unreachable.borrow_mut().push(message.to);
            return;
        }
        link.bytes.set(link.bytes.get() + bytes.len());
        queue.push_back(bytes);
        drop(queue);
        link.wake.notify();
    }

    /// Peers that dropped messages since the last call.
    pub fn take_unreachable(&self) -> Vec<NodeId> {
        let mut ids = std::mem::take(&mut *self.unreachable.borrow_mut());
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

async fn send_loop(me: NodeId, peer: NodeId, addr: SocketAddr, fingerprint: u64, link: Rc<Link>) {
    let mut backoff = RECONNECT_MIN;
    let mut logged_down = false;
    loop {
        let connected = within(PEER_IO_TIMEOUT, glommio::net::TcpStream::connect(addr)).await;
        let mut stream = match connected {
            Some(Ok(stream)) => stream,
            other => {
                if !logged_down {
                    let error = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "connect timed out".into(),
                    };
                    tracing::warn!(peer, %addr, error, "cannot reach peer node; retrying");
                    logged_down = true;
                }
                clear(&link);
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut hello = Writer::with_capacity(16);
        hello.u64(me);
        hello.u64(fingerprint);
        if !matches!(
            within(PEER_IO_TIMEOUT, stream.write_all(&frame(HELLO, &hello.out))).await,
            Some(Ok(()))
        ) {
            glommio::timer::sleep(backoff).await;
            continue;
        }
        tracing::info!(peer, %addr, "connected to peer node");
        logged_down = false;
        backoff = RECONNECT_MIN;
        loop {
            let next = link.queue.borrow_mut().pop_front();
            let Some(bytes) = next else {
                // Wake at least every idle period to keep the connection used.
                let _ = within(PEER_IDLE_TIMEOUT / 3, link.wake.listen()).await;
                continue;
            };
            link.bytes.set(link.bytes.get().saturating_sub(bytes.len()));
            let mut batch = bytes;
            // Coalesce what is queued into one write.
            while batch.len() < (1 << 20) {
                let more = link.queue.borrow_mut().pop_front();
                let Some(more) = more else { break };
                link.bytes.set(link.bytes.get().saturating_sub(more.len()));
                batch.extend_from_slice(&more);
            }
            match within(PEER_IO_TIMEOUT, stream.write_all(&batch)).await {
                Some(Ok(())) => {}
                other => {
                    let error = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "write timed out".into(),
                    };
                    tracing::warn!(peer, %addr, error, "peer connection lost; reconnecting");
                    break;
                }
            }
        }
        clear(&link);
    }
}

fn clear(link: &Link) {
    link.queue.borrow_mut().clear();
    link.bytes.set(0);
}

/// Accepts peers' connections on `listener` and hands each Raft message to `deliver`.
pub fn serve(
    listener: glommio::net::TcpListener,
    peers: Rc<Vec<Peer>>,
    fingerprint: u64,
    deliver: Rc<dyn Fn(Message)>,
    observers: Rc<dyn ObserverService>,
    stopping: Rc<Event>,
) {
    glommio::spawn_local(async move {
        let open = Rc::new(Cell::new(0usize));
        let accepting = async {
            loop {
                let Ok(stream) = listener.accept().await else {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if open.get() >= PEER_CONNECTIONS_MAX {
                    tracing::warn!("too many peer connections: refusing one");
                    continue;
                }
                open.set(open.get() + 1);
                let (peers, deliver, open) =
                    (Rc::clone(&peers), Rc::clone(&deliver), Rc::clone(&open));
                let observers = Rc::clone(&observers);
                glommio::spawn_local(async move {
                    receive(stream, &peers, fingerprint, &*deliver, &*observers).await;
                    open.set(open.get() - 1);
                })
                .detach();
            }
        };
        futures_lite::future::or(accepting, async {
            stopping.listen().await;
        })
        .await;
    })
    .detach();
}

async fn receive(
    mut stream: glommio::net::TcpStream,
    peers: &[Peer],
    fingerprint: u64,
    deliver: &dyn Fn(Message),
    observers: &dyn ObserverService,
) {
    let from = stream.peer_addr().ok();
    let hello = within(PEER_IO_TIMEOUT, read_frame(&mut stream)).await;
    let node = match hello.map(|r| r.map(|b| decode_frame(&b))) {
        Some(Ok(Ok(Frame::Hello(node, theirs)))) => {
            if node == 0 || node > super::state::NODE_ID_MAX {
                tracing::warn!(
                    ?from,
                    node,
                    "a node id out of range tried to connect: refused"
                );
                return;
            }
            if theirs != fingerprint {
                tracing::error!(?from, node,
                    "a peer was started with another peer list: refused (every node needs the same --peers)");
                return;
            }
            node
        }
        _ => {
            tracing::warn!(?from, "a peer connection did not say hello: closed");
            return;
        }
    };
    if !peers.iter().any(|p| p.id == node) {
        serve_observer(stream, node, observers).await;
        return;
    }
    loop {
        match within(PEER_IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Some(Ok(bytes)) => match decode_frame(&bytes) {
                Ok(Frame::Raft(m)) if m.from == node => deliver(m),
                Ok(_) => {
                    tracing::warn!(node, "unexpected frame from a peer: connection closed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "malformed frame from a peer: connection closed");
                    return;
                }
            },
            Some(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::warn!(node, error = %e, "peer connection failed");
                }
                return;
            }
            None => return,
        }
    }
}

/// A broker-only node's connection: its requests, one at a time, each answered.
async fn serve_observer(
    mut stream: glommio::net::TcpStream,
    node: NodeId,
    observers: &dyn ObserverService,
) {
    loop {
        let bytes = match within(PEER_IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Some(Ok(bytes)) => bytes,
            Some(Err(_)) | None => return,
        };
        let answer = match decode_frame(&bytes) {
            Ok(Frame::Observe { known }) => observers.observe(node, known).await,
            Ok(Frame::Propose(command)) => observers.propose(node, command).await,
            Ok(_) => {
                tracing::warn!(node, "unexpected frame from a broker-only node: closed");
                return;
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "malformed frame from a broker-only node: closed");
                return;
            }
        };
        if !matches!(
            within(PEER_IO_TIMEOUT, stream.write_all(&answer.encode())).await,
            Some(Ok(()))
        ) {
            return;
        }
    }
}

/// A broker-only node's connection to a voter.
pub struct Session {
    stream: glommio::net::TcpStream,
    /// The voter.
    pub peer: NodeId,
}

impl Session {
    /// Connects to voter `peer` and says hello.
    ///
    /// # Errors
    /// The connection's, or a timeout.
    pub async fn open(me: NodeId, peer: &Peer, fingerprint: u64) -> std::io::Result<Session> {
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        let mut stream = within(PEER_IO_TIMEOUT, glommio::net::TcpStream::connect(peer.addr))
            .await
            .ok_or_else(timed_out)??;
        let _ = stream.set_nodelay(true);
        within(
            PEER_IO_TIMEOUT,
            stream.write_all(&Frame::Hello(me, fingerprint).encode()),
        )
        .await
        .ok_or_else(timed_out)??;
        Ok(Session {
            stream,
            peer: peer.id,
        })
    }

    /// Sends a request and reads the answer, within `limit`.
    ///
    /// # Errors
    /// The connection's, a timeout, or a malformed answer.
    pub async fn call(&mut self, request: &Frame, limit: Duration) -> std::io::Result<Frame> {
        let stream = &mut self.stream;
        let exchange = async {
            stream.write_all(&request.encode()).await?;
            let bytes = read_frame(stream).await?;
            decode_frame(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
        };
        within(limit, exchange)
            .await
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_junk_is_refused() {
        let mut m = Message::default();
        m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        m.to = 2;
        m.from = 1;
        let bytes = frame(RAFT, &codec::encode_message(&m));
        assert_eq!(decode_frame(&bytes[4..]), Ok(Frame::Raft(m)));
        let mut hello = Writer::default();
        hello.u64(3);
        hello.u64(99);
        assert_eq!(
            decode_frame(&frame(HELLO, &hello.out)[4..]),
            Ok(Frame::Hello(3, 99))
        );
        for f in [
            Frame::Observe { known: 7 },
            Frame::State {
                applied: 9,
                leader: 2,
                state: Some(vec![1, 2, 3]),
            },
            Frame::State {
                applied: 9,
                leader: 0,
                state: None,
            },
            Frame::Propose(vec![4, 5]),
            Frame::Outcome(vec![6]),
        ] {
            let bytes = f.encode();
            assert_eq!(decode_frame(&bytes[4..]).as_ref(), Ok(&f));
            for cut in 5..bytes.len() {
                assert!(decode_frame(&bytes[4..cut]).is_err(), "{f:?} cut at {cut}");
            }
        }
        assert!(decode_frame(&[9]).is_err());
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[HELLO, 1, 2]).is_err());
    }
}
