//! [`Connection`]: one TCP connection to one broker shard, with pipelined requests.
//!
//! ```text
//!  request() ──▶ slot (≤ IN_FLIGHT_MAX) ─▶ pending[correlation_id] = oneshot
//!            ──▶ write lock ─▶ prefix+header, body pieces (no concatenation) ─▶ socket
//!  reader task ◀── socket: frame ─▶ verify ─▶ pending.remove(correlation_id).send(frame)
//! ```
//!
//! Responses may arrive in any order; the correlation id routes each to its waiter. When the
//! socket breaks or the server sends an undecodable frame, the connection is closed and every
//! waiter gets the error; a closed connection is never reused.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::sync::{Semaphore, StaticPermit};
use tidelog_wire::native::{
    decode_frame, peek_frame_len, Body, BodyT, DecodedFrame, FrameEncoder, FrameLimits,
    HandshakeRequestT, MessageT, FRAME_LEN_FIELD, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use tidelog_wire::WireError;

use crate::error::{ClientError, Result};
use crate::limits::{
    CONNECT_TIMEOUT_DEFAULT, FRAME_BYTES_MAX, FRAME_HEADER_BYTES_MAX, IN_FLIGHT_MAX,
    READ_CHUNK_BYTES, REQUEST_TIMEOUT_DEFAULT,
};
use crate::socket::{connect_nodelay, read_more, write_pieces, SharedStream};
use crate::sync::{oneshot, Receiver, Sender};

/// Frame bounds applied to everything a server sends.
pub(crate) fn frame_limits() -> FrameLimits {
    FrameLimits {
        max_frame_bytes: FRAME_BYTES_MAX,
        max_header_bytes: FRAME_HEADER_BYTES_MAX,
        ..FrameLimits::default()
    }
}

/// The name of a message kind, for errors.
pub(crate) fn body_name(body: Body) -> &'static str {
    body.variant_name().unwrap_or("unknown message")
}

/// What the handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The protocol version both sides speak.
    pub version: u16,
    /// The shard that owns this connection.
    pub shard: u16,
    /// How many shards the broker runs.
    pub shard_count: u16,
}

/// A verified response frame. Owns the frame's bytes; batches in it can be sliced out as
/// `Bytes` without copying ([`Bytes::slice_ref`]).
#[derive(Clone)]
pub struct Response {
    frame: Bytes,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("frame_len", &self.frame.len())
            .finish()
    }
}

impl Response {
    /// The decoded frame.
    ///
    /// The reader task verified the frame when it arrived; this verifies the header again
    /// (the body's batches are not touched), which keeps the crate free of `unsafe`.
    ///
    /// # Errors
    /// [`ClientError::Wire`] only if the bytes changed, which they cannot; kept typed anyway.
    pub fn frame(&self) -> Result<DecodedFrame<'_>> {
        Ok(decode_frame(&self.frame, &frame_limits())?)
    }

    /// The whole frame's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.frame
    }

    /// An owned copy of the header (allocates; for cold paths and tests).
    ///
    /// # Errors
    /// As [`frame`](Self::frame).
    pub fn unpack(&self) -> Result<MessageT> {
        Ok(self.frame()?.unpack())
    }
}

/// Options of [`Connection::connect_with`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for each response (the handshake's included).
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

type Pending = HashMap<u32, Sender<Result<Response>>>;

/// State shared by the connection and its reader task.
#[derive(Default)]
struct Shared {
    pending: RefCell<Pending>,
    closed: RefCell<Option<ClientError>>,
}

impl Shared {
    /// Closes the connection: remembers why and fails every waiter with it.
    fn close(&self, why: ClientError) {
        {
            let mut closed = self.closed.borrow_mut();
            if closed.is_none() {
                *closed = Some(why.clone());
            }
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, tx) in pending {
            tx.send(Err(why.clone()));
        }
    }

    fn closed_error(&self) -> Option<ClientError> {
        self.closed.borrow().clone()
    }
}

struct Inner {
    addr: SocketAddr,
    stream: SharedStream,
    shared: Rc<Shared>,
    /// One frame is written at a time.
    write_lock: Semaphore,
    /// Requests awaiting a response.
    slots: Rc<Semaphore>,
    next_id: Cell<u32>,
    encoder: RefCell<FrameEncoder>,
    reader: glommio::task::JoinHandle<()>,
    handshake: Cell<HandshakeInfo>,
    request_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared
            .close(ClientError::closed("connection dropped by the client"));
        // The reader task owns the last other reference to the socket; cancelling it closes it.
        self.reader.cancel();
    }
}

