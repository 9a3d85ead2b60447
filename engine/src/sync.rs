//! Single-threaded async coordination for one shard: an event and a gate.
//!
//! Nothing here is `Send`; nothing here blocks a thread. They only order tasks of the same
//! executor, so they work under glommio and under the simulator's plain `block_on` alike.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A broadcast event: listeners created before a [`notify`](Event::notify) complete after it.
///
/// Use it like a condition variable: check the condition, and if it does not hold, create a
/// listener and await it, then check again. No await may sit between the check and
/// [`listen`](Event::listen), so no notification is lost.
#[derive(Debug, Default)]
pub struct Event {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    /// A future that completes at the next notification.
    pub fn listen(&self) -> Listener<'_> {
        Listener {
            event: self,
            generation: self.generation.get(),
        }
    }

    /// Wakes every current listener.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The future returned by [`Event::listen`].
#[derive(Debug)]
pub struct Listener<'a> {
    event: &'a Event,
    generation: u64,
}

impl Future for Listener<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.event.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A shard-local async gate: one holder at a time, others wait without blocking the thread.
/// It orders the write side of one partition (appends, flushes, rolls); readers never take it.
#[derive(Debug, Default)]
pub struct Gate {
    held: Cell<bool>,
    released: Event,
}

impl Gate {
    /// Waits until the gate is free and takes it.
    pub async fn enter(&self) -> GateGuard<'_> {
        loop {
            if !self.held.get() {
                self.held.set(true);
                return GateGuard { gate: self };
            }
            self.released.listen().await;
        }
    }
}

/// Holding the gate; leaving it on drop.
#[derive(Debug)]
pub struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.held.set(false);
        self.gate.released.notify();
    }
}

/// A shard-local shared/exclusive gate: any number of shared holders at once, or one
/// exclusive holder, which waits for the shared ones to leave and keeps new ones out. For
/// an internal log's snapshot (exclusive) against its ordinary writes (shared).
#[derive(Debug, Default)]
pub struct SharedGate {
    shared: Cell<usize>,
    exclusive: Cell<bool>,
    changed: Event,
}

impl SharedGate {
    /// Waits while an exclusive holder is in, then enters shared.
    pub async fn shared(&self) -> SharedGuard<'_> {
        while self.exclusive.get() {
            self.changed.listen().await;
        }
        self.shared.set(self.shared.get() + 1);
        SharedGuard { gate: self }
    }

    /// Enters exclusive (new shared holders wait from now on), then waits for the shared
    /// holders inside to leave. `None` when another exclusive holder is in.
    pub async fn exclusive(&self) -> Option<ExclusiveGuard<'_>> {
        if self.exclusive.get() {
            return None;
        }
        self.exclusive.set(true);
        let guard = ExclusiveGuard { gate: self };
        while self.shared.get() > 0 {
            self.changed.listen().await;
        }
        Some(guard)
    }

    /// [`exclusive`](Self::exclusive), waiting for another exclusive holder to leave first.
    pub async fn exclusive_wait(&self) -> ExclusiveGuard<'_> {
        loop {
            while self.exclusive.get() {
                self.changed.listen().await;
            }
            // No await since the check: the flag is still clear, so this enters.
            if let Some(guard) = self.exclusive().await {
                return guard;
            }
        }
    }
}

/// Holding a [`SharedGate`] shared; leaving it on drop.
#[derive(Debug)]
pub struct SharedGuard<'a> {
    gate: &'a SharedGate,
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.gate.shared.set(self.gate.shared.get() - 1);
        self.gate.changed.notify();
    }
}

/// Holding a [`SharedGate`] exclusive; leaving it on drop.
#[derive(Debug)]
pub struct ExclusiveGuard<'a> {
    gate: &'a SharedGate,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.gate.exclusive.set(false);
        self.gate.changed.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn an_exclusive_holder_waits_for_shared_ones_and_keeps_new_ones_out() {
        let gate = SharedGate::default();
        futures_lite::future::block_on(async {
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            let first = gate.shared().await;
            let second = gate.shared().await;
            let mut exclusive = std::pin::pin!(gate.exclusive());
            assert!(exclusive.as_mut().poll(&mut cx).is_pending());
            let mut late = std::pin::pin!(gate.shared());
            assert!(
                late.as_mut().poll(&mut cx).is_pending(),
                "new shared ones wait"
            );
            drop(first);
            assert!(exclusive.as_mut().poll(&mut cx).is_pending());
            drop(second);
            let Poll::Ready(Some(held)) = exclusive.as_mut().poll(&mut cx) else {
                panic!("exclusive once the shared holders left");
            };
            assert!(gate.exclusive().await.is_none(), "one exclusive holder");
            assert!(late.as_mut().poll(&mut cx).is_pending());
            drop(held);
            assert!(late.as_mut().poll(&mut cx).is_ready());
        });
    }

    #[test]
    fn listener_completes_only_after_notify() {
        let event = Event::default();
        let mut listener = std::pin::pin!(event.listen());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(listener.as_mut().poll(&mut cx).is_pending());
        event.notify();
        assert!(listener.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn gate_admits_one_holder_at_a_time() {
        let gate = Rc::new(Gate::default());
        futures_lite::future::block_on(async {
            let first = gate.enter().await;
            let mut second = std::pin::pin!(gate.enter());
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(second.as_mut().poll(&mut cx).is_pending());
            drop(first);
            assert!(second.as_mut().poll(&mut cx).is_ready());
        });
    }
}
