//! The classic (pre-KIP-848) Kafka consumer-group coordinator.
//!
//! Two layers:
//! - [`Coordinator`], a sans-IO state machine: no clock, no tasks, no I/O. Time is passed in as
//!   `now_ms`; requests that must wait (JoinGroup until the rebalance completes, SyncGroup until
//!   the leader's assignment arrives) are *parked* under a caller-chosen [`Ticket`], and every
//!   operation returns the responses that became ready as `Vec<(Ticket, Outcome)>`, the
//!   caller's own included when it is answered at once. Deterministic, so tests and proptests
//!   drive it directly.
//! - [`GroupService`], the shard-local async wrapper: it owns a `RefCell<Coordinator>`, turns
//!   tickets into awaited futures, and runs the timers with `glommio::timer::sleep`.
//!
//! Committed offsets live in [`crate::groups::OffsetStore`]; this module only decides whether a
//! commit is allowed ([`Coordinator::validate_commit`]). Membership is in memory: after a
//! restart members get `UNKNOWN_MEMBER_ID` and simply join again.
//!
//! # The state machine of one group
//!
//! ```text
//!             first member joins                       all members re-joined, or
//!   Empty ─────────────────────────▶ PreparingRebalance ── max rebalance timeout, or ──┐
//!     ▲      (initial delay)              ▲   ▲   ▲          initial delay ran out     │
//!     │                                   │   │   │                                    ▼
//!     │ no member left       member joins/leaves/ │   └──── join/leave/expiry ─ CompletingRebalance
//!     └─────────────── (any)  expires, leader     │         (parked SyncGroups get 27)    │
//!                             re-joins, metadata  │                                       │ leader's
//!                             changes             │                                       │ SyncGroup
//!                                             Stable ◀────────────────────────────────────┘
//! ```
//!
//! - **Empty**: no members. Only "simple" commits (`generation < 0`) are accepted.
//! - **PreparingRebalance**: JoinGroup requests are parked. The join phase completes when every
//!   known member (and every KIP-394 pending member) has re-joined, or at the largest rebalance
//!   timeout of the members; members that did not re-join are dropped. Coming from Empty, the
//!   phase first waits [`CoordinatorConfig::initial_rebalance_delay_ms`], extended by the same
//!   delay while new members keep arriving, bounded by the rebalance timeout. Heartbeats answer
//!   `REBALANCE_IN_PROGRESS`, which is how members learn to re-join.
//! - **CompletingRebalance**: generation incremented, protocol chosen by votes, every parked
//!   JoinGroup answered (only the leader gets the member list). SyncGroups of followers are
//!   parked until the leader's SyncGroup brings the assignment. Members that send no SyncGroup
//!   within the rebalance timeout are removed and a new rebalance starts.
//! - **Stable**: assignments stored; SyncGroup answers at once; a follower re-joining with the
//!   same metadata gets the current generation at once; the leader re-joining, or anyone with
//!   new metadata, starts a rebalance.
//! - **Dead**: reported for groups this coordinator does not know.
//!
//! Every member has a session deadline, reset by each JoinGroup, SyncGroup and Heartbeat;
//! a member whose JoinGroup or SyncGroup is parked is kept alive (its request is timed by the
//! rebalance instead). Session expiry removes the member like a LeaveGroup would.
//!
//! Static members (KIP-345, `group_instance_id`) are supported simply: a JoinGroup with a known
//! instance id and no member id replaces the old member (whose parked requests get
//! `FENCED_INSTANCE_ID`) and always rebalances; a request naming an instance id with a member
//! id other than the current one gets `FENCED_INSTANCE_ID`. Static members that do not re-join
//! in time are dropped like dynamic ones.
//!
//! Every collection is bounded by [`CoordinatorConfig`]: groups, members per group, protocols
//! per member, metadata and assignment bytes. A request past a bound gets an error code; no
//! bound is enforced by panicking.

mod machine;
mod service;
#[cfg(test)]
mod tests;

pub use machine::Coordinator;
pub use service::{GroupService, TIMER_INTERVAL_MAX};

/// Kafka error codes the coordinator answers with.
pub use tidelog_wire::kafka::code as codes;

