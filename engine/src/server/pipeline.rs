//! The connection loop both listeners run: read a frame, dispatch it, write the completed
//! responses, in that order, with produce requests pipelined.
//!
//! A [`Protocol`] supplies the framing (how long the buffered frame is), the encoding of
//! queued responses and the handler; [`Connection`] does the rest, once for both:
//!
//! - Requests take effect in arrival order and responses go out in request order. A handler
//!   may queue a response that is still waiting (an `acks=all` produce's fdatasync) with
//!   [`Connection::queue`] and return, so the next request is read meanwhile; at most
//!   `max_pending` wait per connection (at the limit the oldest is awaited). Handlers of
//!   anything else call [`Connection::flush_pending`] first.
//! - One task per connection alternates reading and writing, with a persistent read
//!   buffer. While no whole frame is buffered and responses are pending, it races one socket
//!   read into that buffer against the oldest pending completion. That loses nothing:
//!   glommio 0.9's unbuffered `poll_read` copies bytes into the caller's slice only in a
//!   poll that returns `Ready`, so a read dropped while pending has taken nothing, and the
//!   buffer is trimmed back to what arrived either way. (glommio's `TcpStream` has no
//!   lock-free split, and handlers write to the socket themselves: fetches stream stored
//!   bytes uncopied.)
//! - Every frame is bounded before it is buffered: the protocol checks the announced size
//!   from the first bytes, and the buffer grows only with bytes that arrive.
//! - A frame that fails its checks, or the peer's half-close, still gets the responses
//!   already pending written before the connection closes.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use super::pinned::Home;

/// Most bytes a read buffer grows by per socket read.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Fewest bytes asked for per socket read, so small pipelined requests arrive together.
const MIN_READ_BYTES: usize = 16 << 10;
/// Frames at least this large are read into an allocation of their own (exactly their
/// size), so what their slices keep alive is bounded by the frame itself.
const OWN_BUFFER_FRAME_BYTES: usize = 64 << 10;
/// First allocation of a frame read into its own buffer; it grows fourfold as bytes arrive.
/// 1 MiB: a producer's 1 MB batch (the common `batch.size` ceiling) needs no growth.
const OWN_FRAME_FIRST_BYTES: usize = 1 << 20;
/// Most bytes one socket read may add to a frame's own buffer (and so zero ahead of it).
const OWN_READ_STEP_BYTES: usize = 1 << 20;

/// What a listener supplies to the shared connection loop.
pub(crate) trait Protocol: Sized {
    /// What the connection keeps with a queued response to write it.
    type Meta;
    /// A queued response.
    type Response;
    /// Why a frame was refused.
    type Error: std::fmt::Display;
    /// Bytes reserved for a frame before its bytes arrive.
    const FRAME_RESERVE_BYTES: usize;

    /// The total size (prefix included) that the buffered bytes announce, checked against
    /// the protocol's limit; `None` before the prefix has arrived.
    fn announced(&self, buffered: &[u8]) -> Result<Option<usize>, Self::Error>;

    /// Encodes a queued response into `out` (cleared by the caller).
    fn encode(
        &mut self,
        meta: &Self::Meta,
        response: &Self::Response,
        out: &mut BytesMut,
    ) -> Result<(), Self::Error>;

    /// Whether the shard is stopping (no further request is handled).
    fn stopped(&self) -> bool;

    /// Handles one whole frame (prefix included).
    async fn handle(
        conn: &mut Connection<Self>,
        frame: BytesMut,
    ) -> Result<(), ConnError<Self::Error>>;

