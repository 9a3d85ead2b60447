//! Classic consumer-group membership for `--group` (docs/KAFKA.md §4): FindCoordinator,
//! JoinGroup (with the v4+ MEMBER_ID_REQUIRED round), SyncGroup with the range assignor run
//! by the leader, Heartbeat, OffsetCommit / OffsetFetch, LeaveGroup.
//!
//! ```text
//!  join():  FindCoordinator ─▶ own connection to the coordinator (JoinGroup parks there)
//!           ─▶ JoinGroup ─▶ leader: range-assign every member's subscription ─▶ SyncGroup
//!           ─▶ this member's partitions
//!  heartbeat task (every HEARTBEAT_INTERVAL) ─▶ REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER_ID /
//!           ILLEGAL_GENERATION set `rejoin`; the consumer commits and calls join() again
//! ```
//!
//! Subscriptions and assignments use ConsumerProtocol v0 with the protocol `range`, which any
//! Kafka consumer of the group can read.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tidelog_wire::kafka::generated::{
    find_coordinator_request::FindCoordinatorRequest,
    find_coordinator_response::FindCoordinatorResponse,
    heartbeat_request::HeartbeatRequest,
    heartbeat_response::HeartbeatResponse,
    join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol},
    join_group_response::JoinGroupResponse,
    leave_group_request::{LeaveGroupRequest, MemberIdentity},
    offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    },
    offset_commit_response::OffsetCommitResponse,
    offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic},
    offset_fetch_response::OffsetFetchResponse,
    sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment},
    sync_group_response::SyncGroupResponse,
};
use tidelog_wire::kafka::Decoder;

use super::client::{api, by_topic, encode, malformed, GroupVersions, KafkaClient, NodeConn, Tp};
use super::{check, code, KafkaError, Result};

