//! A shard's budget for the memory of disk reads.
//!
//! A disk read allocates its buffer (up to a fetch's size plus the index slack), and the
//! response keeps it, uncopied, until the peer has taken every byte: a stalled consumer, or
//! many of them, would otherwise hold any amount of memory. Every disk read of a partition log
//! takes a [`ReadPermit`] for its buffer from the shard's [`ReadMemory`] first; the permit
//! travels with the read (its clones with the chunks' holders) and gives the bytes back when
//! the last one drops. Tail-cache reads allocate nothing and take nothing.
//!
//! Deadlock freedom: a reader that already holds read memory (a response with partitions
//! read) never waits for more ([`MemoryWait::IfFree`]): it goes without, so every waiter
//! holds nothing and every holder finishes. Waiters are served first come, first served, so
//! a large read is not starved by small ones. A read-ahead (memory parked for a consumer's
//! next fetch) only takes what leaves half the budget free ([`ReadMemory::try_take_leaving`]),
//! so parked read-aheads can never starve reads.
//!
//! Shard-local: `!Send`, shared by `Rc`, no lock.

use std::cell::Cell;
use std::rc::Rc;

use crate::sync::Event;

/// Whether a disk read may wait for the shard's read memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWait {
    /// Wait until the budget has room (the reader holds no read memory of its own).
    Wait,
    /// Go without when the budget has no room now ([`LogError::MemoryBusy`](crate::error::LogError)):
    /// the reader holds read memory already and must not wait while holding it.
    IfFree,
}

struct Inner {
    capacity: usize,
    available: Cell<usize>,
    /// First-come-first-served tickets: the next to hand out, and the one served now.
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    /// Tickets whose waiters were cancelled before their turn (skipped when it comes).
    cancelled: std::cell::RefCell<std::collections::BTreeSet<u64>>,
    released: Event,
    waits: Cell<u64>,
    refusals: Cell<u64>,
}

impl Inner {
    /// The served ticket is done (taken or cancelled): serve the next one still waiting.
    fn advance(&self) {
        let mut next = self.serving.get() + 1;
        {
            let mut cancelled = self.cancelled.borrow_mut();
            while cancelled.remove(&next) {
                next += 1;
            }
        }
        self.serving.set(next);
        // The next waiter may fit in what is left.
        self.released.notify();
    }

    fn give_back(&self, bytes: usize) {
        self.available.set(self.available.get() + bytes);
        self.released.notify();
    }
}

/// Counters of a [`ReadMemory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadMemoryStats {
    /// The budget.
    pub capacity: usize,
    /// Bytes held by reads now.
    pub held: usize,
    /// Reads that had to wait for room.
    pub waits: u64,
    /// Reads that went without (a reader holding memory, or a read-ahead).
    pub refusals: u64,
}

/// A shard's read-memory budget (module docs). Cloning shares it.
#[derive(Clone)]
pub struct ReadMemory {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for ReadMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadMemory")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Held {
    inner: Rc<Inner>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.inner.give_back(self.bytes);
    }
}

/// Bytes of a [`ReadMemory`] held by one read; given back when the last clone drops.
#[derive(Clone, Default)]
pub struct ReadPermit(Option<Rc<Held>>);

impl std::fmt::Debug for ReadPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadPermit({} bytes)", self.bytes())
    }
}

impl ReadPermit {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |held| held.bytes)
    }
}

