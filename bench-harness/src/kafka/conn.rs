//! One Kafka connection on glommio: size-prefixed frames, correlation ids, pipelined requests.
//!
//! ```text
//!  send() ──▶ slot (≤ CONN_IN_FLIGHT_MAX) ─▶ write lock ─▶ id, Matcher.push(id) ─▶ socket
//!  reader task ◀── socket: i32 size | correlation id | ... ─▶ Matcher.complete(id) ─▶ waiter
//! ```
//!
//! A Kafka broker answers the requests of one connection in the order they were sent, so
//! waiters form a queue and each response must carry the id at its front; anything else
//! desynchronises the stream and closes the connection, failing every waiter. Requests that
//! get no answer (Produce with acks=0) are never queued.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use glommio::sync::{Semaphore, StaticPermit};
use tidelog_client::socket::{connect_nodelay, read_more, write_pieces, SharedStream};
use tidelog_wire::kafka::{request_header_version, response_header_version, Decoder};

use super::{KafkaError, Result};

/// Requests awaiting a response on one connection; more wait for a slot.
pub const CONN_IN_FLIGHT_MAX: usize = 256;
/// Largest response frame accepted (a fetch asks for at most [`super::FETCH_BYTES_MAX`]).
pub const FRAME_BYTES_MAX: usize = 128 << 20;
/// Bytes the reader asks the socket for at once (its buffer grows to a whole frame).
const READ_CHUNK_BYTES: usize = 64 << 10;
/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing the TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The waiters of one connection, in request order.
#[derive(Debug)]
pub struct Matcher<W> {
    queue: VecDeque<(i32, W)>,
}

impl<W> Default for Matcher<W> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<W> Matcher<W> {
    /// Queues the waiter of the request sent with `correlation_id`.
    pub fn push(&mut self, correlation_id: i32, waiter: W) {
        self.queue.push_back((correlation_id, waiter));
    }

    /// The waiter of the response carrying `correlation_id`: the oldest one.
    ///
    /// # Errors
    /// A response nobody waits for, or one out of order: the stream cannot be trusted.
    pub fn complete(&mut self, correlation_id: i32) -> Result<W> {
        match self.queue.front() {
            Some((id, _)) if *id == correlation_id => {
                Ok(self.queue.pop_front().map(|(_, w)| w).ok_or_else(|| {
                    KafkaError::Malformed("response matching lost its waiter".into())
                })?)
            }
            Some((id, _)) => Err(KafkaError::Malformed(format!(
                "response with correlation id {correlation_id} while {id} is the oldest request"
            ))),
            None => Err(KafkaError::Malformed(format!(
                "response with correlation id {correlation_id} to no request"
            ))),
        }
    }

    /// Waiters left.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Takes every waiter (the connection is closing).
    pub fn drain(&mut self) -> Vec<W> {
        self.queue.drain(..).map(|(_, w)| w).collect()
    }
}

