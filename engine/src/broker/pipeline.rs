//! What both listeners share to pipeline produce requests on one connection: the queue of
//! responses waiting to be written in request order, and the cancel-safe read that gives way
//! to the oldest of them completing.
//!
//! The read races one socket read into the connection's persistent buffer against the oldest
//! pending completion. That loses nothing: glommio 0.9's unbuffered `poll_read` copies bytes
//! into the caller's slice only in a poll that returns `Ready`, so a read dropped while
//! pending has taken nothing, and the buffer is trimmed back to what arrived either way.

use std::collections::VecDeque;

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

/// Most bytes a read buffer grows by per socket read.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Fewest bytes asked for per socket read, so small pipelined requests arrive together.
const MIN_READ_BYTES: usize = 16 << 10;

/// A queued response: complete, or still waiting (for its fdatasyncs).
pub(crate) enum Pending<T> {
    Ready(T),
    Waiting(JoinHandle<T>),
}

/// A waiting response whose task ended without one (the shard is stopping).
#[derive(Debug)]
pub(crate) struct Abandoned;

/// Responses to write in request order, each with what the connection needs to write it.
pub(crate) struct PendingQueue<M, T> {
    items: VecDeque<(M, Pending<T>)>,
}

impl<M, T> Default for PendingQueue<M, T> {
    fn default() -> Self {
        PendingQueue {
            items: VecDeque::new(),
        }
    }
}

impl<M, T> PendingQueue<M, T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, meta: M, response: Pending<T>) {
        self.items.push_back((meta, response));
    }

    /// The oldest response if it is complete, without waiting.
    pub async fn pop_completed(&mut self) -> Option<Result<(M, T), Abandoned>> {
        if let Some((_, Pending::Waiting(task))) = self.items.front_mut() {
            let done = futures_lite::future::poll_once(&mut *task).await?;
            return self.pop_with(done);
        }
        self.pop_with(None)
    }

    /// The oldest response, waiting for it if needed.
    pub async fn pop_oldest(&mut self) -> Option<Result<(M, T), Abandoned>> {
        if let Some((_, Pending::Waiting(task))) = self.items.front_mut() {
            let done = task.await;
            return self.pop_with(done);
        }
        self.pop_with(None)
    }

    /// Pops the oldest; `done` is its result when it was waiting.
    fn pop_with(&mut self, done: Option<T>) -> Option<Result<(M, T), Abandoned>> {
        let (meta, response) = self.items.pop_front()?;
        Some(match (response, done) {
            (_, Some(t)) | (Pending::Ready(t), None) => Ok((meta, t)),
            (Pending::Waiting(_), None) => Err(Abandoned),
        })
    }
}

/// What ended [`read_or_complete`].
pub(crate) enum Woke<M, T> {
    /// Bytes arrived (0: the peer closed).
    Read(std::io::Result<usize>),
    /// The oldest pending response completed first, and was popped.
    Done(Result<(M, T), Abandoned>),
}

/// Reads into `inbuf` what the current request still needs (`need`, at least a chunk, so
/// one read may bring the next small requests too), reserving at most `reserve` ahead —
/// the buffer grows with bytes that arrive, not with what a length field claims — unless
/// the oldest waiting response completes first.
pub(crate) async fn read_or_complete<M, T>(
    stream: &mut TcpStream,
    inbuf: &mut BytesMut,
    need: usize,
    reserve: usize,
    pending: &mut PendingQueue<M, T>,
) -> Woke<M, T> {
    let filled = inbuf.len();
    inbuf.reserve(need.min(reserve));
    inbuf.resize(filled + need.clamp(MIN_READ_BYTES, READ_CHUNK_BYTES), 0);
    let race = {
        let read = async { Race::Read(stream.read(&mut inbuf[filled..]).await) };
        match pending.items.front_mut() {
            Some((_, Pending::Waiting(oldest))) => {
                futures_lite::future::or(read, async { Race::Done(oldest.await) }).await
            }
            _ => read.await,
        }
    };
    match race {
        Race::Read(Ok(read)) => {
            inbuf.truncate(filled + read);
            Woke::Read(Ok(read))
        }
        Race::Read(Err(e)) => {
            inbuf.truncate(filled);
            Woke::Read(Err(e))
        }
        Race::Done(done) => {
            inbuf.truncate(filled);
            // The oldest was waiting and has just finished: pop it with its result.
            Woke::Done(pending.pop_with(done).unwrap_or(Err(Abandoned)))
        }
    }
}

enum Race<T> {
    Read(std::io::Result<usize>),
    Done(Option<T>),
}
