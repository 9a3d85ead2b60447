//! Single-threaded coordination: a oneshot channel and a notifier. Both are `!Send`; they
//! live on one glommio executor like everything else of a client.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender was dropped (with or without sending).
    sender_gone: bool,
}

/// Sending half of a [`oneshot`] channel.
pub(crate) struct Sender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// Receiving half of a [`oneshot`] channel: resolves to `Some(value)`, or `None` if the sender
/// was dropped without sending.
pub(crate) struct Receiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// A channel carrying one value from one task to another.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (
        Sender {
            slot: Rc::clone(&slot),
        },
        Receiver { slot },
    )
}

impl<T> Sender<T> {
    /// Delivers `value`; it is dropped if the receiver is gone.
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // Drop marks the sender gone; the value is already there.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.slot.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.sender_gone {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Wakes every task waiting in [`Notify::notified`] when [`Notify::notify_all`] is called.
///
/// A waiter registers before it checks its condition again, so a notification between the
/// check and the wait is not lost: callers loop `{ let n = notify.notified(); if done { break }
/// n.await }`.
#[derive(Default)]
pub(crate) struct Notify {
    state: RefCell<NotifyState>,
}

#[derive(Default)]
struct NotifyState {
    generation: u64,
    wakers: Vec<Waker>,
}

impl Notify {
    /// Wakes all current waiters.
    pub(crate) fn notify_all(&self) {
        let wakers = {
            let mut s = self.state.borrow_mut();
            s.generation = s.generation.wrapping_add(1);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A future that completes at the next [`notify_all`](Self::notify_all) after this call.
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.state.borrow().generation,
        }
    }
}

/// Future of [`Notify::notified`].
pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.notify.state.borrow_mut();
        if s.generation != self.generation {
            return Poll::Ready(());
        }
        // Wakers accumulate only while nobody notifies; each waiter re-registers after a wake,
        // and a notification clears the list.
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(f).poll(&mut cx)
    }

    #[test]
    fn oneshot_delivers_or_reports_a_dropped_sender() {
        let (tx, mut rx) = oneshot::<u32>();
        assert!(poll_once(&mut rx).is_pending());
        tx.send(7);
        assert_eq!(poll_once(&mut rx), Poll::Ready(Some(7)));

        let (tx, mut rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(poll_once(&mut rx), Poll::Ready(None));
    }

    #[test]
    fn notify_wakes_waiters_registered_before_it() {
        let n = Notify::default();
        let mut before = n.notified();
        assert!(poll_once(&mut before).is_pending());
        n.notify_all();
        assert!(poll_once(&mut before).is_ready());
        let mut after = n.notified();
        assert!(poll_once(&mut after).is_pending());
    }
}
