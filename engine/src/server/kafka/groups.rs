//! Consumer groups over the Kafka protocol: FindCoordinator, the classic membership APIs
//! (served by this shard's [`crate::coordinator::GroupService`]) and committed offsets
//! (persisted in the group's offset slot, which this same shard owns).

use bytes::Bytes;
use tidelog_wire::kafka::generated::{
    delete_groups_request::DeleteGroupsRequest,
    delete_groups_response::{DeletableGroupResult, DeleteGroupsResponse},
    describe_groups_request::DescribeGroupsRequest,
    describe_groups_response::{DescribeGroupsResponse, DescribedGroup, DescribedGroupMember},
    find_coordinator_request::FindCoordinatorRequest,
    find_coordinator_response::{Coordinator, FindCoordinatorResponse},
    heartbeat_request::HeartbeatRequest,
    heartbeat_response::HeartbeatResponse,
    join_group_request::JoinGroupRequest,
    join_group_response::{JoinGroupResponse, JoinGroupResponseMember},
    leave_group_request::LeaveGroupRequest,
    leave_group_response::{LeaveGroupResponse, MemberResponse},
    list_groups_request::ListGroupsRequest,
    list_groups_response::{ListGroupsResponse, ListedGroup},
    offset_commit_request::OffsetCommitRequest,
    offset_commit_response::{
        OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    },
    offset_delete_request::OffsetDeleteRequest,
    offset_delete_response::{
        OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    },
    offset_fetch_request::OffsetFetchRequest,
    offset_fetch_response::{
        OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
        OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    },
    sync_group_request::SyncGroupRequest,
    sync_group_response::SyncGroupResponse,
};

use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::coordinator::{GroupState, JoinRequest, LeaveMember, SyncRequest};
use crate::groups::{Committed, OffsetCommit, METADATA_BYTES_MAX};
use crate::shard::partition_index;

/// One group's committed offsets as OffsetFetch reports them: (topic, [(partition, offset,
/// metadata, error)]).
type FetchedTopics = Vec<(String, Vec<(i32, i64, String, i16)>)>;

impl KafkaConnection {
    fn coordinates(&self, group: &str) -> bool {
        self.shard().group_owner(group) == self.shard().id()
            && self.shard().coordinates_on_this_node(group)
    }

