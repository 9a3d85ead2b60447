//! Node-to-node connections of the metadata Raft: one outgoing TCP connection per peer
//! (each direction has its own), frames of `u32 length | u8 kind | body`, bounded everywhere.
//!
//! Raft tolerates lost messages, so a full queue drops (and reports the peer unreachable to
//! raft-rs, which then probes instead of streaming); a broken connection drops what was
//! queued and reconnects with back-off. An incoming connection must first say who it is
//! (`HELLO`: its node id and the fingerprint of its peer list); a node not in the peer list,
//! or one started with another list, is refused and logged.

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
                glommio::spawn_local(async move {
                    receive(stream, &peers, fingerprint, &*deliver).await;
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
) {
    let from = stream.peer_addr().ok();
    let hello = within(PEER_IO_TIMEOUT, read_frame(&mut stream)).await;
    let node = match hello.map(|r| r.map(|b| decode_frame(&b))) {
        Some(Ok(Ok(Frame::Hello(node, theirs)))) => {
            if !peers.iter().any(|p| p.id == node) {
                tracing::error!(
                    ?from,
                    node,
                    "a node not in the peer list tried to connect: refused"
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
        assert!(decode_frame(&[9]).is_err());
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[HELLO, 1, 2]).is_err());
    }
}
