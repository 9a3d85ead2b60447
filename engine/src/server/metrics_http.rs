//! The metrics endpoint on shard 0: a minimal HTTP/1.1 server answering `GET /metrics`
//! (Prometheus text of every shard, [`crate::metrics::render`]), `GET /health` (200 while the
//! broker serves) and `GET /ready` (200 once every partition is open, else 503).
//!
//! One request per connection (`Connection: close`). Bounds: at most
//! [`METRICS_CONNECTIONS_MAX`] connections at once (more are closed at once), a request head
//! of at most [`REQUEST_HEAD_MAX`] bytes that must arrive within [`REQUEST_TIMEOUT`], and a
//! response that must be taken within [`RESPONSE_TIMEOUT`]. A scrape asks each shard for its
//! snapshot over the mesh (bounded channels; each shard builds it between its other tasks),
//! so it never stalls a shard's data path.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

/// Metrics connections served at once.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Largest request head (request line and headers) read.
pub const REQUEST_HEAD_MAX: usize = 8 << 10;
/// How long a request head may take to arrive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the metrics endpoint on `listener` until the shard stops.
pub fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    glommio::spawn_local(async move {
        loop {
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    shard.stopping().await;
                    None
                })
                .await;
            let stream = match accepted {
                None => return,
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if open.get() >= METRICS_CONNECTIONS_MAX {
                drop(stream);
                continue;
            }
            open.set(open.get() + 1);
            let shard = Rc::clone(&shard);
            let open = Rc::clone(&open);
            glommio::spawn_local(async move {
                if let Err(e) = answer(&shard, stream).await {
                    tracing::debug!(error = %e, "metrics connection failed");
                }
                open.set(open.get() - 1);
            })
            .detach();
        }
    })
    .detach();
}

async fn answer(shard: &Shard, mut stream: TcpStream) -> std::io::Result<()> {
    let head = futures_lite::future::or(read_head(&mut stream), async {
        glommio::timer::sleep(REQUEST_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request head timed out",
        ))
    })
    .await?;
    let (status, content_type, body) = route(shard, &head).await;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    futures_lite::future::or(
        async {
            stream.write_all(response.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            stream.flush().await
        },
        async {
            glommio::timer::sleep(RESPONSE_TIMEOUT).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response not taken",
            ))
        },
    )
    .await
}

/// Reads up to the end of the request head (a blank line), at most [`REQUEST_HEAD_MAX`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > REQUEST_HEAD_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// (status line, content type, body) for a request head.
async fn route(shard: &Shard, head: &str) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or("/"),
    );
    let path = target.split('?').next().unwrap_or("/");
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            let snapshots = shard.metrics_all().await;
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(&snapshots),
            )
        }
        "/health" => ("200 OK", TEXT, "ok\n".into()),
        "/ready" => {
            let snapshots = shard.metrics_all().await;
            let offline: usize = snapshots.iter().map(|s| s.offline).sum();
            if snapshots.len() < shard.shards() {
                (
                    "503 Service Unavailable",
                    TEXT,
                    "not ready: a shard did not answer\n".into(),
                )
            } else if offline > 0 {
                (
                    "503 Service Unavailable",
                    TEXT,
                    format!("not ready: {offline} partitions offline\n"),
                )
            } else {
                ("200 OK", TEXT, "ready\n".into())
            }
        }
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /health or /ready\n".into(),
        ),
    }
}
