//! The socket shim of a pipelined connection: one glommio `TcpStream` shared by the task that
//! reads responses and the writers of requests, plus the three steps every pipelined client
//! over it takes (connect without Nagle, write a frame as pieces, read more into a buffer).
//! The native client and the load generator's Kafka client both use it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// A `TcpStream` shared by the reader task and the writers; cheap to clone. Each poll
/// borrows it only for the duration of the poll; glommio keeps separate readiness sources
/// for reads and writes, so a pending read does not disturb a write.
#[derive(Clone)]
pub struct SharedStream(Rc<RefCell<TcpStream>>);

impl std::fmt::Debug for SharedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStream").finish_non_exhaustive()
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Connects within `timeout`, with Nagle off: frames go out as several writes (prefix and
/// header, then body pieces), and Nagle would hold a frame's tail back until the previous
/// segment is acknowledged.
///
/// # Errors
/// The connect or socket-option failure, as an `io::Error`.
pub async fn connect_nodelay(addr: SocketAddr, timeout: Duration) -> std::io::Result<SharedStream> {
    let stream = TcpStream::connect_timeout(addr, timeout).await?;
    stream.set_nodelay(true)?;
    Ok(SharedStream(Rc::new(RefCell::new(stream))))
}

/// Writes `head`, then every piece in order, then flushes: a frame whose body is sent from
/// the caller's buffers without being concatenated. The caller serialises writers and
/// closes the connection if this future is dropped part-way (the stream would be torn).
///
/// # Errors
/// The socket's write error.
pub async fn write_pieces<P: AsRef<[u8]>>(
    stream: &mut SharedStream,
    head: &[u8],
    pieces: &[P],
) -> std::io::Result<()> {
    stream.write_all(head).await?;
    for piece in pieces {
        stream.write_all(piece.as_ref()).await?;
    }
    stream.flush().await
}

/// Reads once into `buf[*filled..]`, first growing `buf` (zeroed) to at least `need` bytes
/// and `chunk` bytes past what is filled; advances `*filled`. Returns the bytes read, 0 when
/// the peer closed. `buf[..*filled]` holds what was received, `buf[*filled..]` is room.
///
/// # Errors
/// The socket's read error.
pub async fn read_more(
    stream: &mut SharedStream,
    buf: &mut BytesMut,
    filled: &mut usize,
    need: usize,
    chunk: usize,
) -> std::io::Result<usize> {
    let target = need.max(*filled + chunk);
    if buf.len() < target {
        buf.resize(target, 0);
    }
    let room = buf.get_mut(*filled..).unwrap_or_default();
    let n = stream.read(room).await?;
    *filled += n;
    Ok(n)
}
