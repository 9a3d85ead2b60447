//! The write head of the active segment: an aligned buffer in front of O_DIRECT writes.
//!
//! Appended bytes are copied once into a [`WRITE_BUFFER_BYTES`] aligned buffer. A full buffer
//! is handed to the kernel whole, and up to [`WRITES_IN_FLIGHT_MAX`] such writes run at once.
//! A flush hands over the filled part rounded up to the page; the partial last page is copied
//! into the next buffer (at most one page) and written again with the data that follows it.
//! Two writes touching the same page are never in flight together: the second waits for the
//! first, so the later content always wins.
//!
//! Writes complete in submission order as far as the writer is concerned: it awaits them
//! front to back, and only a completed prefix of the file counts as written. Awaiting is done
//! in place (the future stays queued until it is ready), so a cancelled caller never drops a
//! write that the kernel is still doing.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use crate::io::{Sliceable, StorageFile};
use crate::limits::{IO_ALIGNMENT, WRITES_IN_FLIGHT_MAX, WRITE_BUFFER_BYTES};

pub(crate) fn align_down(value: u64) -> u64 {
    value - value % IO_ALIGNMENT as u64
}

pub(crate) fn align_up(value: u64) -> u64 {
    value.div_ceil(IO_ALIGNMENT as u64) * IO_ALIGNMENT as u64
}

enum WriteState<F: StorageFile> {
    Running(Pin<Box<F::WriteFuture>>),
    Finished(Option<io::Result<usize>>),
}

struct InFlight<F: StorageFile> {
    state: WriteState<F>,
    /// Bytes handed to the kernel by this write.
    len: usize,
    /// First file position after this write's range (aligned).
    range_end: u64,
    /// Logical end of the data this write makes written.
    data_end: u64,
}

/// The write head of one segment file.
pub(crate) struct SegmentWriter<F: StorageFile> {
    file: F,
    buf: F::WriteBuf,
    /// File position of `buf[0]`; always aligned.
    buf_pos: u64,
    /// Valid bytes in `buf`.
    buf_len: usize,
    /// Logical end covered by submitted writes.
    submitted_end: u64,
    in_flight: VecDeque<InFlight<F>>,
    /// Every byte below this has been written by a completed write.
    completed_end: u64,
    preallocated: u64,
    /// (logical end of a batch, offset after it) for batches not yet completely written.
    pending: VecDeque<(u64, u64)>,
    written_offset: u64,
    /// Views of the buffers submitted since the last [`take_submitted`]: (file position of
    /// the first byte, the data bytes), for the batch cache.
    submitted: Vec<(u64, F::ReadBuf)>,
}

impl<F: StorageFile> SegmentWriter<F> {
    /// A writer that continues a segment whose valid bytes end at `end`; `tail` holds the
    /// bytes of the partial page before `end` (`end % IO_ALIGNMENT` of them).
    pub(crate) fn new(file: F, end: u64, tail: &[u8], preallocated: u64, next_offset: u64) -> Self {
        let buf_pos = align_down(end);
        let buf_len = (end - buf_pos) as usize;
        assert_eq!(
            tail.len(),
            buf_len,
            "tail must be the partial page before the end"
        );
        let mut buf = file.alloc_write_buf(WRITE_BUFFER_BYTES);
        buf.as_mut()[..buf_len].copy_from_slice(tail);
        SegmentWriter {
            file,
            buf,
            buf_pos,
            buf_len,
            submitted_end: end,
            in_flight: VecDeque::new(),
            completed_end: end,
            preallocated,
            pending: VecDeque::new(),
            written_offset: next_offset,
            submitted: Vec::new(),
        }
    }

    /// The buffers handed to the kernel since the last call, as read-only views of their
    /// data (file position of the first byte, bytes), oldest first.
    pub(crate) fn take_submitted(&mut self) -> Vec<(u64, F::ReadBuf)> {
        std::mem::take(&mut self.submitted)
    }

    pub(crate) fn file(&self) -> &F {
        &self.file
    }

    /// Logical end of the segment, written or not.
    pub(crate) fn end(&self) -> u64 {
        self.buf_pos + self.buf_len as u64
    }

    /// Every byte below this is on the file (written, maybe not synced).
    pub(crate) fn completed_end(&self) -> u64 {
        self.completed_end
    }

    /// Every offset below this is on the file.
    pub(crate) fn written_offset(&self) -> u64 {
        self.written_offset
    }

    /// Reserves file space so that `end` bytes fit, in steps of `step`, but not past
    /// `limit` unless `end` itself is past it.
    pub(crate) async fn reserve(&mut self, end: u64, step: u64, limit: u64) -> io::Result<()> {
        if end <= self.preallocated {
            return Ok(());
        }
        let wanted = align_up(end).saturating_add(step);
        let target = wanted.min(align_up(limit)).max(align_up(end));
        self.file.preallocate(target).await?;
        self.preallocated = target;
        Ok(())
    }