/// Bounds and timings of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Smallest session timeout accepted (Kafka `group.min.session.timeout.ms`, 6,000 there;
    /// 1,000 here so that consumers configured for fast failure detection, e.g.
    /// `session.timeout.ms=3000`, join instead of failing with INVALID_SESSION_TIMEOUT: a
    /// heartbeat costs the coordinator one in-memory lookup).
    pub session_timeout_ms_min: i32,
    /// Largest session timeout accepted (Kafka `group.max.session.timeout.ms`).
    pub session_timeout_ms_max: i32,
    /// How long the first rebalance of an Empty group waits for more members (Kafka
    /// `group.initial.rebalance.delay.ms`, 3000 there; short here because our clients join
    /// together or not at all, and 0 completes the first join at once).
    pub initial_rebalance_delay_ms: u64,
    /// Most groups held at once. Idle Empty groups are evicted to make room.
    pub groups_max: usize,
    /// Most members (joined plus KIP-394 pending) per group.
    pub members_per_group_max: usize,
    /// Most protocols one member may offer.
    pub protocols_per_member_max: usize,
    /// Most metadata bytes one member may send, summed over its protocols.
    pub metadata_bytes_max: usize,
    /// Most assignment bytes per member in the leader's SyncGroup.
    pub assignment_bytes_max: usize,
    /// Longest group id, member id, instance id, protocol type or protocol name.
    pub name_bytes_max: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 300,
            groups_max: 10_000,
            members_per_group_max: 1_000,
            protocols_per_member_max: 32,
            metadata_bytes_max: 256 << 10,
            assignment_bytes_max: 1 << 20,
            name_bytes_max: crate::groups::GROUP_BYTES_MAX,
        }
    }
}

/// The caller's name for a parked JoinGroup or SyncGroup. Unique among parked requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// The state of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Collecting JoinGroups.
    PreparingRebalance,
    /// Waiting for the leader's SyncGroup.
    CompletingRebalance,
    /// Assignment distributed.
    Stable,
    /// Unknown to this coordinator.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group.
    pub group_id: String,
    /// Empty for a new member.
    pub member_id: String,
    /// KIP-345 static membership (v5+).
    pub group_instance_id: Option<String>,
    /// E.g. "consumer".
    pub protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v1+); pass a value ≤ 0 (or the session timeout) for v0.
    pub rebalance_timeout_ms: i32,
    /// The client's `client.id` from the request header.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// The JoinGroup version: v4+ new members get `MEMBER_ID_REQUIRED` first (KIP-394).
    pub version: i16,
}

/// A SyncGroup request, any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation: i32,
    /// The member.
    pub member_id: String,
    /// KIP-345 static membership (v3+).
    pub group_instance_id: Option<String>,
    /// v5+: must match the group's when present.
    pub protocol_type: Option<String>,
    /// v5+: must match the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's `(member_id, assignment)`; empty from followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// The member.
    pub member_id: String,
    /// Its instance id (JoinGroup v5+).
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// A [`codes`] value.
    pub error: i16,
    /// The new generation, -1 on error.
    pub generation: i32,
    /// The group's protocol type (v7+).
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member's id (the generated one for `MEMBER_ID_REQUIRED`).
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for followers.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// An error response.
    pub fn error(error: i16, member_id: &str) -> Self {
        JoinResponse {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// A [`codes`] value.
    pub error: i16,
    /// The group's protocol type (v5+).
    pub protocol_type: Option<String>,
    /// The group's protocol (v5+).
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Vec<u8>,
}

impl SyncResponse {
    /// An error response.
    pub fn error(error: i16) -> Self {
        SyncResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Vec::new(),
        }
    }
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer to a JoinGroup.
    Join(JoinResponse),
    /// Answer to a SyncGroup.
    Sync(SyncResponse),
}

/// One member of a LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    /// The member; may be empty when `group_instance_id` names it (v3+).
    pub member_id: String,
    /// KIP-345 static membership.
    pub group_instance_id: Option<String>,
}

/// The result of a LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResult {
    /// Top-level error (v0–2 report the first member's code instead).
    pub error: i16,
    /// One code per requested member, in request order.
    pub members: Vec<i16>,
    /// Parked requests answered because of the leave.
    pub ready: Vec<(Ticket, Outcome)>,
}

/// One member in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member.
    pub member_id: String,
    /// Its instance id.
    pub group_instance_id: Option<String>,
    /// Its client id.
    pub client_id: String,
    /// Its client host.
    pub client_host: String,
    /// Its metadata for the chosen protocol (Stable only, else empty).
    pub metadata: Vec<u8>,
    /// Its assignment (Stable only, else empty).
    pub assignment: Vec<u8>,
}

/// A group in DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group_id: String,
    /// Its state; [`GroupState::Dead`] when unknown.
    pub state: GroupState,
    /// Its protocol type, empty when none.
    pub protocol_type: String,
    /// Its chosen protocol (Stable only, else empty).
    pub protocol_name: String,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

/// A group in ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group_id: String,
    /// Its protocol type, empty when none.
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}