/// One TCP connection to a broker shard. Cheap to clone (all clones share the connection).
///
/// Several requests may be in flight at once (at most [`IN_FLIGHT_MAX`]; more wait for a
/// slot). Dropping the last clone closes the socket and fails requests still waiting.
#[derive(Clone)]
pub struct Connection {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.addr)
            .field("handshake", &self.inner.handshake.get())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` and performs the handshake with default timeouts.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the TCP connection fails, [`ClientError::UnsupportedVersion`]
    /// if the server speaks no common version, or any request error of the handshake.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Result<Self> {
        Self::connect_with(addr, client_id, ConnectOptions::default()).await
    }

    /// Connects to `addr` and performs the handshake.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        options: ConnectOptions,
    ) -> Result<Self> {
        let stream = connect_nodelay(addr, options.connect_timeout)
            .await
            .map_err(|io| ClientError::Connect {
                addr,
                kind: io.kind(),
                message: io.to_string(),
            })?;
        let shared = Rc::new(Shared::default());
        let reader = glommio::spawn_local(read_loop(stream.clone(), Rc::clone(&shared))).detach();
        let conn = Connection {
            inner: Rc::new(Inner {
                addr,
                stream,
                shared,
                write_lock: Semaphore::new(1),
                slots: Rc::new(Semaphore::new(IN_FLIGHT_MAX as u64)),
                next_id: Cell::new(1),
                encoder: RefCell::new(FrameEncoder::new()),
                reader,
                handshake: Cell::new(HandshakeInfo {
                    version: 0,
                    shard: 0,
                    shard_count: 0,
                }),
                request_timeout: options.request_timeout,
            }),
        };
        conn.handshake(client_id).await?;
        Ok(conn)
    }

    async fn handshake(&self, client_id: &str) -> Result<()> {
        let mut hs = HandshakeRequestT::default();
        hs.min_version = PROTOCOL_VERSION_MIN;
        hs.max_version = PROTOCOL_VERSION_MAX;
        hs.client_id = Some(client_id.to_owned());
        let resp = self.call(BodyT::HandshakeRequest(Box::new(hs))).await?;
        let frame = resp.frame()?;
        let hs =
            frame
                .message
                .body_as_handshake_response()
                .ok_or(ClientError::UnexpectedResponse {
                    expected: "HandshakeResponse",
                    got: body_name(frame.body_type()),
                })?;
        if hs.error() == tidelog_wire::native::ErrorCode::UnsupportedVersion {
            return Err(ClientError::UnsupportedVersion {
                min: PROTOCOL_VERSION_MIN,
                max: PROTOCOL_VERSION_MAX,
            });
        }
        ClientError::check(hs.error(), "handshake", None)?;
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION_MAX).contains(&hs.version()) {
            return Err(ClientError::UnsupportedVersion {
                min: PROTOCOL_VERSION_MIN,
                max: PROTOCOL_VERSION_MAX,
            });
        }
        self.inner.handshake.set(HandshakeInfo {
            version: hs.version(),
            shard: hs.shard(),
            shard_count: hs.shard_count(),
        });
        Ok(())
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// What the handshake established (server shard, shard count, version).
    pub fn handshake_info(&self) -> HandshakeInfo {
        self.inner.handshake.get()
    }

    /// Whether the connection is closed (it never reopens; connect again).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.borrow().is_some()
    }

    /// Requests awaiting their response now.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.pending.borrow().len()
    }

    /// Closes the connection; requests in flight fail with [`ClientError::ConnectionClosed`].
    pub fn close(&self) {
        self.fail(ClientError::closed("closed by the client"));
    }

    fn fail(&self, why: ClientError) {
        self.inner.shared.close(why);
        self.inner.reader.cancel();
    }

    /// Sends a request built with the object API and waits for the response.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn call(&self, body: BodyT) -> Result<Response> {
        let mut msg = MessageT::default();
        msg.body = body;
        self.request(&msg).await
    }

    /// Writes a request built with the object API; the returned [`PendingResponse`] waits
    /// for its answer.
    ///
    /// # Errors
    /// As [`start_request`](Self::start_request).
    pub async fn start_call(&self, body: BodyT) -> Result<PendingResponse> {
        let mut msg = MessageT::default();
        msg.body = body;
        self.start_request(|cid, enc, out| encode_owned(&msg, cid, enc, out), &[])
            .await
    }

    /// Sends an owned message (its correlation id is replaced) and waits for the response.
    ///
    /// # Errors
    /// [`ClientError::ConnectionClosed`], [`ClientError::Timeout`], [`ClientError::Io`],
    /// [`ClientError::Protocol`] if the server answers with an `ErrorResponse`.
    pub async fn request(&self, msg: &MessageT) -> Result<Response> {
        self.request_with(|cid, enc, out| encode_owned(msg, cid, enc, out), &[])
            .await
    }

    /// Sends a frame whose header `encode` writes and whose body is `body` (pieces sent in
    /// order after the header, never concatenated), then waits for the response.
    ///
    /// `encode(correlation_id, encoder, out)` appends the prefix and header to `out` and
    /// returns the body length it announced, which must equal the total length of `body`.
    ///
    /// # Errors
    /// As [`request`](Self::request); [`ClientError::InvalidArgument`] if the lengths differ.
    pub async fn request_with<F>(&self, encode: F, body: &[Bytes]) -> Result<Response>
    where
        F: FnOnce(u32, &mut FrameEncoder, &mut BytesMut) -> Result<usize, WireError>,
    {
        self.start_request(encode, body).await?.wait().await
    }

    /// Writes a request like [`request_with`](Self::request_with) and returns once it is on
    /// the socket; the returned [`PendingResponse`] waits for the answer. Requests started one
    /// after the other are written in that order.
    ///
    /// # Errors
    /// As [`request_with`](Self::request_with), for the write.
    pub async fn start_request<F>(&self, encode: F, body: &[Bytes]) -> Result<PendingResponse>
    where
        F: FnOnce(u32, &mut FrameEncoder, &mut BytesMut) -> Result<usize, WireError>,
    {
        self.check_open()?;
        let slot = self
            .inner
            .slots
            .acquire_static_permit(1)
            .await
            .map_err(|_| ClientError::closed("connection closed"))?;
        self.check_open()?;
        let cid = self.next_correlation_id();
        let (tx, rx) = oneshot();
        self.inner.shared.pending.borrow_mut().insert(cid, tx);
        let guard = PendingGuard {
            shared: Rc::clone(&self.inner.shared),
            correlation_id: cid,
        };
        self.write_frame(cid, encode, body).await?;
        Ok(PendingResponse {
            rx,
            _guard: guard,
            _slot: slot,
            timeout: self.inner.request_timeout,
        })
    }

    /// Writes a request that the server does not answer (a produce with `acks` 0).
    ///
    /// # Errors
    /// As [`start_request`](Self::start_request).
    pub async fn send_only<F>(&self, encode: F, body: &[Bytes]) -> Result<()>
    where
        F: FnOnce(u32, &mut FrameEncoder, &mut BytesMut) -> Result<usize, WireError>,
    {
        self.check_open()?;
        let cid = self.next_correlation_id();
        self.write_frame(cid, encode, body).await
    }

    fn check_open(&self) -> Result<()> {
        match self.inner.shared.closed_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn next_correlation_id(&self) -> u32 {
        let cid = self.inner.next_id.get();
        // Ids wrap; with at most IN_FLIGHT_MAX outstanding, a wrapped id is long answered.
        self.inner.next_id.set(cid.wrapping_add(1));
        cid
    }

    async fn write_frame<F>(&self, cid: u32, encode: F, body: &[Bytes]) -> Result<()>
    where
        F: FnOnce(u32, &mut FrameEncoder, &mut BytesMut) -> Result<usize, WireError>,
    {
        let mut header = BytesMut::new();
        let body_len = encode(cid, &mut self.inner.encoder.borrow_mut(), &mut header)?;
        let pieces_len: usize = body.iter().map(Bytes::len).sum();
        if body_len != pieces_len {
            return Err(ClientError::InvalidArgument(format!(
                "frame announces a {body_len}-byte body, {pieces_len} bytes given"
            )));
        }
        let _lock = self
            .inner
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|_| ClientError::closed("connection closed"))?;
        self.check_open()?;
        // A frame cut short would desynchronise the stream: if this future is dropped before
        // the frame is out, the guard closes the connection.
        let mut torn = TornWriteGuard {
            conn: Some(self.clone()),
        };
        let mut stream = self.inner.stream.clone();
        let result = write_pieces(&mut stream, &header, body).await;
        torn.conn = None;
        if let Err(e) = result {
            let err = ClientError::io(&e);
            self.fail(err.clone());
            return Err(err);
        }
        Ok(())
    }
}

fn encode_owned(
    msg: &MessageT,
    cid: u32,
    enc: &mut FrameEncoder,
    out: &mut BytesMut,
) -> Result<usize, WireError> {
    // Packs the body and a root with our correlation id (not the one in `msg`).
    let root = {
        let fbb = enc.builder();
        let body = msg.body.pack(fbb);
        tidelog_wire::native::Message::create(
            fbb,
            &tidelog_wire::native::MessageArgs {
                correlation_id: cid,
                body_type: msg.body.body_type(),
                body,
            },
        )
    };
    enc.finish_frame(root, 0, out)?;
    Ok(0)
}

/// Closes the connection if a frame write is abandoned half way.
struct TornWriteGuard {
    conn: Option<Connection>,
}

impl Drop for TornWriteGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.fail(ClientError::closed(
                "a request was cancelled while being written",
            ));
        }
    }
}

/// Removes a request's entry from the pending map when its waiter goes away (answered,
/// timed out or dropped), so late answers are discarded and the map stays bounded.
struct PendingGuard {
    shared: Rc<Shared>,
    correlation_id: u32,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared
            .pending
            .borrow_mut()
            .remove(&self.correlation_id);
    }
}

/// A request that was written; [`wait`](Self::wait) for its response. Holds one of the
/// connection's [`IN_FLIGHT_MAX`] slots until dropped.
pub struct PendingResponse {
    rx: Receiver<Result<Response>>,
    _guard: PendingGuard,
    _slot: StaticPermit,
    timeout: Duration,
}

impl std::fmt::Debug for PendingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResponse")
            .field("correlation_id", &self._guard.correlation_id)
            .finish()
    }
}

impl PendingResponse {
    /// Waits for the response, at most the connection's request timeout.
    ///
    /// # Errors
    /// [`ClientError::Timeout`], [`ClientError::ConnectionClosed`], or
    /// [`ClientError::Protocol`] when the server answered with an `ErrorResponse`.
    pub async fn wait(self) -> Result<Response> {
        let timeout = self.timeout;
        let answer = futures_lite::future::or(async { Some(self.rx.await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        let resp = match answer {
            None => return Err(ClientError::Timeout(timeout)),
            Some(None) => return Err(ClientError::closed("connection closed")),
            Some(Some(r)) => r?,
        };
        let frame = resp.frame()?;
        if let Some(e) = frame.message.body_as_error_response() {
            return Err(ClientError::Protocol {
                code: e.error(),
                message: e.message().unwrap_or_default().to_owned(),
            });
        }
        Ok(resp)
    }
}

async fn read_loop(stream: SharedStream, shared: Rc<Shared>) {
    let why = match read_frames(stream, &shared).await {
        Ok(()) => ClientError::closed("the server closed the connection"),
        Err(e) => e,
    };
    shared.close(why);
}

async fn read_frames(mut stream: SharedStream, shared: &Shared) -> Result<()> {
    let limits = frame_limits();
    // `buf[..filled]` holds received bytes; `buf[filled..]` is zeroed room to read into.
    let mut buf = BytesMut::new();
    let mut filled = 0usize;
    loop {
        let need = loop {
            match peek_frame_len(buf.get(..filled).unwrap_or_default(), &limits)? {
                Some(len) if len <= filled => {
                    let frame = buf.split_to(len).freeze();
                    filled -= len;
                    let decoded = decode_frame(&frame, &limits)?;
                    let cid = decoded.correlation_id();
                    let waiter = shared.pending.borrow_mut().remove(&cid);
                    match waiter {
                        Some(tx) => tx.send(Ok(Response { frame })),
                        None => tracing::debug!(cid, "response nobody waits for (timed out)"),
                    }
                }
                Some(len) => break len,
                None => break FRAME_LEN_FIELD,
            }
        };
        let n = read_more(&mut stream, &mut buf, &mut filled, need, READ_CHUNK_BYTES).await?;
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
