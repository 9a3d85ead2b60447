//! The sans-IO coordinator: every group's state machine, its timers, and the parked requests.
//! See the module documentation of [`crate::coordinator`] for the states.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::codes;
use super::{
    CoordinatorConfig, GroupDescription, GroupListing, GroupState, JoinMember, JoinRequest,
    JoinResponse, LeaveMember, LeaveResult, MemberDescription, Outcome, SyncRequest, SyncResponse,
    Ticket,
};

type Ready = Vec<(Ticket, Outcome)>;

/// Characters of the client id kept in a generated member id, so that ids stay short.
const MEMBER_ID_CLIENT_CHARS_MAX: usize = 64;
/// How long a member id handed out with MEMBER_ID_REQUIRED waits for its client to join with
/// it. Clients rejoin at once; waiting the whole session timeout (up to 30 minutes) let one
/// JoinGroup per name hold a group slot that long.
const PENDING_MEMBER_WAIT_MS: u64 = 30_000;

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    session_deadline_ms: u64,
    /// A parked JoinGroup: the member has (re-)joined the current rebalance.
    join: Option<Ticket>,
    /// A parked SyncGroup.
    sync: Option<Ticket>,
    /// Sent a SyncGroup for the current generation.
    synced: bool,
}

impl Member {
    fn metadata_for(&self, protocol: Option<&str>) -> Vec<u8> {
        protocol
            .and_then(|name| self.protocols.iter().find(|(n, _)| n == name))
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Vec<u8>)]) -> bool {
        self.protocols == protocols
    }

    /// A member with a parked request is timed by the rebalance, not by its session.
    fn session_armed(&self) -> bool {
        self.join.is_none() && self.sync.is_none()
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// KIP-394 members told `MEMBER_ID_REQUIRED`, with their deadline to re-join.
    pending: BTreeMap<String, u64>,
    /// Static members: instance id to member id.
    instances: HashMap<String, String>,
    /// When the join phase ends (PreparingRebalance only).
    join_deadline_ms: Option<u64>,
    /// During the initial delay: how much more the delay may still be extended.
    initial_remaining_ms: Option<u64>,
    /// A member was added since the initial delay was last armed.
    new_member_added: bool,
    /// When members that sent no SyncGroup are removed.
    sync_deadline_ms: Option<u64>,
    /// The deadline under which the group sits in the coordinator's timer set.
    armed_ms: Option<u64>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            instances: HashMap::new(),
            join_deadline_ms: None,
            initial_remaining_ms: None,
            new_member_added: false,
            sync_deadline_ms: None,
            armed_ms: None,
        }
    }

    fn idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join.is_some())
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        let join = if self.state == GroupState::PreparingRebalance {
            self.join_deadline_ms
        } else {
            None
        };
        let sessions = self
            .members
            .values()
            .filter(|m| m.session_armed())
            .map(|m| m.session_deadline_ms);
        join.into_iter()
            .chain(self.sync_deadline_ms)
            .chain(self.pending.values().copied())
            .chain(sessions)
            .min()
    }

    /// Whether a joiner offering `protocols` of `protocol_type` fits the group: the same type,
    /// and one protocol every other member supports (KAFKA.md §3 JoinGroup 1).
    fn supports(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Vec<u8>)],
    ) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes
    /// for its most preferred; most votes wins, ties going to the earlier candidate.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find_map(|(n, _)| candidates.iter().position(|c| c == n));
            if let Some(index) = choice {
                if let Some(count) = votes.get_mut(index) {
                    *count += 1;
                }
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (index, count) in votes.iter().enumerate() {
            if best.is_none_or(|(_, top)| *count > top) {
                best = Some((index, *count));
            }
        }
        match best.and_then(|(index, _)| candidates.get(index)) {
            Some(name) => Some((*name).to_owned()),
            // Unreachable through `supports`, but never panic: fall back to a preference.
            None => first.protocols.first().map(|(n, _)| n.clone()),
        }
    }

    /// Kafka's `validateMember`: the member exists and its instance id matches.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(owner) if owner != member_id => return Err(codes::FENCED_INSTANCE_ID),
                Some(_) => {}
                None => return Err(codes::UNKNOWN_MEMBER_ID),
            }
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(codes::UNKNOWN_MEMBER_ID)?;
        if member.instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return Err(codes::FENCED_INSTANCE_ID);
        }
        Ok(())
    }

    /// The JoinGroup answer of `member_id` for the current generation.
    fn join_result(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinMember {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(self.protocol_name.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: codes::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn sync_result(&self, assignment: Vec<u8>) -> SyncResponse {
        SyncResponse {
            error: codes::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// Removes a member, answering its parked requests with `code`.
    fn remove_member(&mut self, member_id: &str, code: i16, out: &mut Ready) -> bool {
        let Some(member) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(member_id) {
                self.instances.remove(instance);
            }
        }
        if let Some(ticket) = member.join {
            out.push((ticket, Outcome::Join(JoinResponse::error(code, member_id))));
        }
        if let Some(ticket) = member.sync {
            out.push((ticket, Outcome::Sync(SyncResponse::error(code))));
        }
        if self.leader.as_deref() == Some(member_id) {
            // Kafka hands leadership on at once; `complete_join` re-checks it is a joiner.
            self.leader = self.members.keys().next().cloned();
        }
        true
    }

    /// After members left: rebalance, or finish the join phase if the rest have joined.
    fn after_removal(&mut self, config: &CoordinatorConfig, now_ms: u64, out: &mut Ready) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(config, now_ms, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Kafka's `prepareRebalance`.
    fn prepare_rebalance(&mut self, config: &CoordinatorConfig, now_ms: u64, out: &mut Ready) {
        // Parked SyncGroups belong to a generation that will never be Stable.
        for member in self.members.values_mut() {
            if let Some(ticket) = member.sync.take() {
                out.push((
                    ticket,
                    Outcome::Sync(SyncResponse::error(codes::REBALANCE_IN_PROGRESS)),
                ));
            }
            member.assignment.clear();
        }
        self.sync_deadline_ms = None;
        let initial = self.state == GroupState::Empty && config.initial_rebalance_delay_ms > 0;
        self.state = GroupState::PreparingRebalance;
        if initial {
            let delay_ms = config.initial_rebalance_delay_ms;
            self.initial_remaining_ms = Some(self.rebalance_timeout_ms().saturating_sub(delay_ms));
            self.new_member_added = false;
            self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
        } else {
            self.initial_remaining_ms = None;
            self.join_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
            self.maybe_complete_join(now_ms, out);
        }
    }

    fn maybe_complete_join(&mut self, now_ms: u64, out: &mut Ready) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_remaining_ms.is_none()
            && self.all_joined()
        {
            self.complete_join(now_ms, out);
        }
    }

    /// Kafka's `completeClassicGroupJoin`.
    fn complete_join(&mut self, now_ms: u64, out: &mut Ready) {
        let absent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id, codes::UNKNOWN_MEMBER_ID, out);
        }
        self.join_deadline_ms = None;
        self.initial_remaining_ms = None;
        self.new_member_added = false;
        // Generations only grow; wrapping (after 2^31 rebalances) restarts at 1, never below.
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            self.sync_deadline_ms = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        let leader_present = self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l));
        if !leader_present {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_result(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.synced = false;
                member.assignment.clear();
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                if let Some(ticket) = member.join.take() {
                    out.push((ticket, Outcome::Join(response)));
                }
            }
        }
    }

    fn add_member(
        &mut self,
        config: &CoordinatorConfig,
        now_ms: u64,
        member_id: String,
        ticket: Ticket,
        request: JoinRequest,
        out: &mut Ready,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.instances.insert(instance.clone(), member_id.clone());
        }
        let member = new_member(config, now_ms, ticket, request);
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        self.new_member_added = true;
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, out),
            _ => self.prepare_rebalance(config, now_ms, out),
        }
    }

    /// KIP-345: a static member's new process joins a Stable group with the protocols it had.
    /// Its old member id is replaced by the new one in place (the assignment kept, the old
    /// process's parked requests fenced) and the join is answered at once without a
    /// rebalance: the other members notice nothing. The answer names the leader as it was,
    /// so a returning leader does not assign again (Kafka does the same); its SyncGroup then
    /// gets the kept assignment.
    fn replace_static_member(
        &mut self,
        now_ms: u64,
        old_id: &str,
        new_id: String,
        ticket: Ticket,
        request: JoinRequest,
        out: &mut Ready,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        if let Some(old) = member.join.take() {
            out.push((
                old,
                Outcome::Join(JoinResponse::error(codes::FENCED_INSTANCE_ID, old_id)),
            ));
        }
        if let Some(old) = member.sync.take() {
            out.push((
                old,
                Outcome::Sync(SyncResponse::error(codes::FENCED_INSTANCE_ID)),
            ));
        }
        let leader_before = self.leader.clone().unwrap_or_default();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        member.session_timeout_ms = session_ms(request.session_timeout_ms);
        member.rebalance_timeout_ms =
            rebalance_ms(request.rebalance_timeout_ms, request.session_timeout_ms);
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
        self.members.insert(new_id.clone(), member);
        let mut response = self.join_result(&new_id);
        response.leader = leader_before;
        response.members.clear();
        out.push((ticket, Outcome::Join(response)));
    }

    /// Re-join of a known member: new protocols and timeouts, and its JoinGroup parked.
    fn update_member(
        &mut self,
        member_id: &str,
        now_ms: u64,
        ticket: Ticket,
        request: JoinRequest,
        out: &mut Ready,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(old) = member.join.replace(ticket) {
            out.push((
                old,
                Outcome::Join(JoinResponse::error(codes::REBALANCE_IN_PROGRESS, member_id)),
            ));
        }
        member.protocols = request.protocols;
        member.session_timeout_ms = session_ms(request.session_timeout_ms);
        member.rebalance_timeout_ms =
            rebalance_ms(request.rebalance_timeout_ms, request.session_timeout_ms);
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
    }

    fn clear_sync_deadline_if_all_synced(&mut self) {
        if self.members.values().all(|m| m.synced) {
            self.sync_deadline_ms = None;
        }
    }

    /// Fires whatever timers of the group are due.
    fn on_timer(&mut self, config: &CoordinatorConfig, now_ms: u64, out: &mut Ready) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let pending_expired = self.pending.len() != pending_before;

        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.session_armed() && m.session_deadline_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, codes::UNKNOWN_MEMBER_ID, out);
        }
        if !expired.is_empty() {
            self.after_removal(config, now_ms, out);
        } else if pending_expired {
            self.maybe_complete_join(now_ms, out);
        }

        let join_due = self.state == GroupState::PreparingRebalance
            && self.join_deadline_ms.is_some_and(|d| d <= now_ms);
        if join_due {
            match self.initial_remaining_ms {
                Some(remaining_ms) if self.new_member_added && remaining_ms > 0 => {
                    let delay_ms = config.initial_rebalance_delay_ms.min(remaining_ms);
                    self.initial_remaining_ms = Some(remaining_ms - delay_ms);
                    self.new_member_added = false;
                    self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
                }
                _ => self.complete_join(now_ms, out),
            }
        }

        let sync_due = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.sync_deadline_ms.is_some_and(|d| d <= now_ms);
        if sync_due {
            self.sync_deadline_ms = None;
            let unsynced: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.synced)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &unsynced {
                self.remove_member(id, codes::UNKNOWN_MEMBER_ID, out);
            }
            if !unsynced.is_empty() {
                self.after_removal(config, now_ms, out);
            }
        }
    }
}