impl ReadMemory {
    /// A budget of `capacity` bytes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ReadMemory {
            inner: Rc::new(Inner {
                capacity,
                available: Cell::new(capacity),
                next_ticket: Cell::new(0),
                serving: Cell::new(0),
                cancelled: Default::default(),
                released: Event::default(),
                waits: Cell::new(0),
                refusals: Cell::new(0),
            }),
        }
    }

    fn permit(&self, bytes: usize) -> ReadPermit {
        let inner = &self.inner;
        inner.available.set(inner.available.get() - bytes);
        ReadPermit(Some(Rc::new(Held {
            inner: Rc::clone(inner),
            bytes,
        })))
    }

    /// The most one read takes: half the budget, which parked read-aheads always leave free,
    /// so a waiter at the head of the queue is served once the reads in flight finish.
    fn largest(&self) -> usize {
        (self.inner.capacity / 2).max(1)
    }

    /// `bytes` (at most half the budget), waiting for room behind earlier waiters.
    pub async fn take(&self, bytes: usize) -> ReadPermit {
        let inner = &self.inner;
        let bytes = bytes.min(self.largest());
        let ticket = inner.next_ticket.get();
        inner.next_ticket.set(ticket + 1);
        // Dropped with the future if the read is cancelled while queued.
        let mut turn = Turn {
            inner,
            ticket,
            done: false,
        };
        let mut waited = false;
        loop {
            if inner.serving.get() == ticket && inner.available.get() >= bytes {
                turn.done = true;
                inner.advance();
                if waited {
                    inner.waits.set(inner.waits.get() + 1);
                }
                return self.permit(bytes);
            }
            waited = true;
            // No await between the check and the listen: no release is missed.
            inner.released.listen().await;
        }
    }

    /// `bytes` now, or `None` when the budget has no room or others wait for it.
    pub fn try_take(&self, bytes: usize) -> Option<ReadPermit> {
        self.try_take_leaving(bytes, 0)
    }

    /// `bytes` now if at least `leave` bytes stay free afterwards and nobody waits.
    pub fn try_take_leaving(&self, bytes: usize, leave: usize) -> Option<ReadPermit> {
        let inner = &self.inner;
        let bytes = bytes.min(self.largest());
        let nobody_waits = inner.serving.get() == inner.next_ticket.get();
        if nobody_waits && inner.available.get() >= bytes.saturating_add(leave) {
            return Some(self.permit(bytes));
        }
        inner.refusals.set(inner.refusals.get() + 1);
        None
    }

    /// The budget.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> ReadMemoryStats {
        let inner = &self.inner;
        ReadMemoryStats {
            capacity: inner.capacity,
            held: inner.capacity - inner.available.get(),
            waits: inner.waits.get(),
            refusals: inner.refusals.get(),
        }
    }
}

/// A queued waiter's place: a waiter cancelled before its turn passes it on, so the queue
/// never stalls behind a read that is gone.
struct Turn<'a> {
    inner: &'a Inner,
    ticket: u64,
    done: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = self.inner;
        if inner.serving.get() == self.ticket {
            inner.advance();
        } else {
            inner.cancelled.borrow_mut().insert(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    use futures_lite::future::block_on;

    use super::*;

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        future.poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn permits_give_their_bytes_back_when_the_last_clone_drops() {
        let memory = ReadMemory::new(200);
        let permit = block_on(memory.take(60));
        let clone = permit.clone();
        assert_eq!(memory.stats().held, 60);
        drop(permit);
        assert_eq!(memory.stats().held, 60, "a clone still holds the bytes");
        drop(clone);
        assert_eq!(memory.stats().held, 0);
    }

    #[test]
    fn a_reader_holding_memory_goes_without_instead_of_waiting() {
        let memory = ReadMemory::new(200);
        let _held = memory.try_take(100).expect("room");
        let _more = memory.try_take(70).expect("room");
        assert!(memory.try_take(40).is_none());
        assert!(memory.try_take(30).is_some());
        assert_eq!(memory.stats().refusals, 1);
    }

    #[test]
    fn read_aheads_leave_half_the_budget_free() {
        let memory = ReadMemory::new(100);
        let ahead = memory.try_take_leaving(40, 50).expect("room for one");
        assert!(
            memory.try_take_leaving(40, 50).is_none(),
            "would leave 20 free"
        );
        drop(ahead);
        assert!(memory.try_take_leaving(40, 50).is_some());
    }

    #[test]
    fn waiters_are_served_in_order_and_a_cancelled_one_passes_its_turn() {
        let memory = ReadMemory::new(200);
        let held = memory.try_take(100).expect("half of it");
        let also_held = memory.try_take(100).expect("the other half");
        let mut big = pin!(memory.take(80));
        assert!(poll_once(big.as_mut()).is_pending());
        let mut cancelled = Box::pin(memory.take(10));
        assert!(poll_once(cancelled.as_mut()).is_pending());
        let mut small = pin!(memory.take(10));
        assert!(poll_once(small.as_mut()).is_pending());
        assert!(memory.try_take(1).is_none(), "nobody jumps the queue");
        drop(also_held);
        drop(held);
        let Poll::Ready(big) = poll_once(big.as_mut()) else {
            panic!("the first waiter is served first");
        };
        drop(cancelled);
        let Poll::Ready(small) = poll_once(small.as_mut()) else {
            panic!("a cancelled waiter must not stall the queue");
        };
        assert_eq!(memory.stats().held, 90);
        drop((big, small));
        assert_eq!(memory.stats().held, 0);
        assert!(memory.try_take(100).is_some(), "the queue is empty again");
    }

    #[test]
    fn a_read_larger_than_half_the_budget_takes_half_and_is_served_beside_read_aheads() {
        let memory = ReadMemory::new(100);
        let parked = memory.try_take_leaving(50, 50).expect("a read-ahead");
        let permit = block_on(memory.take(1000));
        assert_eq!(permit.bytes(), 50, "never more than read-aheads leave free");
        drop((parked, permit));
        assert_eq!(memory.stats().held, 0);
    }
}
