//! The write head of the active segment: an aligned buffer in front of O_DIRECT writes.
//!
//! Appended bytes are copied once into a [`WRITE_BUFFER_BYTES`] aligned buffer. A full buffer
//! is handed to the kernel whole, and up to [`WRITES_IN_FLIGHT_MAX`] such writes run at once.
//! A flush hands over the filled part rounded up to the page; the partial last page is copied
//! into the next buffer (at most one page) and written again with the data that follows it.
//! Two writes touching the same page are never in flight together: the second waits for the
//! first, so the later content always wins.
//!
//! Writes complete in submission order as far as the log is concerned: they are awaited
//! front to back, and only a completed prefix of the file counts as written. Awaiting is done
//! in place (the future stays queued until it is ready), so a cancelled caller never drops a
//! write that the kernel is still doing. The queue of writes in flight ([`InFlightWrites`])
//! is shared, so a sync waits for its writes outside the write gate while appends go on.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use crate::sync::Event;

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

/// The writes of one segment handed to the kernel and not yet seen complete, shared by the
/// writer (which adds them, under the write gate) and whoever waits for them: an appender
/// over the in-flight bound, or a sync outside the gate, so that waiting for the disk never
/// holds up appends.
///
/// One waiter at a time *drives*: it polls the oldest write's future until it completes,
/// records it, and lets the others know ([`Event`]); the others wait for that news and
/// check again. A driver that is dropped half-way hands over (the next waiter drives the
/// same future, which stays queued), so a cancelled caller never drops a write the kernel
/// is still doing. Writes complete front to back as far as the log is concerned: only a
/// completed prefix of the file counts as written.
pub(crate) struct InFlightWrites<F: StorageFile> {
    queue: RefCell<VecDeque<InFlight<F>>>,
    /// Every byte below this has been written by a completed write.
    completed_end: Cell<u64>,
    /// (logical end of a batch, offset after it) for batches not yet completely written.
    pending: RefCell<VecDeque<(u64, u64)>>,
    written_offset: Cell<u64>,
    /// The first failed write's error (kind and text): every later waiter gets it too.
    failed: RefCell<Option<(io::ErrorKind, String)>>,
    driving: Cell<bool>,
    progress: Event,
}

/// Marks the driver; dropping it (done or cancelled) lets the next waiter take over.
struct Driving<'a, F: StorageFile>(&'a InFlightWrites<F>);

impl<F: StorageFile> Drop for Driving<'_, F> {
    fn drop(&mut self) {
        self.0.driving.set(false);
        self.0.progress.notify();
    }
}

impl<F: StorageFile> InFlightWrites<F> {
    fn new(end: u64, next_offset: u64) -> Self {
        InFlightWrites {
            queue: RefCell::new(VecDeque::new()),
            completed_end: Cell::new(end),
            pending: RefCell::new(VecDeque::new()),
            written_offset: Cell::new(next_offset),
            failed: RefCell::new(None),
            driving: Cell::new(false),
            progress: Event::default(),
        }
    }

    /// Every byte below this is on the file (written, maybe not synced).
    pub(crate) fn completed_end(&self) -> u64 {
        self.completed_end.get()
    }

    /// Every offset below this is on the file.
    pub(crate) fn written_offset(&self) -> u64 {
        self.written_offset.get()
    }

    /// Writes queued (running, or finished and not yet recorded).
    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    fn failure(&self) -> Option<io::Error> {
        let failed = self.failed.borrow();
        failed
            .as_ref()
            .map(|(kind, text)| io::Error::new(*kind, text.clone()))
    }

    /// Waits until every write queued now has completed (and was recorded).
    pub(crate) async fn complete_through(&self, data_end: u64) -> io::Result<()> {
        self.complete_while(|w| w.completed_end.get() < data_end)
            .await
    }

    /// Waits until at most `max` writes are queued.
    pub(crate) async fn complete_down_to(&self, max: usize) -> io::Result<()> {
        self.complete_while(|w| w.len() > max).await
    }

    /// Completes the oldest writes while `waiting` holds and writes are queued: driving
    /// them when nobody else does, else waiting for the driver's news.
    async fn complete_while(&self, waiting: impl Fn(&Self) -> bool) -> io::Result<()> {
        loop {
            if let Some(error) = self.failure() {
                return Err(error);
            }
            if !waiting(self) || self.queue.borrow().is_empty() {
                return Ok(());
            }
            if self.driving.get() {
                let news = self.progress.listen();
                news.await;
                continue;
            }
            self.driving.set(true);
            let _driving = Driving(self);
            let result = poll_fn(|cx| {
                let mut queue = self.queue.borrow_mut();
                let Some(front) = queue.front_mut() else {
                    return Poll::Ready(None);
                };
                match &mut front.state {
                    WriteState::Running(future) => future.as_mut().poll(cx).map(Some),
                    WriteState::Finished(result) => {
                        Poll::Ready(Some(result.take().unwrap_or_else(|| {
                            Err(io::Error::other("write result taken twice"))
                        })))
                    }
                }
            })
            .await;
            if let Some(result) = result {
                self.record_front(result)?;
            }
        }
    }