    pub(super) async fn find_coordinator(
        &mut self,
        meta: &RequestMeta,
        request: FindCoordinatorRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = FindCoordinatorResponse::default();
        let keys = if meta.version >= 4 {
            request.coordinator_keys.clone()
        } else {
            vec![request.key.clone()]
        };
        for key in keys {
            let mut entry = Coordinator {
                key: key.clone(),
                node_id: -1,
                host: String::new(),
                port: -1,
                ..Default::default()
            };
            if request.key_type != 0 {
                // Transaction coordinators: transactions are not supported.
                entry.error_code = code::COORDINATOR_NOT_AVAILABLE;
                entry.error_message = Some("transactions are not supported".into());
            } else if key.is_empty() {
                entry.error_code = code::INVALID_GROUP_ID;
            } else if self.shard().view().is_some() {
                match self.shard().cluster_coordinator(&key) {
                    Some((node, host, port)) => {
                        entry.node_id = node;
                        entry.host = host;
                        entry.port = port;
                    }
                    None => entry.error_code = code::COORDINATOR_NOT_AVAILABLE,
                }
            } else {
                let node = self.shard().group_owner(&key);
                let (host, port) = self.node(node);
                entry.node_id = node as i32;
                entry.host = host;
                entry.port = port;
            }
            response.coordinators.push(entry);
        }
        if meta.version < 4 {
            if let Some(first) = response.coordinators.first() {
                response.error_code = first.error_code;
                response.error_message = first.error_message.clone();
                response.node_id = first.node_id;
                response.host = first.host.clone();
                response.port = first.port;
            }
            response.coordinators.clear();
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn join_group(
        &mut self,
        meta: &RequestMeta,
        request: JoinGroupRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = JoinGroupResponse {
            generation_id: -1,
            member_id: request.member_id.clone(),
            ..Default::default()
        };
        if !self.coordinates(&request.group_id) {
            response.error_code = code::NOT_COORDINATOR;
        } else {
            let join = JoinRequest {
                group_id: request.group_id,
                member_id: request.member_id,
                group_instance_id: request.group_instance_id,
                protocol_type: request.protocol_type,
                protocols: request
                    .protocols
                    .into_iter()
                    .map(|p| (p.name, p.metadata.to_vec()))
                    .collect(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: if meta.version >= 1 {
                    request.rebalance_timeout_ms
                } else {
                    -1
                },
                client_id: meta.client_id.clone(),
                client_host: self.client_host().to_owned(),
                version: meta.version,
            };
            let shard = std::rc::Rc::clone(self.shard());
            let joined = shard.groups.join(join).await;
            response.error_code = joined.error;
            response.generation_id = joined.generation;
            response.protocol_type = joined.protocol_type;
            response.protocol_name = joined.protocol_name;
            response.leader = joined.leader;
            response.member_id = joined.member_id;
            response.members = joined
                .members
                .into_iter()
                .map(|m| JoinGroupResponseMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    metadata: Bytes::from(m.metadata),
                })
                .collect();
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn sync_group(
        &mut self,
        meta: &RequestMeta,
        request: SyncGroupRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = SyncGroupResponse::default();
        if !self.coordinates(&request.group_id) {
            response.error_code = code::NOT_COORDINATOR;
        } else {
            let sync = SyncRequest {
                group_id: request.group_id,
                generation: request.generation_id,
                member_id: request.member_id,
                group_instance_id: request.group_instance_id,
                protocol_type: request.protocol_type,
                protocol_name: request.protocol_name,
                assignments: request
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id, a.assignment.to_vec()))
                    .collect(),
            };
            let shard = std::rc::Rc::clone(self.shard());
            let synced = shard.groups.sync(sync).await;
            response.error_code = synced.error;
            response.protocol_type = synced.protocol_type;
            response.protocol_name = synced.protocol_name;
            response.assignment = Bytes::from(synced.assignment);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn heartbeat(
        &mut self,
        meta: &RequestMeta,
        request: HeartbeatRequest,
    ) -> Result<(), KafkaConnError> {
        let error_code = if self.coordinates(&request.group_id) {
            self.shard().groups.heartbeat(
                &request.group_id,
                request.generation_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
            )
        } else {
            code::NOT_COORDINATOR
        };
        let response = HeartbeatResponse {
            error_code,
            ..Default::default()
        };
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn leave_group(
        &mut self,
        meta: &RequestMeta,
        request: LeaveGroupRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = LeaveGroupResponse::default();
        let members: Vec<LeaveMember> = if meta.version >= 3 {
            request
                .members
                .iter()
                .map(|m| LeaveMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                })
                .collect()
        } else {
            vec![LeaveMember {
                member_id: request.member_id.clone(),
                group_instance_id: None,
            }]
        };
        if !self.coordinates(&request.group_id) {
            response.error_code = code::NOT_COORDINATOR;
        } else {
            let result = self.shard().groups.leave(&request.group_id, &members);
            if meta.version >= 3 {
                response.error_code = result.error;
                response.members = members
                    .into_iter()
                    .zip(result.members)
                    .map(|(m, error_code)| MemberResponse {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        error_code,
                    })
                    .collect();
            } else {
                response.error_code = result
                    .members
                    .first()
                    .copied()
                    .filter(|&c| c != code::NONE)
                    .unwrap_or(result.error);
            }
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn offset_commit(
        &mut self,
        meta: &RequestMeta,
        request: OffsetCommitRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let group = request.group_id.clone();
        let verdict = if !self.coordinates(&group) {
            Err(code::NOT_COORDINATOR)
        } else {
            let generation = if meta.version >= 1 {
                request.generation_id_or_member_epoch
            } else {
                -1
            };
            shard.groups.validate_commit(
                &group,
                generation,
                &request.member_id,
                request.group_instance_id.as_deref(),
            )
        };
        let mut response = OffsetCommitResponse::default();
        let mut valid = Vec::new();
        for topic in &request.topics {
            let mut result = OffsetCommitResponseTopic {
                name: topic.name.clone(),
                partitions: Vec::new(),
            };
            for p in &topic.partitions {
                let metadata = p.committed_metadata.clone().unwrap_or_default();
                let error = match verdict {
                    Err(code) => code,
                    Ok(()) if metadata.len() > METADATA_BYTES_MAX => {
                        code::OFFSET_METADATA_TOO_LARGE
                    }
                    Ok(()) => match partition_index(p.partition_index)
                        .and_then(|index| shard.check_exists(&topic.name, index))
                    {
                        Ok(()) => {
                            valid.push(OffsetCommit {
                                topic: topic.name.clone(),
                                partition: p.partition_index,
                                offset: p.committed_offset,
                                metadata,
                            });
                            code::NONE
                        }
                        Err(e) => error_code(&e),
                    },
                };
                result.partitions.push(OffsetCommitResponsePartition {
                    partition_index: p.partition_index,
                    error_code: error,
                });
            }
            response.topics.push(result);
        }
        if !valid.is_empty() {
            if let Err(e) = shard.commit_offsets(&group, valid).await {
                // The slot moved away while the commit was on its way (or before it was
                // replicated): the client must look the coordinator up again.
                let error = match e {
                    crate::shard::ShardError::NotOwner => code::NOT_COORDINATOR,
                    e => error_code(&e),
                };
                for p in response
                    .topics
                    .iter_mut()
                    .flat_map(|t| t.partitions.iter_mut())
                {
                    if p.error_code == code::NONE {
                        p.error_code = error;
                    }
                }
            }
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// One group's committed offsets for OffsetFetch; `topics = None` means all.
    async fn fetch_group_offsets(
        &self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedTopics, i16> {
        if !self.coordinates(group) {
            return Err(code::NOT_COORDINATOR);
        }
        let shard = self.shard();
        let Some(topics) = topics else {
            let all = shard.group_committed(group).map_err(|e| error_code(&e))?;
            let mut out: FetchedTopics = Vec::new();
            for position in all {
                let (topic, partition, committed) =
                    (position.topic, position.partition, position.committed);
                let entry = (partition, committed.offset, committed.metadata, code::NONE);
                match out.last_mut() {
                    Some((name, parts)) if *name == topic => parts.push(entry),
                    _ => out.push((topic, vec![entry])),
                }
            }
            return Ok(out);
        };
        let wanted: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        let found = shard
            .fetch_offsets(group, wanted)
            .await
            .map_err(|e| error_code(&e))?;
        let mut found = found.into_iter();
        Ok(topics
            .into_iter()
            .map(|(topic, partitions)| {
                let parts = partitions
                    .into_iter()
                    .map(|p| match found.next().flatten() {
                        Some(Committed { offset, metadata }) => (p, offset, metadata, code::NONE),
                        None => (p, -1, String::new(), code::NONE),
                    })
                    .collect();
                (topic, parts)
            })
            .collect())
    }

    pub(super) async fn offset_fetch(
        &mut self,
        meta: &RequestMeta,
        request: OffsetFetchRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = OffsetFetchResponse::default();
        if meta.version >= 8 {
            for group in request.groups {
                let topics = group.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let mut result = OffsetFetchResponseGroup {
                    group_id: group.group_id.clone(),
                    ..Default::default()
                };
                match self.fetch_group_offsets(&group.group_id, topics).await {
                    Ok(found) => {
                        result.topics = found
                            .into_iter()
                            .map(|(name, parts)| OffsetFetchResponseTopics {
                                name,
                                partitions: parts
                                    .into_iter()
                                    .map(|(p, offset, metadata, error_code)| {
                                        OffsetFetchResponsePartitions {
                                            partition_index: p,
                                            committed_offset: offset,
                                            committed_leader_epoch: -1,
                                            metadata: Some(metadata),
                                            error_code,
                                        }
                                    })
                                    .collect(),
                            })
                            .collect();
                    }
                    Err(error) => result.error_code = error,
                }
                response.groups.push(result);
            }
        } else {
            let requested: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let fallback = requested.clone().unwrap_or_default();
            match self.fetch_group_offsets(&request.group_id, requested).await {
                Ok(found) => {
                    response.topics = found
                        .into_iter()
                        .map(|(name, parts)| OffsetFetchResponseTopic {
                            name,
                            partitions: parts
                                .into_iter()
                                .map(|(p, offset, metadata, error_code)| {
                                    OffsetFetchResponsePartition {
                                        partition_index: p,
                                        committed_offset: offset,
                                        committed_leader_epoch: -1,
                                        metadata: Some(metadata),
                                        error_code,
                                    }
                                })
                                .collect(),
                        })
                        .collect();
                }
                Err(error) => {
                    response.error_code = error;
                    // v1 has no top-level error: report it on every partition.
                    response.topics = fallback
                        .into_iter()
                        .map(|(name, parts)| OffsetFetchResponseTopic {
                            name,
                            partitions: parts
                                .into_iter()
                                .map(|p| OffsetFetchResponsePartition {
                                    partition_index: p,
                                    committed_offset: -1,
                                    committed_leader_epoch: -1,
                                    metadata: Some(String::new()),
                                    error_code: error,
                                })
                                .collect(),
                        })
                        .collect();
                }
            }
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn describe_groups(
        &mut self,
        meta: &RequestMeta,
        request: DescribeGroupsRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = DescribeGroupsResponse::default();
        for group in request.groups {
            let mut described = DescribedGroup {
                group_id: group.clone(),
                authorized_operations: i32::MIN,
                ..Default::default()
            };
            if !self.coordinates(&group) {
                described.error_code = code::NOT_COORDINATOR;
            } else {
                let d = self.shard().groups.describe(&group);
                described.group_state = d.state.as_str().into();
                // A group known only by its committed offsets is Empty, as in Kafka.
                if d.state == GroupState::Dead
                    && self.shard().group_has_positions(&group).unwrap_or(false)
                {
                    described.group_state = GroupState::Empty.as_str().into();
                }
                described.protocol_type = d.protocol_type;
                described.protocol_data = d.protocol_name;
                described.members = d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: Bytes::from(m.metadata),
                        member_assignment: Bytes::from(m.assignment),
                    })
                    .collect();
            }
            response.groups.push(described);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn list_groups(
        &mut self,
        meta: &RequestMeta,
        request: ListGroupsRequest,
    ) -> Result<(), KafkaConnError> {
        let groups = self
            .shard()
            .groups
            .list()
            .into_iter()
            .filter(|g| {
                request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.as_str()))
            })
            .map(|g| ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.state.as_str().into(),
                group_type: "classic".into(),
            })
            .collect::<Vec<_>>();
        // Groups that exist only through their committed offsets are Empty, as in Kafka.
        let wants_empty = request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case("Empty"));
        let mut groups = groups;
        if wants_empty {
            let known: std::collections::HashSet<String> =
                groups.iter().map(|g| g.group_id.clone()).collect();
            for group in self.shard().groups_with_positions() {
                if !known.contains(&group) {
                    groups.push(ListedGroup {
                        group_id: group,
                        protocol_type: String::new(),
                        group_state: "Empty".into(),
                        group_type: "classic".into(),
                    });
                }
            }
        }
        let response = ListGroupsResponse {
            groups,
            ..Default::default()
        };
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn delete_groups(
        &mut self,
        meta: &RequestMeta,
        request: DeleteGroupsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = DeleteGroupsResponse::default();
        for group in request.groups_names {
            let error_code = if !self.coordinates(&group) {
                code::NOT_COORDINATOR
            } else {
                let described = shard.groups.describe(&group);
                if !described.members.is_empty() {
                    code::NON_EMPTY_GROUP
                } else {
                    match shard.group_has_positions(&group) {
                        Err(e) => error_code(&e),
                        Ok(false) if described.state == GroupState::Dead => {
                            code::GROUP_ID_NOT_FOUND
                        }
                        Ok(_) => match shard.delete_group_positions(&group, None).await {
                            Ok(n) => {
                                shard.groups.forget(|g| g == group);
                                tracing::info!(group, positions = n, "group deleted");
                                code::NONE
                            }
                            Err(e) => error_code(&e),
                        },
                    }
                }
            };
            response.results.push(DeletableGroupResult {
                group_id: group,
                error_code,
            });
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn offset_delete(
        &mut self,
        meta: &RequestMeta,
        request: OffsetDeleteRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let group = request.group_id;
        let mut response = OffsetDeleteResponse::default();
        let group_error = if !self.coordinates(&group) {
            code::NOT_COORDINATOR
        } else {
            match shard.group_has_positions(&group) {
                Err(e) => error_code(&e),
                Ok(false) if shard.groups.describe(&group).state == GroupState::Dead => {
                    code::GROUP_ID_NOT_FOUND
                }
                Ok(_) => code::NONE,
            }
        };
        if group_error != code::NONE {
            response.error_code = group_error;
            return self.respond(meta, |out, v| response.encode(out, v)).await;
        }
        // Topics a live member subscribes to keep their positions (Kafka's rule).
        let subscribed: Vec<String> = shard
            .groups
            .describe(&group)
            .members
            .iter()
            .flat_map(|m| consumer_subscription(&m.metadata))
            .collect();
        let mut doomed = Vec::new();
        for topic in &request.topics {
            let mut result = OffsetDeleteResponseTopic {
                name: topic.name.clone(),
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            let busy = subscribed.contains(&topic.name);
            for p in &topic.partitions {
                let error_code = if busy {
                    code::GROUP_SUBSCRIBED_TO_TOPIC
                } else if !shard.has_topic(&topic.name) {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    doomed.push((topic.name.clone(), p.partition_index));
                    code::NONE
                };
                result.partitions.push(OffsetDeleteResponsePartition {
                    partition_index: p.partition_index,
                    error_code,
                });
            }
            response.topics.push(result);
        }
        if let Err(e) = shard.delete_group_positions(&group, Some(&doomed)).await {
            response.error_code = error_code(&e);
            response.topics.clear();
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}

/// The topics of a consumer-protocol subscription (JoinGroup metadata: version i16, topic
/// count i32, then each topic as i16 length + UTF-8); empty for anything else.
fn consumer_subscription(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let Some(count) = metadata.get(2..6) else {
        return topics;
    };
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let mut rest = &metadata[6..];
    for _ in 0..count.max(0) {
        let Some(len) = rest.get(..2) else { break };
        let len = i16::from_be_bytes([len[0], len[1]]);
        let Ok(len) = usize::try_from(len) else { break };
        let Some(name) = rest.get(2..2 + len) else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
        rest = &rest[2 + len..];
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::consumer_subscription;

    #[test]
    fn subscriptions_parse_and_junk_gives_none() {
        let mut meta = vec![0, 3, 0, 0, 0, 2];
        for topic in ["orders", "logs"] {
            meta.extend_from_slice(&(topic.len() as i16).to_be_bytes());
            meta.extend_from_slice(topic.as_bytes());
        }
        meta.extend_from_slice(&[0, 0, 0, 0]); // user data and more, ignored
        assert_eq!(consumer_subscription(&meta), ["orders", "logs"]);
        assert!(consumer_subscription(&[1, 2, 3]).is_empty());
        assert_eq!(
            consumer_subscription(&meta[..14]),
            ["orders"],
            "a torn second topic"
        );
        assert!(consumer_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_empty());
    }
}