    /// Copies one batch, given in pieces (in order), into the buffer, writing out full
    /// buffers as they fill: the one copy of its bytes on the way to the disk.
    pub(crate) async fn append_parts(
        &mut self,
        parts: &[&[u8]],
        next_offset: u64,
    ) -> io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let room = WRITE_BUFFER_BYTES - self.buf_len;
                let n = room.min(rest.len());
                self.buf.as_mut()[self.buf_len..self.buf_len + n].copy_from_slice(&rest[..n]);
                self.buf_len += n;
                rest = &rest[n..];
                if self.buf_len == WRITE_BUFFER_BYTES {
                    self.submit().await?;
                }
            }
        }
        self.pending.push_back((self.end(), next_offset));
        Ok(())
    }

    /// Hands everything buffered and not yet submitted to the kernel.
    pub(crate) async fn submit(&mut self) -> io::Result<()> {
        let end = self.end();
        if end == self.submitted_end {
            return Ok(());
        }
        // The previous write may cover the page this one starts with: let it land first.
        if self
            .in_flight
            .back()
            .is_some_and(|w| w.range_end > self.buf_pos)
        {
            self.complete_all().await?;
        }
        let write_len = align_up(self.buf_len as u64) as usize;
        let tail_start = align_down(self.buf_len as u64) as usize;
        let tail_len = self.buf_len - tail_start;
        let mut next_buf = self.file.alloc_write_buf(WRITE_BUFFER_BYTES);
        next_buf.as_mut()[..tail_len].copy_from_slice(&self.buf.as_ref()[tail_start..self.buf_len]);
        let mut full = std::mem::replace(&mut self.buf, next_buf);
        // Bytes past the data in the last page are zero so recovery sees a clean end.
        full.as_mut()[self.buf_len..write_len].fill(0);
        F::trim_write_buf(&mut full, write_len);
        let (view, future) = self.file.write_shared_at(full, self.buf_pos);
        self.submitted
            .push((self.buf_pos, view.slice_of(0..self.buf_len)));
        let mut future = Box::pin(future);
        // Poll once so the write is submitted now rather than when it is awaited.
        let early = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
        let state = match early {
            Poll::Ready(result) => WriteState::Finished(Some(result)),
            Poll::Pending => WriteState::Running(future),
        };
        self.in_flight.push_back(InFlight {
            state,
            len: write_len,
            range_end: self.buf_pos + write_len as u64,
            data_end: end,
        });
        self.buf_pos += tail_start as u64;
        self.buf_len = tail_len;
        self.submitted_end = end;
        self.reap().await?;
        while self.in_flight.len() > WRITES_IN_FLIGHT_MAX {
            self.complete_one().await?;
        }
        Ok(())
    }

    /// Submits and waits until everything appended is written.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.submit().await?;
        self.complete_all().await
    }

    async fn complete_all(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.complete_one().await?;
        }
        Ok(())
    }

    /// Takes the results of writes at the front that have already finished, without waiting.
    async fn reap(&mut self) -> io::Result<()> {
        loop {
            let Some(front) = self.in_flight.front_mut() else {
                return Ok(());
            };
            if let WriteState::Running(future) = &mut front.state {
                match poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
                    Poll::Ready(result) => front.state = WriteState::Finished(Some(result)),
                    Poll::Pending => return Ok(()),
                }
            }
            self.complete_one().await?;
        }
    }

    async fn complete_one(&mut self) -> io::Result<()> {
        let Some(front) = self.in_flight.front_mut() else {
            return Ok(());
        };
        let result = match &mut front.state {
            WriteState::Running(future) => poll_fn(|cx| future.as_mut().poll(cx)).await,
            WriteState::Finished(result) => result
                .take()
                .unwrap_or_else(|| Err(io::Error::other("write result taken twice"))),
        };
        let len = front.len;
        let data_end = front.data_end;
        self.in_flight.pop_front();
        check_write(result, len)?;
        self.on_completed(data_end);
        Ok(())
    }

    fn on_completed(&mut self, data_end: u64) {
        self.completed_end = self.completed_end.max(data_end);
        while let Some(&(end, next_offset)) = self.pending.front() {
            if end > self.completed_end {
                break;
            }
            self.written_offset = next_offset;
            self.pending.pop_front();
        }
    }
}

fn check_write(result: io::Result<usize>, expected: usize) -> io::Result<()> {
    let written = result?;
    if written == expected {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short direct write: {written} of {expected} bytes"),
        ))
    }
}