    /// Takes the results of writes at the front that have already finished, without
    /// waiting. Not while another task drives (its waker must stay the one registered).
    pub(crate) fn reap(&self) -> io::Result<()> {
        if self.driving.get() {
            return Ok(());
        }
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            let result = {
                let mut queue = self.queue.borrow_mut();
                let Some(front) = queue.front_mut() else {
                    return Ok(());
                };
                match &mut front.state {
                    WriteState::Running(future) => match future.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => return Ok(()),
                    },
                    WriteState::Finished(result) => result
                        .take()
                        .unwrap_or_else(|| Err(io::Error::other("write result taken twice"))),
                }
            };
            self.record_front(result)?;
        }
    }

    /// Records the completion of the oldest write.
    fn record_front(&self, result: io::Result<usize>) -> io::Result<()> {
        let Some(front) = self.queue.borrow_mut().pop_front() else {
            return Ok(());
        };
        if let Err(error) = check_write(result, front.len) {
            *self.failed.borrow_mut() = Some((error.kind(), error.to_string()));
            self.progress.notify();
            return Err(error);
        }
        let completed = self.completed_end.get().max(front.data_end);
        self.completed_end.set(completed);
        let mut pending = self.pending.borrow_mut();
        while let Some(&(end, next_offset)) = pending.front() {
            if end > completed {
                break;
            }
            self.written_offset.set(next_offset);
            pending.pop_front();
        }
        drop(pending);
        self.progress.notify();
        Ok(())
    }
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
    in_flight: Rc<InFlightWrites<F>>,
    preallocated: u64,
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
            in_flight: Rc::new(InFlightWrites::new(end, next_offset)),
            preallocated,
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

    /// The writes in flight, to wait for outside the write gate.
    pub(crate) fn in_flight(&self) -> &Rc<InFlightWrites<F>> {
        &self.in_flight
    }

    /// Whether appended bytes wait in the buffer, not yet handed to the kernel.
    pub(crate) fn has_unsubmitted(&self) -> bool {
        self.end() > self.submitted_end
    }

    /// Logical end of the segment, written or not.
    pub(crate) fn end(&self) -> u64 {
        self.buf_pos + self.buf_len as u64
    }

    /// Every byte below this is on the file (written, maybe not synced).
    pub(crate) fn completed_end(&self) -> u64 {
        self.in_flight.completed_end()
    }

    /// Every offset below this is on the file.
    pub(crate) fn written_offset(&self) -> u64 {
        self.in_flight.written_offset()
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
        self.in_flight
            .pending
            .borrow_mut()
            .push_back((self.end(), next_offset));
        // A batch that ends where the data already completed is written (nothing to wait).
        let completed = self.in_flight.completed_end();
        if self.end() <= completed {
            self.in_flight.written_offset.set(next_offset);
            self.in_flight.pending.borrow_mut().pop_back();
        }
        Ok(())
    }

    /// Hands everything buffered and not yet submitted to the kernel, without waiting for
    /// it (except for an earlier write of the page it starts with, or when more than
    /// [`WRITES_IN_FLIGHT_MAX`] writes would be in flight). Returns the data end that is
    /// written once the writes in flight complete.
    pub(crate) async fn submit(&mut self) -> io::Result<u64> {
        let end = self.end();
        if end == self.submitted_end {
            return Ok(end);
        }
        // The previous write may cover the page this one starts with: let it land first.
        let overlaps = self
            .in_flight
            .queue
            .borrow()
            .back()
            .is_some_and(|w| w.range_end > self.buf_pos);
        if overlaps {
            self.in_flight.complete_through(self.submitted_end).await?;
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
        let waker = std::task::Waker::noop();
        let early = future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        let state = match early {
            Poll::Ready(result) => WriteState::Finished(Some(result)),
            Poll::Pending => WriteState::Running(future),
        };
        self.in_flight.queue.borrow_mut().push_back(InFlight {
            state,
            len: write_len,
            range_end: self.buf_pos + write_len as u64,
            data_end: end,
        });
        self.buf_pos += tail_start as u64;
        self.buf_len = tail_len;
        self.submitted_end = end;
        self.in_flight.reap()?;
        self.in_flight
            .complete_down_to(WRITES_IN_FLIGHT_MAX)
            .await?;
        Ok(end)
    }

    /// Submits and waits until everything appended is written.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        let end = self.submit().await?;
        self.in_flight.complete_through(end).await
    }

    /// Takes the results of writes that have finished, without waiting.
    pub(crate) fn reap(&self) -> io::Result<()> {
        self.in_flight.reap()
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