/// Session timeout asked for: a member silent this long is dropped.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the coordinator waits for members to rejoin during a rebalance.
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Heartbeat period (a third of the session, as Kafka's consumer does).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3_000);
/// Most join attempts in one `join()` (rebalances racing each other, coordinator moves).
const JOIN_ATTEMPTS: usize = 20;
/// The assignor.
const PROTOCOL: &str = "range";
/// Most members, topics or partitions decoded from a subscription or assignment.
const PROTOCOL_ITEMS_MAX: usize = 1 << 20;

/// One member of a consumer group.
pub struct GroupMember {
    client: Rc<KafkaClient>,
    group: String,
    versions: GroupVersions,
    coordinator: RefCell<Option<NodeConn>>,
    member_id: RefCell<String>,
    generation: Cell<i32>,
    /// Set when the coordinator says the group rebalances or forgot this member.
    rejoin: Cell<bool>,
    /// A join is running (heartbeats pause).
    joining: Cell<bool>,
    left: Cell<bool>,
}

impl GroupMember {
    /// A member of `group` (not joined yet).
    ///
    /// # Errors
    /// [`KafkaError::Unsupported`] when the broker lacks a group API we speak.
    pub async fn new(client: Rc<KafkaClient>, group: &str) -> Result<Rc<Self>> {
        let boot = client.boot().await?;
        let versions = boot.versions.groups.ok_or_else(|| {
            KafkaError::Unsupported(
                "the broker does not offer the consumer group APIs tidelog-bench speaks".into(),
            )
        })?;
        Ok(Rc::new(GroupMember {
            client,
            group: group.to_owned(),
            versions,
            coordinator: RefCell::new(None),
            member_id: RefCell::new(String::new()),
            generation: Cell::new(-1),
            rejoin: Cell::new(false),
            joining: Cell::new(false),
            left: Cell::new(false),
        }))
    }

    /// Whether the member must rejoin before reading on.
    pub fn needs_rejoin(&self) -> bool {
        self.rejoin.get()
    }

    async fn coordinator(&self) -> Result<NodeConn> {
        let cached = self.coordinator.borrow().clone();
        if let Some(c) = cached.filter(|c| !c.conn.is_closed()) {
            return Ok(c);
        }
        let boot = self.client.boot().await?;
        let v = self.versions.find_coordinator;
        let request = FindCoordinatorRequest {
            key: self.group.clone(),
            key_type: 0,
            ..Default::default()
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = boot.conn.call(api::FIND_COORDINATOR, v, &body).await?;
        let r = FindCoordinatorResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("FindCoordinator"))?;
        check("FindCoordinator", r.error_code)?;
        self.client.learn_node(r.node_id, &r.host, r.port)?;
        // Its own connection: a JoinGroup parks on it until the rebalance ends, and must not
        // hold up fetches to the same node.
        let addr = self.client.node_addr(r.node_id)?;
        let c = NodeConn::open(addr).await?;
        *self.coordinator.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    fn coordinator_error(&self, code: i16) {
        if matches!(
            code,
            code::NOT_COORDINATOR | code::COORDINATOR_NOT_AVAILABLE
        ) {
            self.coordinator.borrow_mut().take();
        }
    }

    /// Joins (or rejoins) the group subscribed to every topic of the client; returns this
    /// member's partitions.
    ///
    /// # Errors
    /// Errors that persist over [`JOIN_ATTEMPTS`] attempts.
    pub async fn join(&self) -> Result<Vec<Tp>> {
        self.joining.set(true);
        let r = self.join_attempts().await;
        self.joining.set(false);
        if r.is_ok() {
            self.rejoin.set(false);
        }
        r
    }

    async fn join_attempts(&self) -> Result<Vec<Tp>> {
        let mut last = None;
        for attempt in 0..JOIN_ATTEMPTS {
            if attempt > 0 {
                glommio::timer::sleep(super::client::RETRY_BACKOFF * attempt as u32).await;
            }
            match self.join_once().await {
                Ok(tps) => return Ok(tps),
                Err(KafkaError::Code { code, api }) => {
                    self.coordinator_error(code);
                    match code {
                        code::UNKNOWN_MEMBER_ID => self.member_id.borrow_mut().clear(),
                        code::MEMBER_ID_REQUIRED
                        | code::REBALANCE_IN_PROGRESS
                        | code::ILLEGAL_GENERATION
                        | code::NOT_COORDINATOR
                        | code::COORDINATOR_NOT_AVAILABLE
                        | code::COORDINATOR_LOAD_IN_PROGRESS => {}
                        _ => return Err(KafkaError::Code { code, api }),
                    }
                    last = Some(KafkaError::Code { code, api });
                }
                Err(e) if e.is_retriable() => {
                    self.coordinator.borrow_mut().take();
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(KafkaError::Timeout))
    }

    async fn join_once(&self) -> Result<Vec<Tp>> {
        let c = self.coordinator().await?;
        let v = self.versions.join_group;
        let topics: Vec<String> = (0..self.client.topic_count())
            .map(|t| self.client.topic(t).to_owned())
            .collect();
        let request = JoinGroupRequest {
            group_id: self.group.clone(),
            session_timeout_ms: SESSION_TIMEOUT.as_millis() as i32,
            rebalance_timeout_ms: REBALANCE_TIMEOUT.as_millis() as i32,
            member_id: self.member_id.borrow().clone(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![JoinGroupRequestProtocol {
                name: PROTOCOL.into(),
                metadata: subscription(&topics),
            }],
            reason: None,
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = c.conn.call(api::JOIN_GROUP, v, &body).await?;
        let r = JoinGroupResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("JoinGroup"))?;
        if r.error_code == code::MEMBER_ID_REQUIRED {
            *self.member_id.borrow_mut() = r.member_id.clone();
        }
        check("JoinGroup", r.error_code)?;
        *self.member_id.borrow_mut() = r.member_id.clone();
        self.generation.set(r.generation_id);
        let assignments = if r.leader == r.member_id {
            let mut members = Vec::with_capacity(r.members.len());
            for m in &r.members {
                members.push((m.member_id.clone(), decode_subscription(&m.metadata)?));
            }
            let counts: Vec<(String, usize)> = topics
                .iter()
                .enumerate()
                .map(|(t, name)| (name.clone(), self.client.partition_count(t)))
                .collect();
            range_assign(&members, &counts)
                .into_iter()
                .map(|(member_id, parts)| SyncGroupRequestAssignment {
                    member_id,
                    assignment: encode_assignment(&parts),
                })
                .collect()
        } else {
            Vec::new()
        };
        let v = self.versions.sync_group;
        let request = SyncGroupRequest {
            group_id: self.group.clone(),
            generation_id: r.generation_id,
            member_id: r.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some(PROTOCOL.into()),
            assignments,
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = c.conn.call(api::SYNC_GROUP, v, &body).await?;
        let r = SyncGroupResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("SyncGroup"))?;
        check("SyncGroup", r.error_code)?;
        let mut tps = Vec::new();
        for (name, parts) in decode_assignment(&r.assignment)? {
            if let Some(t) = self.client.topic_index(&name) {
                tps.extend(parts.into_iter().map(|p| (t, p)));
            }
        }
        Ok(tps)
    }

    /// Heartbeats every [`HEARTBEAT_INTERVAL`] until the member leaves; an answer that calls
    /// for a rejoin sets [`needs_rejoin`](Self::needs_rejoin).
    pub async fn heartbeat_loop(self: Rc<Self>) {
        while !self.left.get() {
            glommio::timer::sleep(HEARTBEAT_INTERVAL).await;
            if self.left.get() || self.joining.get() || self.rejoin.get() {
                continue;
            }
            match self.heartbeat().await {
                Ok(()) => {}
                Err(KafkaError::Code { code, .. }) => {
                    self.coordinator_error(code);
                    if code == code::UNKNOWN_MEMBER_ID {
                        self.member_id.borrow_mut().clear();
                    }
                    self.rejoin.set(true);
                }
                Err(_) => {
                    self.coordinator.borrow_mut().take();
                }
            }
        }
    }

    async fn heartbeat(&self) -> Result<()> {
        let c = self.coordinator().await?;
        let v = self.versions.heartbeat;
        let request = HeartbeatRequest {
            group_id: self.group.clone(),
            generation_id: self.generation.get(),
            member_id: self.member_id.borrow().clone(),
            group_instance_id: None,
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = c.conn.call(api::HEARTBEAT, v, &body).await?;
        let r = HeartbeatResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("Heartbeat"))?;
        check("Heartbeat", r.error_code)
    }

    /// Commits `offsets` (next offset to read) under the current generation.
    ///
    /// # Errors
    /// The first partition's error, request errors.
    pub async fn commit(&self, offsets: &[(Tp, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let c = self.coordinator().await?;
        let v = self.versions.offset_commit;
        let tps: Vec<Tp> = offsets.iter().map(|(tp, _)| *tp).collect();
        let offset_of = |tp: Tp| {
            offsets
                .iter()
                .find(|(x, _)| *x == tp)
                .map_or(-1, |(_, o)| *o)
        };
        let request = OffsetCommitRequest {
            group_id: self.group.clone(),
            generation_id_or_member_epoch: self.generation.get(),
            member_id: self.member_id.borrow().clone(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: by_topic(&tps)
                .into_iter()
                .map(|(t, parts)| OffsetCommitRequestTopic {
                    name: self.client.topic(t).to_owned(),
                    partitions: parts
                        .iter()
                        .map(|p| OffsetCommitRequestPartition {
                            partition_index: *p,
                            committed_offset: offset_of((t, *p)),
                            committed_leader_epoch: -1,
                            commit_timestamp: -1,
                            committed_metadata: Some(String::new()),
                        })
                        .collect(),
                })
                .collect(),
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = c.conn.call(api::OFFSET_COMMIT, v, &body).await?;
        let r = OffsetCommitResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("OffsetCommit"))?;
        for t in &r.topics {
            for p in &t.partitions {
                if let Err(e) = check("OffsetCommit", p.error_code) {
                    self.coordinator_error(p.error_code);
                    if matches!(
                        p.error_code,
                        code::REBALANCE_IN_PROGRESS
                            | code::ILLEGAL_GENERATION
                            | code::UNKNOWN_MEMBER_ID
                    ) {
                        self.rejoin.set(true);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The committed offsets of `tps`, in their order (`None`: nothing committed).
    ///
    /// # Errors
    /// Request or partition errors.
    pub async fn committed(&self, tps: &[Tp]) -> Result<Vec<Option<i64>>> {
        let c = self.coordinator().await?;
        let v = self.versions.offset_fetch;
        let request = OffsetFetchRequest {
            group_id: self.group.clone(),
            topics: Some(
                by_topic(tps)
                    .into_iter()
                    .map(|(t, parts)| OffsetFetchRequestTopic {
                        name: self.client.topic(t).to_owned(),
                        partition_indexes: parts,
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let body = encode(|b| request.encode(b, v))?;
        let resp = c.conn.call(api::OFFSET_FETCH, v, &body).await?;
        let r = OffsetFetchResponse::decode(&mut Decoder::new(&resp), v)
            .map_err(malformed("OffsetFetch"))?;
        if v >= 2 {
            check("OffsetFetch", r.error_code)?;
        }
        let mut out = vec![None; tps.len()];
        for t in &r.topics {
            let Some(ti) = self.client.topic_index(&t.name) else {
                continue;
            };
            for p in &t.partitions {
                check("OffsetFetch", p.error_code)?;
                if let Some(k) = tps.iter().position(|tp| *tp == (ti, p.partition_index)) {
                    out[k] = (p.committed_offset >= 0).then_some(p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Leaves the group (best effort: the session timeout drops a member anyway).
    pub async fn leave(&self) {
        self.left.set(true);
        let Ok(c) = self.coordinator().await else {
            return;
        };
        let v = self.versions.leave_group;
        let member_id = self.member_id.borrow().clone();
        let request = if v >= 3 {
            LeaveGroupRequest {
                group_id: self.group.clone(),
                members: vec![MemberIdentity {
                    member_id,
                    ..Default::default()
                }],
                ..Default::default()
            }
        } else {
            LeaveGroupRequest {
                group_id: self.group.clone(),
                member_id,
                ..Default::default()
            }
        };
        if let Ok(body) = encode(|b| request.encode(b, v)) {
            let _ = c.conn.call(api::LEAVE_GROUP, v, &body).await;
        }
    }
}

/// ConsumerProtocolSubscription v0: version, topics, null user data.
pub fn subscription(topics: &[String]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

fn short(what: &str) -> KafkaError {
    KafkaError::Malformed(format!("consumer protocol: truncated {what}"))
}

fn get_count(buf: &mut &[u8], what: &str) -> Result<usize> {
    if buf.remaining() < 4 {
        return Err(short(what));
    }
    let n = buf.get_i32();
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= PROTOCOL_ITEMS_MAX)
        .ok_or_else(|| KafkaError::Malformed(format!("consumer protocol: {what} count {n}")))
}

fn get_string(buf: &mut &[u8]) -> Result<String> {
    if buf.remaining() < 2 {
        return Err(short("string length"));
    }
    let n = usize::try_from(buf.get_i16()).map_err(|_| short("string (null)"))?;
    if buf.remaining() < n {
        return Err(short("string"));
    }
    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
    buf.advance(n);
    Ok(s)
}

/// The topics of a ConsumerProtocolSubscription (any version: later fields are ignored).
///
/// # Errors
/// Truncated or absurd data.
pub fn decode_subscription(data: &[u8]) -> Result<Vec<String>> {
    let mut buf = data;
    if buf.remaining() < 2 {
        return Err(short("version"));
    }
    let _version = buf.get_i16();
    let n = get_count(&mut buf, "topic")?;
    let mut topics = Vec::with_capacity(n.min(buf.remaining() / 2));
    for _ in 0..n {
        topics.push(get_string(&mut buf)?);
    }
    Ok(topics)
}

/// One member's partitions: (topic, partitions) pairs.
pub type Assignment = Vec<(String, Vec<i32>)>;

/// ConsumerProtocolAssignment v0: version, (topic, partitions)*, null user data.
pub fn encode_assignment(parts: &[(String, Vec<i32>)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(parts.len() as i32);
    for (t, ps) in parts {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(-1);
    b.freeze()
}

/// The partitions of a ConsumerProtocolAssignment (empty data: none).
///
/// # Errors
/// Truncated or absurd data.
pub fn decode_assignment(data: &[u8]) -> Result<Vec<(String, Vec<i32>)>> {
    let mut buf = data;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    if buf.remaining() < 2 {
        return Err(short("version"));
    }
    let _version = buf.get_i16();
    let n = get_count(&mut buf, "topic")?;
    let mut out = Vec::with_capacity(n.min(buf.remaining() / 6));
    for _ in 0..n {
        let t = get_string(&mut buf)?;
        let k = get_count(&mut buf, "partition")?;
        if buf.remaining() < k * 4 {
            return Err(short("partitions"));
        }
        out.push((t, (0..k).map(|_| buf.get_i32()).collect()));
    }
    Ok(out)
}

/// Kafka's range assignor: per topic, the members subscribed to it in member-id order get
/// contiguous ranges, the first `partitions % members` one partition more.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    topics: &[(String, usize)],
) -> Vec<(String, Assignment)> {
    let mut ids: Vec<&String> = members.iter().map(|(m, _)| m).collect();
    ids.sort();
    let mut out: Vec<(String, Assignment)> =
        ids.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    for (topic, count) in topics {
        let subscribed: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| {
                members
                    .iter()
                    .any(|(m, ts)| m == **id && ts.iter().any(|t| t == topic))
            })
            .map(|(k, _)| k)
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let per = count / subscribed.len();
        let extra = count % subscribed.len();
        let mut next = 0usize;
        for (rank, k) in subscribed.iter().enumerate() {
            let n = per + usize::from(rank < extra);
            let parts: Vec<i32> = (next..next + n).map(|p| p as i32).collect();
            next += n;
            if !parts.is_empty() {
                out[*k].1.push((topic.clone(), parts));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_splits_each_topic_in_member_order() {
        let all = vec!["a".to_string(), "b".to_string()];
        let members = vec![
            ("m2".to_string(), all.clone()),
            ("m1".to_string(), all.clone()),
            ("m3".to_string(), vec!["a".to_string()]),
        ];
        let got = range_assign(&members, &[("a".into(), 7), ("b".into(), 3)]);
        let of = |m: &str| {
            got.iter()
                .find(|(id, _)| id == m)
                .expect("member")
                .1
                .clone()
        };
        assert_eq!(
            of("m1"),
            [("a".into(), vec![0, 1, 2]), ("b".into(), vec![0, 1])]
        );
        assert_eq!(of("m2"), [("a".into(), vec![3, 4]), ("b".into(), vec![2])]);
        assert_eq!(of("m3"), [("a".into(), vec![5, 6])]);
        // Every partition exactly once.
        let mut a: Vec<i32> = got
            .iter()
            .flat_map(|(_, ts)| {
                ts.iter()
                    .filter(|(t, _)| t == "a")
                    .flat_map(|(_, p)| p.clone())
            })
            .collect();
        a.sort_unstable();
        assert_eq!(a, (0..7).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #[test]
        fn consumer_protocol_decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
        }

        #[test]
        fn assignments_round_trip(parts in proptest::collection::vec(("[a-z]{1,8}", proptest::collection::vec(0i32..1000, 0..8)), 0..6)) {
            let bytes = encode_assignment(&parts);
            proptest::prop_assert_eq!(decode_assignment(&bytes).expect("decodes"), parts);
        }
    }

    #[test]
    fn protocol_payloads_round_trip_and_reject_junk() {
        let topics = vec!["t-0".to_string(), "t-1".to_string()];
        assert_eq!(
            decode_subscription(&subscription(&topics)).expect("ok"),
            topics
        );
        let parts = vec![("t-0".to_string(), vec![0, 3]), ("t-1".to_string(), vec![])];
        let bytes = encode_assignment(&parts);
        assert_eq!(decode_assignment(&bytes).expect("ok"), parts);
        assert!(decode_assignment(&[]).expect("empty").is_empty());
        for cut in 1..bytes.len() - 4 {
            assert!(decode_assignment(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        assert!(decode_subscription(&huge).is_err());
        assert!(decode_assignment(&huge).is_err());
    }
}
