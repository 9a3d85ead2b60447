//! The shard-local async face of the coordinator: parked requests become awaited futures.
//!
//! One [`GroupService`] per coordinator shard. It is `!Send` and uses no locks: the
//! [`Coordinator`] sits in a `RefCell` that is borrowed only between awaits. A parked JoinGroup
//! or SyncGroup gets a fresh [`Ticket`] and a one-shot slot; whichever call (another member's
//! request, a leave, the timer loop) makes its response ready fills the slot and wakes it.
//! If the awaiting future is dropped (the connection closed), its slot is removed; the
//! response, when it comes, is discarded. The coordinator itself keeps at most one parked
//! request per member and kind, so abandoned tickets cannot pile up there either.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{
    codes, Coordinator, CoordinatorConfig, GroupDescription, GroupListing, JoinRequest,
    JoinResponse, LeaveMember, LeaveResult, Outcome, SyncRequest, SyncResponse, Ticket,
};
use crate::io::Clock;
use crate::sync::Event;

/// Longest the timer loop sleeps without looking at the deadlines again.
pub const TIMER_INTERVAL_MAX: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Slot {
    outcome: RefCell<Option<Outcome>>,
    waker: RefCell<Option<Waker>>,
}

/// The classic group coordinator of one shard, for the connection code to await.
pub struct GroupService<C: Clock> {
    core: RefCell<Coordinator>,
    clock: C,
    next_ticket: Cell<u64>,
    waiters: RefCell<HashMap<Ticket, Rc<Slot>>>,
    /// Notified after every operation: deadlines may have moved earlier.
    changed: Event,
}

impl<C: Clock> std::fmt::Debug for GroupService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupService")
            .field("waiters", &self.waiters.borrow().len())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> GroupService<C> {
    /// A service with no groups. Member ids are seeded from the clock, so they differ across
    /// restarts.
    pub fn new(config: CoordinatorConfig, clock: C) -> Self {
        let seed = u64::try_from(clock.now_ms()).unwrap_or(0);
        GroupService {
            core: RefCell::new(Coordinator::new(config, seed)),
            clock,
            next_ticket: Cell::new(0),
            waiters: RefCell::new(HashMap::new()),
            changed: Event::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).unwrap_or(0)
    }

    fn ticket(&self) -> (Ticket, Rc<Slot>) {
        let ticket = Ticket(self.next_ticket.get());
        self.next_ticket.set(ticket.0.wrapping_add(1));
        let slot = Rc::new(Slot::default());
        self.waiters.borrow_mut().insert(ticket, Rc::clone(&slot));
        (ticket, slot)
    }

    /// Hands ready responses to their waiters; those whose waiter is gone are dropped.
    fn deliver(&self, ready: Vec<(Ticket, Outcome)>) {
        for (ticket, outcome) in ready {
            let slot = self.waiters.borrow_mut().remove(&ticket);
            if let Some(slot) = slot {
                *slot.outcome.borrow_mut() = Some(outcome);
                if let Some(waker) = slot.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
        }
        self.changed.notify();
    }

    fn wait(&self, ticket: Ticket, slot: Rc<Slot>) -> Wait<'_, C> {
        Wait {
            service: self,
            ticket,
            slot,
        }
    }

    /// JoinGroup: completes when the join phase does (or at once, see
    /// [`Coordinator::join`]).
    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        let (ticket, slot) = self.ticket();
        let ready = self.core.borrow_mut().join(self.now_ms(), ticket, request);
        self.deliver(ready);
        match self.wait(ticket, slot).await {
            Outcome::Join(response) => response,
            Outcome::Sync(_) => JoinResponse::error(codes::UNKNOWN_SERVER_ERROR, &member_id),
        }
    }

    /// SyncGroup: completes when the leader's assignment is there (or at once).
    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let (ticket, slot) = self.ticket();
        let ready = self.core.borrow_mut().sync(self.now_ms(), ticket, request);
        self.deliver(ready);
        match self.wait(ticket, slot).await {
            Outcome::Sync(response) => response,
            Outcome::Join(_) => SyncResponse::error(codes::UNKNOWN_SERVER_ERROR),
        }
    }

    /// Heartbeat; see [`Coordinator::heartbeat`].
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> i16 {
        let code = self.core.borrow_mut().heartbeat(
            self.now_ms(),
            group_id,
            generation,
            member_id,
            group_instance_id,
        );
        self.changed.notify();
        code
    }

    /// LeaveGroup; see [`Coordinator::leave`]. The parked requests it answers are delivered
    /// here; the returned [`LeaveResult::ready`] is empty.
    pub fn leave(&self, group_id: &str, members: &[LeaveMember]) -> LeaveResult {
        let mut result = self
            .core
            .borrow_mut()
            .leave(self.now_ms(), group_id, members);
        self.deliver(std::mem::take(&mut result.ready));
        result
    }

    /// OffsetCommit validation; see [`Coordinator::validate_commit`].
    ///
    /// # Errors
    /// The error code for every partition of the commit.
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), i16> {
        self.core
            .borrow()
            .validate_commit(group_id, generation, member_id, group_instance_id)
    }

    /// Drops the groups for which `doomed` holds ([`Coordinator::forget`]); their parked
    /// requests are answered NOT_COORDINATOR.
    pub fn forget(&self, doomed: impl Fn(&str) -> bool) {
        let ready = self.core.borrow_mut().forget(doomed);
        self.deliver(ready);
    }

    /// DescribeGroups for one group.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        self.core.borrow().describe(group_id)
    }

    /// ListGroups.
    pub fn list(&self) -> Vec<GroupListing> {
        self.core.borrow().list()
    }

    /// Requests still waiting for their response (tests, metrics).
    pub fn parked(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Runs the coordinator's timers until `stop` completes: sleeps until the next deadline
    /// (at most [`TIMER_INTERVAL_MAX`], and less when an operation may have moved it), then
    /// ticks and delivers. Spawn it once per service on the shard's executor.
    pub async fn run_timers(&self, stop: impl Future<Output = ()>) {
        futures_lite::future::or(self.timer_loop(), stop).await;
    }

    async fn timer_loop(&self) {
        loop {
            let now_ms = self.now_ms();
            let ready = self.core.borrow_mut().tick(now_ms);
            if !ready.is_empty() {
                self.deliver(ready);
            }
            let next = self.core.borrow().next_deadline();
            let nap = match next {
                Some(deadline) => Duration::from_millis(deadline.saturating_sub(now_ms)),
                None => TIMER_INTERVAL_MAX,
            }
            .min(TIMER_INTERVAL_MAX);
            if nap.is_zero() {
                // Due already (the clock moved during the tick): yield, then tick again.
                futures_lite::future::yield_now().await;
                continue;
            }
            let changed = self.changed.listen();
            futures_lite::future::or(changed, glommio::timer::sleep(nap)).await;
        }
    }
}

/// Awaits one ticket's slot; unregisters it when dropped unanswered.
struct Wait<'a, C: Clock> {
    service: &'a GroupService<C>,
    ticket: Ticket,
    slot: Rc<Slot>,
}

impl<C: Clock> Future for Wait<'_, C> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(outcome) = self.slot.outcome.borrow_mut().take() {
            return Poll::Ready(outcome);
        }
        *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<C: Clock> Drop for Wait<'_, C> {
    fn drop(&mut self) {
        // Answered already: `deliver` removed the entry. Otherwise forget the waiter; the
        // coordinator's response for this ticket will find nobody and be dropped.
        self.service.waiters.borrow_mut().remove(&self.ticket);
    }
}