    /// Last words to a peer whose frame failed the framing checks, after the pending
    /// responses were written.
    async fn refuse(conn: &mut Connection<Self>, error: &Self::Error);
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError<E: std::fmt::Display> {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame's announced size failed the checks.
    #[error("bad frame: {0}")]
    Frame(E),
    /// A frame failed the protocol's checks, or a response did not encode.
    #[error("{0}")]
    Protocol(E),
    /// The peer closed.
    #[error("peer closed")]
    Closed,
    /// The shard is stopping.
    #[error("shard stopping")]
    Stopping,
    /// The peer kept the connection waiting too long (idle, or a request not arriving).
    #[error("timed out: {0}")]
    TimedOut(&'static str),
}

/// A queued response: complete, or still waiting (for its fdatasyncs).
pub(crate) enum Pending<T> {
    Ready(T),
    Waiting(JoinHandle<T>),
}

/// A waiting response whose task ended without one (the shard is stopping).
#[derive(Debug)]
struct Abandoned;

/// One connection of either listener.
pub(crate) struct Connection<P: Protocol> {
    pub stream: TcpStream,
    /// Response bytes being built.
    pub out: BytesMut,
    /// The protocol's own per-connection state.
    pub proto: P,
    /// Bytes received and not yet handled: whole frames and the start of the next one. It
    /// persists across reads, so an interrupted read loses nothing.
    inbuf: BytesMut,
    /// The allocation `inbuf` reads into.
    inbuf_home: Home,
    /// Address one past the bytes of `inbuf_home` known initialized: reads reuse them
    /// without zeroing them again ([`ZeroedTo`]).
    inbuf_zeroed: ZeroedTo,
    /// The allocation the frame being handled was read into (what a slice of it that
    /// outlives the request keeps alive).
    frame_home: Home,
    /// Responses not yet written, oldest first; at most `max_pending`.
    pending: VecDeque<(P::Meta, Pending<P::Response>)>,
    max_pending: usize,
    timeouts: super::ConnectionTimeouts,
    /// When the last request arrived (or the connection opened): the idle clock.
    idle_since: Instant,
    /// When the first bytes of the request being read arrived: its arrival clock.
    frame_since: Option<Instant>,
    /// The shard's memory for large request frames, shared by its connections.
    request_memory: Rc<RequestMemory>,
    /// The peer's address (its share of the request memory is counted by it).
    peer_ip: Option<std::net::IpAddr>,
    /// What the frame being handled holds of it; given back when the next frame is read.
    frame_memory: Vec<glommio::sync::StaticPermit>,
    /// Bytes `frame_memory` holds.
    frame_memory_bytes: usize,
}

impl<P: Protocol> Connection<P> {
    /// Wraps an accepted stream.
    pub fn new(
        stream: TcpStream,
        proto: P,
        max_pending: usize,
        timeouts: super::ConnectionTimeouts,
        request_memory: Rc<RequestMemory>,
    ) -> Self {
        let peer_ip = stream.peer_addr().ok().map(|a| a.ip());
        let _ = stream.set_nodelay(true);
        // A peer that stops reading must not pin fetched buffers and pending responses
        // forever: a write that makes no progress for this long closes the connection.
        let _ = stream.set_write_timeout(Some(crate::limits::WRITE_STALL_TIMEOUT));
        Connection {
            stream,
            out: BytesMut::with_capacity(4096),
            proto,
            inbuf: BytesMut::new(),
            inbuf_home: Home::default(),
            inbuf_zeroed: ZeroedTo::default(),
            frame_home: Home::default(),
            pending: VecDeque::new(),
            max_pending: max_pending.max(1),
            timeouts,
            idle_since: Instant::now(),
            frame_since: None,
            request_memory,
            peer_ip,
            frame_memory: Vec::new(),
            frame_memory_bytes: 0,
        }
    }

    /// Serves requests until the peer leaves, a frame is refused or the shard stops.
    pub async fn serve(&mut self) -> Result<(), ConnError<P::Error>> {
        let result = self.serve_frames().await;
        match &result {
            Err(ConnError::Frame(e)) => {
                self.flush_pending().await?;
                P::refuse(self, e).await;
            }
            // The requests before the bad one (or the peer's half-close, or its stall) are
            // still answered.
            Err(ConnError::Protocol(_) | ConnError::Closed | ConnError::TimedOut(_)) => {
                self.flush_pending().await?
            }
            _ => {}
        }
        result
    }

    async fn serve_frames(&mut self) -> Result<(), ConnError<P::Error>> {
        loop {
            let frame = self.next_frame().await?;
            if self.proto.stopped() {
                return Ok(());
            }
            P::handle(self, frame).await?;
        }
    }

    /// The next whole frame (prefix included). While waiting for its bytes, writes the
    /// pending responses that complete, oldest first.
    async fn next_frame(&mut self) -> Result<BytesMut, ConnError<P::Error>> {
        // The previous frame has been handled: its memory goes back to the shard.
        self.give_back_request_memory();
        loop {
            let announced = self.announced()?;
            if let Some(total) = announced.filter(|&total| self.inbuf.len() >= total) {
                self.frame_home = self.inbuf_home;
                self.arrived();
                return Ok(self.inbuf.split_to(total));
            }
            self.write_completed().await?;
            let need = match announced {
                Some(total) => total - self.inbuf.len(),
                None => 4usize.saturating_sub(self.inbuf.len()).max(1),
            };
            if let Some(total) = announced.filter(|&t| t >= OWN_BUFFER_FRAME_BYTES) {
                let frame = self.read_own(total).await?;
                self.arrived();
                return Ok(frame);
            }
            let deadline = self.deadline(announced.unwrap_or(0));
            self.read_some(None, need, deadline).await?;
        }
    }

    /// A request arrived whole: the idle clock restarts, the arrival clock stops.
    fn arrived(&mut self) {
        self.idle_since = Instant::now();
        self.frame_since = None;
    }

    /// When the next read must have completed: the request in progress (`total` bytes, 0
    /// while its size is unknown) must arrive within its arrival deadline; with none in
    /// progress and no response pending, the connection must not stay idle past its idle
    /// timeout. `None` while responses are pending and no request is in progress.
    fn deadline(&mut self, total: usize) -> Option<(Instant, &'static str)> {
        if !self.inbuf.is_empty() || self.frame_since.is_some() {
            let since = *self.frame_since.get_or_insert_with(Instant::now);
            return Some((
                since + self.timeouts.arrival(total),
                "request did not arrive in time",
            ));
        }
        if self.pending.is_empty() {
            return Some((self.idle_since + self.timeouts.idle, "idle"));
        }
        None
    }

    /// One socket read (into `own`, else the read buffer), or the oldest pending response
    /// written if it completes first; [`ConnError::TimedOut`] at `deadline`.
    async fn read_some(
        &mut self,
        own: Option<(&mut BytesMut, &mut ZeroedTo)>,
        need: usize,
        deadline: Option<(Instant, &'static str)>,
    ) -> Result<(), ConnError<P::Error>> {
        let woke = match deadline {
            None => self.read_or_complete(own, need).await,
            Some((at, why)) => {
                let left = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(self.read_or_complete(own, need), async move {
                    glommio::timer::sleep(left).await;
                    Woke::TimedOut(why)
                })
                .await
            }
        };
        match woke {
            Woke::TimedOut(why) => Err(ConnError::TimedOut(why)),
            Woke::Read(Ok(0)) => Err(ConnError::Closed),
            Woke::Read(Ok(_)) => Ok(()),
            Woke::Read(Err(e)) => Err(e.into()),
            Woke::Done(done) => {
                let (meta, response) = done.map_err(|_| ConnError::Stopping)?;
                self.send(&meta, &response).await
            }
        }
    }

    /// Reads the rest of a large frame (`total` bytes, its start buffered) into an
    /// allocation of its own. Slices of the frame that outlive the request (batches the tail
    /// cache keeps without copying) then keep that frame alive and nothing else, never a read
    /// buffer shared with other requests.
    ///
    /// Memory follows the bytes that arrive, not what the length prefix claims: the buffer
    /// starts at [`OWN_FRAME_FIRST_BYTES`] and grows fourfold when full, each step taken from
    /// the shard's request memory first. While that is spent, reading waits (the arrival
    /// deadline still runs), so peers announcing huge frames cannot make the shard hold more
    /// than its budget.
    async fn read_own(&mut self, total: usize) -> Result<BytesMut, ConnError<P::Error>> {
        self.frame_since.get_or_insert_with(Instant::now);
        let mut frame = BytesMut::new();
        let mut zeroed = ZeroedTo::default();
        let mut capacity = 0;
        while frame.len() < total {
            if frame.len() == capacity {
                let grown = if capacity == 0 {
                    total.min(OWN_FRAME_FIRST_BYTES).max(self.inbuf.len())
                } else {
                    total.min(capacity.saturating_mul(4))
                };
                self.take_request_memory(grown - capacity, total).await?;
                let mut bigger = BytesMut::with_capacity(grown);
                if capacity == 0 {
                    bigger.extend_from_slice(&self.inbuf);
                    self.inbuf.clear();
                } else {
                    bigger.extend_from_slice(&frame);
                }
                frame = bigger;
                zeroed = ZeroedTo::end_of(&frame);
                capacity = grown;
                continue;
            }
            self.write_completed().await?;
            let need = (total - frame.len()).min(capacity - frame.len());
            let deadline = self.deadline(total);
            self.read_some(Some((&mut frame, &mut zeroed)), need, deadline)
                .await?;
        }
        self.frame_home = Home::of(&frame);
        Ok(frame)
    }

    /// Takes `bytes` of the shard's request memory for the frame being read, first from its
    /// peer address's share (at most half the budget, so connections from one address
    /// cannot hold all of it), then from the budget, waiting while either is spent, up to
    /// the frame's arrival deadline. One frame never asks for more than an address's share.
    async fn take_request_memory(
        &mut self,
        bytes: usize,
        total: usize,
    ) -> Result<(), ConnError<P::Error>> {
        let share = RequestMemory::ADDRESS_SHARE;
        let units = bytes.min(share.saturating_sub(self.frame_memory_bytes));
        if units == 0 {
            return Ok(());
        }
        let memory = Rc::clone(&self.request_memory);
        let ip = self.peer_ip;
        let wait = async move {
            memory.take_share(ip, units).await;
            // Given back if this wait is dropped (deadline) or fails before the permit.
            let mut share = ShareGuard {
                memory: Rc::clone(&memory),
                ip,
                units,
            };
            let permit = memory.budget.acquire_static_permit(units as u64).await.ok();
            if permit.is_some() {
                share.units = 0;
            }
            permit
        };
        let permit = match self.deadline(total) {
            None => wait.await,
            Some((at, why)) => {
                let left = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(async { Ok(wait.await) }, async move {
                    glommio::timer::sleep(left).await;
                    Err(why)
                })
                .await
                .map_err(ConnError::TimedOut)?
            }
        };
        let permit = permit.ok_or(ConnError::Stopping)?;
        self.frame_memory.push(permit);
        self.frame_memory_bytes += units;
        Ok(())
    }

    /// Gives the frame's request memory back to the shard and its address's share.
    fn give_back_request_memory(&mut self) {
        self.frame_memory.clear();
        if self.frame_memory_bytes > 0 {
            self.request_memory
                .give_back(self.peer_ip, self.frame_memory_bytes);
        }
        self.frame_memory_bytes = 0;
    }

    /// The allocation the frame being handled was read into, for
    /// [`PinnedReads`](super::pinned::PinnedReads).
    pub fn frame_home(&self) -> Home {
        self.frame_home
    }

    fn announced(&self) -> Result<Option<usize>, ConnError<P::Error>> {
        self.proto.announced(&self.inbuf).map_err(ConnError::Frame)
    }

    /// Queues a response behind the earlier ones; at the per-connection limit the oldest is
    /// awaited and written first. A ready response with nothing queued is written at once.
    pub async fn queue(
        &mut self,
        meta: P::Meta,
        response: Pending<P::Response>,
    ) -> Result<(), ConnError<P::Error>> {
        if let (Pending::Ready(response), true) = (&response, self.pending.is_empty()) {
            return self.send(&meta, response).await;
        }
        if self.pending.len() >= self.max_pending {
            self.write_oldest().await?;
        }
        self.pending.push_back((meta, response));
        Ok(())
    }

    /// Encodes and writes one response now.
    pub async fn send(
        &mut self,
        meta: &P::Meta,
        response: &P::Response,
    ) -> Result<(), ConnError<P::Error>> {
        self.out.clear();
        self.proto
            .encode(meta, response, &mut self.out)
            .map_err(ConnError::Protocol)?;
        let until = self.response_until(self.out.len());
        super::write_by(&mut self.stream, &self.out, until).await?;
        Ok(())
    }

    /// When a response of `bytes` starting now must have been taken whole by the peer.
    pub(crate) fn response_until(&self, bytes: usize) -> Instant {
        self.timeouts.response_until(bytes)
    }

    /// Writes the pending responses that are complete, oldest first, without waiting.
    async fn write_completed(&mut self) -> Result<(), ConnError<P::Error>> {
        loop {
            let done = match self.pending.front_mut() {
                None => return Ok(()),
                Some((_, Pending::Ready(_))) => None,
                Some((_, Pending::Waiting(task))) => {
                    match futures_lite::future::poll_once(&mut *task).await {
                        None => return Ok(()),
                        Some(done) => done,
                    }
                }
            };
            self.write_popped(done).await?;
        }
    }

    /// Waits for every pending response and writes them in order.
    pub async fn flush_pending(&mut self) -> Result<(), ConnError<P::Error>> {
        while !self.pending.is_empty() {
            self.write_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest pending response and writes it.
    async fn write_oldest(&mut self) -> Result<(), ConnError<P::Error>> {
        let done = match self.pending.front_mut() {
            None => return Ok(()),
            Some((_, Pending::Ready(_))) => None,
            Some((_, Pending::Waiting(task))) => task.await,
        };
        self.write_popped(done).await
    }

    /// Pops the oldest (`done`: its result when it was waiting) and writes it.
    async fn write_popped(&mut self, done: Option<P::Response>) -> Result<(), ConnError<P::Error>> {
        let popped = self.pop_with(done).map_err(|_| ConnError::Stopping)?;
        if let Some((meta, response)) = popped {
            self.send(&meta, &response).await?;
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn pop_with(
        &mut self,
        done: Option<P::Response>,
    ) -> Result<Option<(P::Meta, P::Response)>, Abandoned> {
        let Some((meta, response)) = self.pending.pop_front() else {
            return Ok(None);
        };
        match (response, done) {
            (_, Some(t)) | (Pending::Ready(t), None) => Ok(Some((meta, t))),
            (Pending::Waiting(_), None) => Err(Abandoned),
        }
    }

    /// Reads into the buffer what the current frame still needs (`need`, at least a chunk, so
    /// one read may bring the next small requests too), reserving at most
    /// [`Protocol::FRAME_RESERVE_BYTES`] ahead — the buffer grows with bytes that arrive, not
    /// with what a length field claims — unless the oldest waiting response completes first.
    /// With `own`, reads at most `need` bytes into that buffer instead (a frame read into an
    /// allocation of its own, never past its end).
    async fn read_or_complete(
        &mut self,
        own: Option<(&mut BytesMut, &mut ZeroedTo)>,
        need: usize,
    ) -> Woke<P::Meta, P::Response> {
        let Self {
            stream,
            inbuf,
            inbuf_home,
            inbuf_zeroed,
            pending,
            ..
        } = self;
        let buf = match own {
            Some((own, zeroed)) => {
                // Within the capacity `read_own` gave it: no reallocation, and no more
                // zeroed than one read may fill.
                let filled = own.len();
                zeroed.extend(own, filled + need.min(OWN_READ_STEP_BYTES));
                (own, filled)
            }
            None => {
                let filled = inbuf.len();
                let room = need.clamp(MIN_READ_BYTES, READ_CHUNK_BYTES);
                if inbuf.capacity() - filled < room {
                    // A new allocation is made here only (never by `BytesMut` growing), so
                    // that its identity is known; the start of the current frame moves to it.
                    let ahead = need.min(P::FRAME_RESERVE_BYTES).max(room);
                    let mut fresh = BytesMut::with_capacity((filled + ahead).max(READ_CHUNK_BYTES));
                    *inbuf_home = Home::of(&fresh);
                    fresh.extend_from_slice(inbuf);
                    *inbuf_zeroed = ZeroedTo::end_of(&fresh);
                    *inbuf = fresh;
                }
                inbuf_zeroed.extend(inbuf, filled + room);
                (inbuf, filled)
            }
        };
        let (buf, filled) = buf;
        let race = {
            let read = async { Race::Read(stream.read(&mut buf[filled..]).await) };
            match pending.front_mut() {
                Some((_, Pending::Waiting(oldest))) => {
                    futures_lite::future::or(read, async { Race::Done(oldest.await) }).await
                }
                _ => read.await,
            }
        };
        match race {
            Race::Read(Ok(read)) => {
                buf.truncate(filled + read);
                Woke::Read(Ok(read))
            }
            Race::Read(Err(e)) => {
                buf.truncate(filled);
                Woke::Read(Err(e))
            }
            Race::Done(done) => {
                buf.truncate(filled);
                // The oldest was waiting and has just finished: pop it with its result.
                Woke::Done(
                    self.pop_with(done)
                        .and_then(|popped| popped.ok_or(Abandoned)),
                )
            }
        }
    }
}

impl<P: Protocol> Drop for Connection<P> {
    fn drop(&mut self) {
        self.give_back_request_memory();
    }
}

/// The shard's memory for large request frames: a byte budget shared by every connection, of
/// which the connections of one client address may hold at most [`Self::ADDRESS_SHARE`].
pub(crate) struct RequestMemory {
    budget: Rc<glommio::sync::Semaphore>,
    /// Per address: bytes held, and the event its waiting connections listen on (only an
    /// address's own releases wake them: one busy client's releases must not wake hundreds
    /// of another address's waiting connections).
    by_address: std::cell::RefCell<
        std::collections::HashMap<std::net::IpAddr, (usize, Rc<crate::sync::Event>)>,
    >,
}

/// An address share taken for a frame whose budget permit is not yet held: given back when
/// dropped with units left.
struct ShareGuard {
    memory: Rc<RequestMemory>,
    ip: Option<std::net::IpAddr>,
    units: usize,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        if self.units > 0 {
            self.memory.give_back(self.ip, self.units);
        }
    }
}

impl RequestMemory {
    /// What one address may hold: half the budget, and more than the largest request.
    pub const ADDRESS_SHARE: usize = crate::limits::REQUEST_MEMORY_BYTES_PER_SHARD / 2;

    pub fn new() -> Self {
        RequestMemory {
            budget: Rc::new(glommio::sync::Semaphore::new(
                crate::limits::REQUEST_MEMORY_BYTES_PER_SHARD as u64,
            )),
            by_address: Default::default(),
        }
    }

    /// Waits until `ip`'s connections hold at most `ADDRESS_SHARE - units`, then counts
    /// `units` more for it. Without an address (a socket that cannot tell), nothing is
    /// counted.
    async fn take_share(&self, ip: Option<std::net::IpAddr>, units: usize) {
        let Some(ip) = ip else { return };
        loop {
            let released = {
                let mut by_address = self.by_address.borrow_mut();
                let (held, released) = by_address.entry(ip).or_default();
                if *held + units <= Self::ADDRESS_SHARE {
                    *held += units;
                    return;
                }
                Rc::clone(released)
            };
            let listener = released.listen();
            // Nothing was released between the check and the listen: no await between.
            listener.await;
        }
    }

    fn give_back(&self, ip: Option<std::net::IpAddr>, units: usize) {
        let Some(ip) = ip else { return };
        let mut by_address = self.by_address.borrow_mut();
        if let Some((held, released)) = by_address.get_mut(&ip) {
            *held = held.saturating_sub(units);
            released.notify();
            if *held == 0 {
                by_address.remove(&ip);
            }
        }
    }
}

/// What ended [`Connection::read_or_complete`].
enum Woke<M, T> {
    /// Bytes arrived (0: the peer closed).
    Read(std::io::Result<usize>),
    /// The oldest pending response completed first, and was popped.
    Done(Result<(M, T), Abandoned>),
    /// The read's deadline passed (the read was dropped; the connection closes).
    TimedOut(&'static str),
}

enum Race<T> {
    Read(std::io::Result<usize>),
    Done(Option<T>),
}

/// How far a read buffer's allocation is known initialized, as the address one past the
/// last such byte, so that each socket read does not zero again the room a previous read
/// zeroed and left unfilled. Zeroing the whole room before every read cost the broker 8% of
/// its CPU under produce load (`perf`: `memset` above the kernel's receive copy), since a
/// frame arrives in several reads and each zeroed all that was still missing.
///
/// Invariant: every byte of the buffer's allocation below the address was initialized
/// (written by a copy, a read or `resize`); `BytesMut::truncate` and `split_to` never
/// de-initialize memory, and the bytes after a buffer's view belong to that buffer alone.
/// Reset whenever the buffer moves to another allocation.
#[derive(Debug, Default, Clone, Copy)]
struct ZeroedTo(usize);

impl ZeroedTo {
    /// The initialized end of a buffer just allocated and filled with its `len` bytes.
    fn end_of(buf: &BytesMut) -> Self {
        ZeroedTo(buf.as_ptr() as usize + buf.len())
    }

    /// Makes `buf` `len` bytes long (`len <= buf.capacity()`, `len >= buf.len()`), zeroing
    /// only the bytes never initialized before.
    fn extend(&mut self, buf: &mut BytesMut, len: usize) {
        debug_assert!(len <= buf.capacity() && len >= buf.len());
        let start = buf.as_ptr() as usize;
        let known = self.0.saturating_sub(start);
        if known >= len && len <= buf.capacity() {
            // SAFETY: `len` is within the capacity, and every byte of this allocation below
            // `self.0` (so the first `len` bytes from `start`) was initialized earlier and
            // never de-initialized (the type's invariant); no other handle refers to the
            // bytes past this view.
            unsafe { buf.set_len(len) };
        } else {
            buf.resize(len, 0);
            self.0 = start + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Write;

    use bytes::Bytes;

    use super::*;

    /// A read buffer's room is zeroed once: bytes a read left unfilled (and later reads
    /// will fill) are not zeroed again, bytes never initialized are, and a split keeps what
    /// the rest of the allocation knows.
    #[test]
    fn read_room_is_zeroed_once() {
        let mut buf = BytesMut::with_capacity(64);
        let mut zeroed = ZeroedTo::end_of(&buf);
        zeroed.extend(&mut buf, 32);
        assert_eq!(&buf[..], &[0u8; 32][..]);
        // A read filled 5 bytes; its room beyond them held what the socket left there.
        buf[10] = 7;
        buf.truncate(5);
        zeroed.extend(&mut buf, 32);
        assert_eq!(buf[10], 7, "room initialized before is not zeroed again");
        zeroed.extend(&mut buf, 48);
        assert_eq!(&buf[32..48], &[0u8; 16][..], "new room is zeroed");
        assert_eq!(buf[10], 7);
        let front = buf.split_to(8);
        assert_eq!(front.len(), 8);
        buf.truncate(0);
        zeroed.extend(&mut buf, 40);
        assert_eq!(buf[2], 7, "the rest of the allocation keeps what it knew");
        assert_eq!(&buf[24..40], &[0u8; 16][..]);
        zeroed.extend(&mut buf, 56);
        assert_eq!(&buf[40..56], &[0u8; 16][..]);
    }

    /// Frames of a 4-byte big-endian size (prefix included), handled by keeping them.
    struct Keep {
        frames: Rc<RefCell<Vec<(Bytes, Home)>>>,
    }

    impl Protocol for Keep {
        type Meta = ();
        type Response = ();
        type Error = String;
        const FRAME_RESERVE_BYTES: usize = 1 << 20;

        fn announced(&self, buffered: &[u8]) -> Result<Option<usize>, String> {
            Ok(buffered
                .get(..4)
                .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize))
        }

        fn encode(&mut self, _: &(), _: &(), _: &mut BytesMut) -> Result<(), String> {
            Ok(())
        }

        fn stopped(&self) -> bool {
            false
        }

        async fn handle(
            conn: &mut Connection<Self>,
            frame: BytesMut,
        ) -> Result<(), ConnError<String>> {
            let home = conn.frame_home();
            conn.proto.frames.borrow_mut().push((frame.freeze(), home));
            Ok(())
        }

        async fn refuse(_: &mut Connection<Self>, _: &String) {}
    }

    /// Every frame lies in the allocation the connection names as its home, allocations
    /// named differently never overlap (so the ledger never counts one buffer under two
    /// names that could be confused), and a large frame's home is exactly its own size.
    #[test]
    fn each_frame_lies_in_the_allocation_it_is_said_to_live_in() {
        let sizes: Vec<usize> = (0..400)
            .map(|i| match i % 50 {
                7 => 300 << 10,
                13 => 70 << 10,
                n => 40 + n * 97,
            })
            .collect();
        let expected = sizes.clone();
        let builder = crate::runtime::executor_builder(glommio::Placement::Unbound, 1)
            .expect("memlock sufficient");
        let frames = builder
            .spawn(move || async move {
                let listener =
                    glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
                let addr = listener.local_addr().expect("addr");
                let client = std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).expect("connect");
                    for (i, &n) in sizes.iter().enumerate() {
                        let mut frame = vec![i as u8; n];
                        frame[..4].copy_from_slice(&(n as u32).to_be_bytes());
                        s.write_all(&frame).expect("write");
                    }
                });
                let stream = listener.accept().await.expect("accept");
                let frames = Rc::new(RefCell::new(Vec::new()));
                let keep = Keep {
                    frames: Rc::clone(&frames),
                };
                let mut conn = Connection::new(
                    stream,
                    keep,
                    4,
                    crate::server::ConnectionTimeouts::default(),
                    Rc::new(RequestMemory::new()),
                );
                assert!(matches!(conn.serve().await, Err(ConnError::Closed)));
                client.join().expect("client");
                drop(conn);
                Rc::try_unwrap(frames).expect("one owner").into_inner()
            })
            .expect("spawn")
            .join()
            .expect("executor");
        assert_eq!(frames.len(), expected.len(), "every frame handled");
        let mut homes: Vec<Home> = Vec::new();
        for (i, (frame, home)) in frames.iter().enumerate() {
            assert_eq!(frame.len(), expected[i]);
            assert!(frame[4..].iter().all(|&b| b == i as u8), "frame {i} intact");
            assert!(home.holds(frame), "frame {i} lies in its named home");
            if frame.len() >= OWN_BUFFER_FRAME_BYTES {
                assert_eq!(home.bytes, frame.len(), "a large frame has its own buffer");
            }
            if !homes.contains(home) {
                homes.push(*home);
            }
        }
        for (i, a) in homes.iter().enumerate() {
            for b in &homes[i + 1..] {
                let disjoint = a.base + a.bytes <= b.base || b.base + b.bytes <= a.base;
                assert!(disjoint, "two live allocations overlap: {a:?} {b:?}");
            }
        }
        assert!(homes.len() > 2, "several read buffers were used");
    }
}