fn session_ms(session_timeout_ms: i32) -> u64 {
    u64::try_from(session_timeout_ms).unwrap_or(0)
}

/// v0 has no rebalance timeout: Kafka uses the session timeout then.
fn rebalance_ms(rebalance_timeout_ms: i32, session_timeout_ms: i32) -> u64 {
    if rebalance_timeout_ms > 0 {
        session_ms(rebalance_timeout_ms)
    } else {
        session_ms(session_timeout_ms)
    }
}

fn new_member(
    config: &CoordinatorConfig,
    now_ms: u64,
    ticket: Ticket,
    request: JoinRequest,
) -> Member {
    let session_timeout_ms = session_ms(request.session_timeout_ms);
    Member {
        instance_id: request.group_instance_id,
        client_id: truncate(request.client_id, config.name_bytes_max),
        client_host: truncate(request.client_host, config.name_bytes_max),
        session_timeout_ms,
        rebalance_timeout_ms: rebalance_ms(
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
        ),
        protocols: request.protocols,
        assignment: Vec::new(),
        session_deadline_ms: now_ms.saturating_add(session_timeout_ms),
        join: Some(ticket),
        sync: None,
        synced: false,
    }
}

/// Cuts a string to at most `bytes_max` bytes on a character boundary.
fn truncate(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// splitmix64: spreads a counter into an id suffix that does not look sequential.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The classic group coordinator of one shard. See [`crate::coordinator`].
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: HashMap<String, Group>,
    /// `(deadline, group)` for every group with a timer, so `tick` touches only due groups.
    timers: BTreeSet<(u64, String)>,
    id_seed: u64,
    id_counter: u64,
}