/// A one-value channel between the reader task and a waiter.
struct Slot {
    value: Option<Result<Bytes>>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

fn deliver(slot: &SlotRef, value: Result<Bytes>) {
    let waker = {
        let mut s = slot.borrow_mut();
        s.value = Some(value);
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

struct SlotFuture(SlotRef);

impl Future for SlotFuture {
    type Output = Result<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.borrow_mut();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[derive(Default)]
struct State {
    pending: RefCell<Matcher<SlotRef>>,
    closed: RefCell<Option<KafkaError>>,
}

impl State {
    fn close(&self, why: KafkaError) {
        {
            let mut closed = self.closed.borrow_mut();
            if closed.is_none() {
                *closed = Some(why.clone());
            }
        }
        let waiters = self.pending.borrow_mut().drain();
        for w in waiters {
            deliver(&w, Err(why.clone()));
        }
    }

    fn check_open(&self) -> Result<()> {
        match &*self.closed.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

struct Inner {
    addr: SocketAddr,
    stream: SharedStream,
    state: Rc<State>,
    write_lock: Semaphore,
    slots: Rc<Semaphore>,
    next_id: Cell<i32>,
    client_id: &'static str,
    reader: glommio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.state.close(KafkaError::Closed(
            "connection dropped by the client".into(),
        ));
        self.reader.cancel();
    }
}

/// A Kafka connection; cheap to clone (clones share it). Dropping the last clone closes it.
#[derive(Clone)]
pub struct KafkaConn {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for KafkaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConn")
            .field("addr", &self.inner.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A request written and awaiting its response.
pub struct Pending {
    slot: SlotRef,
    _permit: StaticPermit,
    api_key: i16,
    version: i16,
}

impl Pending {
    /// The response body (its header checked and skipped), at most [`REQUEST_TIMEOUT`] later.
    ///
    /// # Errors
    /// Timeout, a closed connection, a malformed header.
    pub async fn wait(self) -> Result<Bytes> {
        let frame = futures_lite::future::or(SlotFuture(Rc::clone(&self.slot)), async {
            glommio::timer::sleep(REQUEST_TIMEOUT).await;
            Err(KafkaError::Timeout)
        })
        .await?;
        // The reader checked the correlation id; skip it and, in header v1, the tags.
        let mut d = Decoder::new(&frame);
        let header = response_header_version(self.api_key, self.version);
        tidelog_wire::kafka::ResponseHeader::decode(&mut d, header)
            .map_err(|e| KafkaError::Malformed(format!("response header: {e}")))?;
        Ok(frame.slice(d.position()..))
    }
}

impl KafkaConn {
    /// Connects to `addr` (no request is sent yet).
    ///
    /// # Errors
    /// [`KafkaError::Connect`].
    pub async fn connect(addr: SocketAddr, client_id: &'static str) -> Result<Self> {
        let stream = connect_nodelay(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|io| KafkaError::Connect(format!("{addr}: {io}")))?;
        let state = Rc::new(State::default());
        let reader = glommio::spawn_local(read_loop(stream.clone(), Rc::clone(&state))).detach();
        Ok(KafkaConn {
            inner: Rc::new(Inner {
                addr,
                stream,
                state,
                write_lock: Semaphore::new(1),
                slots: Rc::new(Semaphore::new(CONN_IN_FLIGHT_MAX as u64)),
                next_id: Cell::new(1),
                client_id,
                reader,
            }),
        })
    }

    /// Whether the connection failed or was closed (it is never reused then).
    pub fn is_closed(&self) -> bool {
        self.inner.state.closed.borrow().is_some()
    }

    /// Sends a request whose body is `parts` concatenated; returns its [`Pending`] response,
    /// or `None` when `expect_response` is false (acks=0 Produce), once the request is written.
    ///
    /// # Errors
    /// A closed connection or a failed write (which closes it).
    pub async fn send(
        &self,
        api_key: i16,
        version: i16,
        parts: &[&[u8]],
        expect_response: bool,
    ) -> Result<Option<Pending>> {
        let state = &self.inner.state;
        state.check_open()?;
        let permit = self
            .inner
            .slots
            .acquire_static_permit(1)
            .await
            .map_err(|_| KafkaError::Closed("connection closed".into()))?;
        let _lock = self
            .inner
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|_| KafkaError::Closed("connection closed".into()))?;
        state.check_open()?;
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id.wrapping_add(1) & i32::MAX);
        let mut header = BytesMut::with_capacity(32);
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        header.put_i32(0);
        header.put_i16(api_key);
        header.put_i16(version);
        header.put_i32(id);
        header.put_i16(self.inner.client_id.len() as i16);
        header.put_slice(self.inner.client_id.as_bytes());
        if request_header_version(api_key, version) >= 2 {
            header.put_u8(0);
        }
        let size = i32::try_from(header.len() - 4 + body_len)
            .map_err(|_| KafkaError::Malformed("request larger than 2 GiB".into()))?;
        header[..4].copy_from_slice(&size.to_be_bytes());
        let slot = Rc::new(RefCell::new(Slot {
            value: None,
            waker: None,
        }));
        if expect_response {
            state.pending.borrow_mut().push(id, Rc::clone(&slot));
        }
        // A request cut short would desynchronise the stream: close on a cancelled write.
        let mut torn = TornWrite(Some(Rc::clone(state)));
        let mut stream = self.inner.stream.clone();
        let written = write_pieces(&mut stream, &header, parts).await;
        torn.0 = None;
        if let Err(e) = written {
            let why = KafkaError::Closed(format!("write to {}: {e}", self.inner.addr));
            state.close(why.clone());
            return Err(why);
        }
        Ok(expect_response.then_some(Pending {
            slot,
            _permit: permit,
            api_key,
            version,
        }))
    }

    /// Sends a request and waits for its response body.
    ///
    /// # Errors
    /// As [`send`](Self::send) and [`Pending::wait`].
    pub async fn call(&self, api_key: i16, version: i16, body: &[u8]) -> Result<Bytes> {
        match self.send(api_key, version, &[body], true).await? {
            Some(p) => p.wait().await,
            None => Err(KafkaError::Malformed("no response expected".into())),
        }
    }
}

struct TornWrite(Option<Rc<State>>);

impl Drop for TornWrite {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.close(KafkaError::Closed(
                "a request was cancelled while being written".into(),
            ));
        }
    }
}

async fn read_loop(stream: SharedStream, state: Rc<State>) {
    let why = match read_frames(stream, &state).await {
        Ok(()) => KafkaError::Closed("the broker closed the connection".into()),
        Err(e) => e,
    };
    state.close(why);
}

/// Splits the next whole frame (without its size prefix) off `buf[..filled]`, if there is one;
/// else returns how many bytes the frame needs in all.
fn next_frame(buf: &mut BytesMut, filled: &mut usize) -> Result<std::result::Result<Bytes, usize>> {
    let Some(prefix) = buf.get(..4).filter(|_| *filled >= 4) else {
        return Ok(Err(4));
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| (4..=FRAME_BYTES_MAX).contains(s))
        .ok_or_else(|| KafkaError::Malformed(format!("response frame of {size} bytes")))?;
    if *filled < 4 + size {
        return Ok(Err(4 + size));
    }
    let mut frame = buf.split_to(4 + size);
    *filled -= 4 + size;
    let _ = frame.split_to(4);
    Ok(Ok(frame.freeze()))
}

async fn read_frames(mut stream: SharedStream, state: &State) -> Result<()> {
    // `buf[..filled]` holds received bytes; `buf[filled..]` is room to read into.
    let mut buf = BytesMut::new();
    let mut filled = 0usize;
    loop {
        let need = loop {
            match next_frame(&mut buf, &mut filled)? {
                Ok(frame) => {
                    let id = i32::from_be_bytes(
                        frame
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .ok_or_else(|| KafkaError::Malformed("frame without header".into()))?,
                    );
                    let waiter = state.pending.borrow_mut().complete(id)?;
                    deliver(&waiter, Ok(frame));
                }
                Err(need) => break need,
            }
        };
        let n = read_more(&mut stream, &mut buf, &mut filled, need, READ_CHUNK_BYTES)
            .await
            .map_err(|e| KafkaError::Closed(format!("read: {e}")))?;
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_match_requests_in_order() {
        let mut m = Matcher::default();
        m.push(7, "a");
        m.push(8, "b");
        m.push(10, "c");
        assert_eq!(m.complete(7).expect("oldest"), "a");
        assert!(m.complete(10).is_err(), "10 overtakes 8");
        assert_eq!(m.len(), 2, "a mismatch takes no waiter");
        assert_eq!(m.complete(8).expect("next"), "b");
        assert_eq!(m.complete(10).expect("last"), "c");
        assert!(m.complete(11).is_err(), "nobody waits");
        m.push(1, "d");
        assert_eq!(m.drain(), ["d"]);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn frames_are_split_whole_and_bounded() {
        let mut buf = BytesMut::new();
        buf.put_i32(6);
        buf.put_slice(&[0, 0, 0, 9, 0xAA, 0xBB]);
        buf.put_i32(5);
        buf.put_slice(&[1, 2]);
        let mut filled = buf.len();
        let f = next_frame(&mut buf, &mut filled)
            .expect("ok")
            .expect("whole");
        assert_eq!(&f[..], &[0, 0, 0, 9, 0xAA, 0xBB]);
        assert_eq!(next_frame(&mut buf, &mut filled).expect("ok"), Err(9));
        let mut bad = BytesMut::new();
        bad.put_i32(-1);
        let mut filled = 4;
        assert!(next_frame(&mut bad, &mut filled).is_err());
        let mut huge = BytesMut::new();
        huge.put_i32(i32::MAX);
        let mut filled = 4;
        assert!(next_frame(&mut huge, &mut filled).is_err());
    }
}