impl Coordinator {
    /// An empty coordinator. `id_seed` makes generated member ids differ across restarts
    /// (the service seeds it with the clock); tests pass a constant.
    pub fn new(config: CoordinatorConfig, id_seed: u64) -> Self {
        Coordinator {
            config,
            groups: HashMap::new(),
            timers: BTreeSet::new(),
            id_seed,
            id_counter: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    fn next_member_id(&mut self, client_id: &str) -> String {
        self.id_counter = self.id_counter.wrapping_add(1);
        let suffix = mix(self.id_seed ^ self.id_counter.rotate_left(32));
        let client = truncate(client_id.to_owned(), MEMBER_ID_CLIENT_CHARS_MAX);
        format!("{client}-{:x}-{suffix:016x}", self.id_counter)
    }

    /// Puts the group under its current earliest deadline in the timer set.
    fn rearm(&mut self, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let next = group.next_deadline_ms();
        if next == group.armed_ms {
            return;
        }
        if let Some(old) = group.armed_ms.take() {
            self.timers.remove(&(old, group_id.to_owned()));
        }
        if let Some(deadline) = next {
            self.timers.insert((deadline, group_id.to_owned()));
        }
        group.armed_ms = next;
    }

    /// Makes room for one more group by evicting idle Empty groups (their offsets live in the
    /// offset store, not here). False when every slot holds a live group.
    fn make_room(&mut self) -> bool {
        if self.groups.len() < self.config.groups_max {
            return true;
        }
        self.groups.retain(|_, g| !g.idle() || g.armed_ms.is_some());
        self.groups.len() < self.config.groups_max
    }

    fn check_join(&self, request: &JoinRequest) -> Result<(), i16> {
        let config = &self.config;
        if request.group_id.is_empty() || request.group_id.len() > config.name_bytes_max {
            return Err(codes::INVALID_GROUP_ID);
        }
        if request.session_timeout_ms < config.session_timeout_ms_min
            || request.session_timeout_ms > config.session_timeout_ms_max
        {
            return Err(codes::INVALID_SESSION_TIMEOUT);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        let names_fit = request.protocol_type.len() <= config.name_bytes_max
            && request.member_id.len() <= config.name_bytes_max
            && request
                .group_instance_id
                .as_ref()
                .is_none_or(|i| i.len() <= config.name_bytes_max)
            && request
                .protocols
                .iter()
                .all(|(n, _)| n.len() <= config.name_bytes_max);
        let metadata_bytes: usize = request.protocols.iter().map(|(_, m)| m.len()).sum();
        if !names_fit
            || request.protocols.len() > config.protocols_per_member_max
            || metadata_bytes > config.metadata_bytes_max
        {
            return Err(codes::INVALID_REQUEST);
        }
        Ok(())
    }

    /// JoinGroup. Returns the responses that became ready, this request's among them when it
    /// is answered at once (an error, `MEMBER_ID_REQUIRED`, or a Stable group's current
    /// generation); otherwise it is parked under `ticket` until the join phase completes.
    pub fn join(&mut self, now_ms: u64, ticket: Ticket, request: JoinRequest) -> Ready {
        let mut out = Vec::new();
        let group_id = request.group_id.clone();
        let member_id = request.member_id.clone();
        if let Err(code) = self.join_inner(now_ms, ticket, request, &mut out) {
            out.push((ticket, Outcome::Join(JoinResponse::error(code, &member_id))));
        }
        self.rearm(&group_id);
        out
    }

    fn join_inner(
        &mut self,
        now_ms: u64,
        ticket: Ticket,
        request: JoinRequest,
        out: &mut Ready,
    ) -> Result<(), i16> {
        self.check_join(&request)?;
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(codes::UNKNOWN_MEMBER_ID);
            }
            if !self.make_room() {
                return Err(codes::COORDINATOR_NOT_AVAILABLE);
            }
            self.groups.insert(request.group_id.clone(), Group::new());
        }
        let new_id = if request.member_id.is_empty() {
            Some(self.next_member_id(&request.client_id))
        } else {
            None
        };
        let config = &self.config;
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return Err(codes::UNKNOWN_SERVER_ERROR);
        };
        if !group.supports(
            &request.member_id,
            &request.protocol_type,
            &request.protocols,
        ) {
            return Err(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        if let Some(new_id) = new_id {
            // A static member coming back with a new process replaces its old member id.
            let replaced = request
                .group_instance_id
                .as_ref()
                .and_then(|i| group.instances.get(i))
                .cloned();
            if let Some(old_id) = replaced {
                let quiet = group.state == GroupState::Stable
                    && group
                        .members
                        .get(&old_id)
                        .is_some_and(|m| m.same_protocols(&request.protocols));
                if quiet {
                    group.replace_static_member(now_ms, &old_id, new_id, ticket, request, out);
                    return Ok(());
                }
                group.remove_member(&old_id, codes::FENCED_INSTANCE_ID, out);
                group.add_member(config, now_ms, new_id.clone(), ticket, request, out);
                return Ok(());
            }
            if group.members.len() + group.pending.len() >= config.members_per_group_max {
                return Err(codes::GROUP_MAX_SIZE_REACHED);
            }
            if request.version >= 4 && request.group_instance_id.is_none() {
                let wait = session_ms(request.session_timeout_ms).min(PENDING_MEMBER_WAIT_MS);
                group
                    .pending
                    .insert(new_id.clone(), now_ms.saturating_add(wait));
                out.push((
                    ticket,
                    Outcome::Join(JoinResponse::error(codes::MEMBER_ID_REQUIRED, &new_id)),
                ));
                return Ok(());
            }
            group.add_member(config, now_ms, new_id, ticket, request, out);
            return Ok(());
        }
        let member_id = request.member_id.clone();
        if group.pending.remove(&member_id).is_some() {
            group.add_member(config, now_ms, member_id, ticket, request, out);
            return Ok(());
        }
        group.validate_member(&member_id, request.group_instance_id.as_deref())?;
        match group.state {
            GroupState::PreparingRebalance => {
                group.update_member(&member_id, now_ms, ticket, request, out);
                group.maybe_complete_join(now_ms, out);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = group
                    .members
                    .get(&member_id)
                    .is_some_and(|m| m.same_protocols(&request.protocols));
                let is_leader = group.leader.as_deref() == Some(member_id.as_str());
                let resend =
                    unchanged && (group.state == GroupState::CompletingRebalance || !is_leader);
                if resend {
                    if let Some(member) = group.members.get_mut(&member_id) {
                        member.session_deadline_ms =
                            now_ms.saturating_add(member.session_timeout_ms);
                    }
                    out.push((ticket, Outcome::Join(group.join_result(&member_id))));
                } else {
                    group.update_member(&member_id, now_ms, ticket, request, out);
                    group.prepare_rebalance(config, now_ms, out);
                }
            }
            GroupState::Empty | GroupState::Dead => return Err(codes::UNKNOWN_MEMBER_ID),
        }
        Ok(())
    }

    /// SyncGroup. Followers are parked under `ticket` until the leader's SyncGroup brings the
    /// assignment; the leader's answers everyone. Returns the responses that became ready.
    pub fn sync(&mut self, now_ms: u64, ticket: Ticket, request: SyncRequest) -> Ready {
        let mut out = Vec::new();
        if let Err(code) = self.sync_inner(now_ms, ticket, &request, &mut out) {
            out.push((ticket, Outcome::Sync(SyncResponse::error(code))));
        }
        self.rearm(&request.group_id);
        out
    }

    fn sync_inner(
        &mut self,
        now_ms: u64,
        ticket: Ticket,
        request: &SyncRequest,
        out: &mut Ready,
    ) -> Result<(), i16> {
        let config = &self.config;
        let group = self
            .groups
            .get_mut(&request.group_id)
            .ok_or(codes::UNKNOWN_MEMBER_ID)?;
        group.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation != group.generation {
            return Err(codes::ILLEGAL_GENERATION);
        }
        let type_differs = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t));
        let name_differs = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| group.protocol_name.as_ref() != Some(n));
        if type_differs || name_differs {
            return Err(codes::INCONSISTENT_GROUP_PROTOCOL);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => Err(codes::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => Err(codes::REBALANCE_IN_PROGRESS),
            GroupState::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader
                    && (request.assignments.len() > config.members_per_group_max
                        || request
                            .assignments
                            .iter()
                            .any(|(_, a)| a.len() > config.assignment_bytes_max))
                {
                    return Err(codes::INVALID_REQUEST);
                }
                let Some(member) = group.members.get_mut(&request.member_id) else {
                    return Err(codes::UNKNOWN_MEMBER_ID);
                };
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                member.synced = true;
                if let Some(old) = member.sync.replace(ticket) {
                    out.push((
                        old,
                        Outcome::Sync(SyncResponse::error(codes::REBALANCE_IN_PROGRESS)),
                    ));
                }
                if is_leader {
                    let mut assignments: HashMap<&str, &Vec<u8>> = HashMap::new();
                    for (id, assignment) in &request.assignments {
                        assignments.insert(id.as_str(), assignment);
                    }
                    group.state = GroupState::Stable;
                    let ids: Vec<String> = group.members.keys().cloned().collect();
                    for id in ids {
                        let assignment = assignments
                            .get(id.as_str())
                            .map(|a| (*a).clone())
                            .unwrap_or_default();
                        let response = group.sync_result(assignment.clone());
                        if let Some(member) = group.members.get_mut(&id) {
                            member.assignment = assignment;
                            if let Some(parked) = member.sync.take() {
                                member.session_deadline_ms =
                                    now_ms.saturating_add(member.session_timeout_ms);
                                out.push((parked, Outcome::Sync(response)));
                            }
                        }
                    }
                }
                group.clear_sync_deadline_if_all_synced();
                Ok(())
            }
            GroupState::Stable => {
                let Some(member) = group.members.get_mut(&request.member_id) else {
                    return Err(codes::UNKNOWN_MEMBER_ID);
                };
                member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                member.synced = true;
                let assignment = member.assignment.clone();
                out.push((ticket, Outcome::Sync(group.sync_result(assignment))));
                group.clear_sync_deadline_if_all_synced();
                Ok(())
            }
        }
    }

    /// Heartbeat: `NONE`, or the error telling the member what to do (`REBALANCE_IN_PROGRESS`:
    /// re-join; `UNKNOWN_MEMBER_ID`/`ILLEGAL_GENERATION`: join from scratch).
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> i16 {
        let code = self.heartbeat_inner(now_ms, group_id, generation, member_id, group_instance_id);
        self.rearm(group_id);
        code
    }

    fn heartbeat_inner(
        &mut self,
        now_ms: u64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        if matches!(group.state, GroupState::Empty | GroupState::Dead) {
            return codes::UNKNOWN_MEMBER_ID;
        }
        if let Err(code) = group.validate_member(member_id, group_instance_id) {
            return code;
        }
        if generation != group.generation {
            return codes::ILLEGAL_GENERATION;
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
        }
        if group.state == GroupState::PreparingRebalance {
            codes::REBALANCE_IN_PROGRESS
        } else {
            codes::NONE
        }
    }

    /// LeaveGroup for one or more members. Removes them, answering their parked requests with
    /// `UNKNOWN_MEMBER_ID`, then rebalances (or goes Empty).
    pub fn leave(&mut self, now_ms: u64, group_id: &str, members: &[LeaveMember]) -> LeaveResult {
        let mut ready = Vec::new();
        let config = &self.config;
        let Some(group) = self.groups.get_mut(group_id) else {
            return LeaveResult {
                error: codes::NONE,
                members: vec![codes::UNKNOWN_MEMBER_ID; members.len()],
                ready,
            };
        };
        let mut codes_out = Vec::with_capacity(members.len());
        let mut removed = false;
        let mut pending_removed = false;
        for leaving in members {
            let instance = leaving.group_instance_id.as_deref();
            let member_id = if leaving.member_id.is_empty() {
                match instance.and_then(|i| group.instances.get(i)) {
                    Some(id) => id.clone(),
                    None => {
                        codes_out.push(codes::UNKNOWN_MEMBER_ID);
                        continue;
                    }
                }
            } else {
                leaving.member_id.clone()
            };
            if instance.is_none() && group.pending.remove(&member_id).is_some() {
                pending_removed = true;
                codes_out.push(codes::NONE);
                continue;
            }
            match group.validate_member(&member_id, instance) {
                Ok(()) => {
                    removed |=
                        group.remove_member(&member_id, codes::UNKNOWN_MEMBER_ID, &mut ready);
                    codes_out.push(codes::NONE);
                }
                Err(code) => codes_out.push(code),
            }
        }
        if removed {
            group.after_removal(config, now_ms, &mut ready);
        } else if pending_removed {
            group.maybe_complete_join(now_ms, &mut ready);
        }
        self.rearm(group_id);
        LeaveResult {
            error: codes::NONE,
            members: codes_out,
            ready,
        }
    }

    /// Drops every group for which `doomed` holds (in a cluster: this node no longer
    /// coordinates its slot). Parked JoinGroup and SyncGroup requests are answered
    /// NOT_COORDINATOR, so their members look the coordinator up again; the group's
    /// committed offsets are not kept here and stay where they are.
    pub fn forget(&mut self, doomed: impl Fn(&str) -> bool) -> Ready {
        let ids: Vec<String> = self.groups.keys().filter(|g| doomed(g)).cloned().collect();
        let mut ready = Vec::new();
        for id in ids {
            let Some(group) = self.groups.remove(&id) else {
                continue;
            };
            if let Some(armed) = group.armed_ms {
                self.timers.remove(&(armed, id.clone()));
            }
            for (member_id, member) in group.members {
                if let Some(ticket) = member.join {
                    let answer = JoinResponse::error(codes::NOT_COORDINATOR, &member_id);
                    ready.push((ticket, Outcome::Join(answer)));
                }
                if let Some(ticket) = member.sync {
                    let answer = SyncResponse::error(codes::NOT_COORDINATOR);
                    ready.push((ticket, Outcome::Sync(answer)));
                }
            }
        }
        ready
    }

    /// Runs every timer due at `now_ms`: session and pending-member expiry, the end of the
    /// join phase (initial delay or rebalance timeout), the pending-sync timeout.
    pub fn tick(&mut self, now_ms: u64) -> Ready {
        let mut out = Vec::new();
        let mut due = Vec::new();
        while let Some((deadline, _)) = self.timers.first() {
            if *deadline > now_ms {
                break;
            }
            if let Some((_, group_id)) = self.timers.pop_first() {
                due.push(group_id);
            }
        }
        for group_id in due {
            if let Some(group) = self.groups.get_mut(&group_id) {
                group.armed_ms = None;
                group.on_timer(&self.config, now_ms, &mut out);
            }
            self.rearm(&group_id);
        }
        out
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|(deadline, _)| *deadline)
    }

    /// Whether an OffsetCommit may be stored (Kafka's `validateOffsetCommit`). A "simple"
    /// commit (`generation < 0`) to an Empty or unknown group is accepted.
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
        if group_id.is_empty() || group_id.len() > self.config.name_bytes_max {
            return Err(codes::INVALID_GROUP_ID);
        }
        let Some(group) = self.groups.get(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(codes::ILLEGAL_GENERATION)
            };
        };
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            group.validate_member(member_id, group_instance_id)?;
            if generation != group.generation {
                return Err(codes::ILLEGAL_GENERATION);
            }
        } else {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(codes::REBALANCE_IN_PROGRESS);
        }
        Ok(())
    }

    /// DescribeGroups for one group; unknown groups are reported Dead with no members.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let members = group
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(group.protocol_name.as_deref())
                } else {
                    Vec::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        GroupDescription {
            group_id: group_id.to_owned(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                group.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members,
        }
    }

    /// ListGroups: every group this coordinator holds, sorted by id.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut groups: Vec<GroupListing> = self
            .groups
            .iter()
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// Checks the invariants of every group; tests call it after every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (id, group) in &self.groups {
            if let Some(leader) = &group.leader {
                if !group.members.contains_key(leader) {
                    return Err(format!("{id}: leader {leader} is not a member"));
                }
            }
            if group.members.is_empty() != group.leader.is_none() {
                return Err(format!("{id}: members without a leader or the reverse"));
            }
            if group.state == GroupState::Empty && !group.members.is_empty() {
                return Err(format!("{id}: Empty with members"));
            }
            for (member_id, member) in &group.members {
                if member.sync.is_some() && group.state != GroupState::CompletingRebalance {
                    return Err(format!(
                        "{id}: {member_id} parked sync in {:?}",
                        group.state
                    ));
                }
                if member.join.is_some() && group.state != GroupState::PreparingRebalance {
                    return Err(format!(
                        "{id}: {member_id} parked join in {:?}",
                        group.state
                    ));
                }
                if let Some(instance) = &member.instance_id {
                    if group.instances.get(instance) != Some(member_id) {
                        return Err(format!("{id}: instance map misses {member_id}"));
                    }
                }
            }
            if group.armed_ms != group.next_deadline_ms() {
                return Err(format!("{id}: timer not armed at its deadline"));
            }
            if let Some(at) = group.armed_ms {
                if !self.timers.contains(&(at, id.clone())) {
                    return Err(format!("{id}: timer set misses the group"));
                }
            }
        }
        if self.timers.len() > self.groups.len() {
            return Err("stale timer entries".to_owned());
        }
        Ok(())
    }

    /// The leader of a group (tests).
    #[cfg(test)]
    pub(crate) fn leader(&self, group_id: &str) -> Option<String> {
        self.groups.get(group_id).and_then(|g| g.leader.clone())
    }

    /// The generation of a group (tests).
    #[cfg(test)]
    pub(crate) fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation)
    }
}
