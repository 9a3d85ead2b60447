//! Cluster administration over the Kafka protocol: DescribeCluster, ElectLeaders,
//! AlterPartitionReassignments and ListPartitionReassignments.

use super::admin::{controller_id, CLUSTER_ID};
use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::cluster::NodeId;
use crate::shard::ShardError;
use tidelog_wire::kafka::generated::{
    alter_partition_reassignments_request::AlterPartitionReassignmentsRequest,
    alter_partition_reassignments_response::{
        AlterPartitionReassignmentsResponse, ReassignablePartitionResponse,
        ReassignableTopicResponse,
    },
    describe_cluster_request::DescribeClusterRequest,
    describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse},
    elect_leaders_request::ElectLeadersRequest,
    elect_leaders_response::{ElectLeadersResponse, PartitionResult, ReplicaElectionResult},
    list_partition_reassignments_request::ListPartitionReassignmentsRequest,
    list_partition_reassignments_response::{
        ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
    },
};

/// DescribeCluster's `endpoint_type` for brokers (2 is controllers).
const BROKER_ENDPOINTS: i8 = 1;
/// ElectLeaders' `election_type` for the preferred replica (1 is unclean).
const PREFERRED: i8 = 0;
/// "Authorized operations not asked for."
const OPERATIONS_OMITTED: i32 = i32::MIN;

impl KafkaConnection {
    /// The brokers and the controller, as Metadata lists them.
    pub(super) async fn describe_cluster(
        &mut self,
        meta: &RequestMeta,
        request: DescribeClusterRequest,
    ) -> Result<(), KafkaConnError> {
        let view = self.shard().view();
        let mut response = DescribeClusterResponse {
            endpoint_type: request.endpoint_type,
            cluster_id: CLUSTER_ID.into(),
            controller_id: controller_id(view.as_deref()),
            cluster_authorized_operations: OPERATIONS_OMITTED,
            ..Default::default()
        };
        if meta.version >= 1 && request.endpoint_type != BROKER_ENDPOINTS {
            // Tidelog's nodes run their metadata quorum themselves and have no separate
            // controller endpoints to describe; a Kafka broker answers the same.
            response.error_code = code::MISMATCHED_ENDPOINT_TYPE;
            response.error_message = Some("this endpoint describes brokers only".into());
        } else {
            response.brokers = self
                .brokers(view.as_deref())
                .into_iter()
                .map(|(broker_id, host, port)| DescribeClusterBroker {
                    broker_id,
                    host,
                    port,
                    rack: None,
                })
                .collect();
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// Preferred-leader elections: each named partition (every partition when none are
    /// named) gets its first replica back as leader where that replica is a live in-sync
    /// replica. Unclean elections (type 1) are refused: they elect a replica that may lack
    /// acknowledged records.
    pub(super) async fn elect_leaders(
        &mut self,
        meta: &RequestMeta,
        request: ElectLeadersRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let wanted: Vec<(String, Vec<i32>)> = match request.topic_partitions {
            Some(topics) => topics
                .into_iter()
                .map(|t| (t.topic, t.partitions))
                .collect(),
            None => shard
                .topics()
                .iter()
                .map(|(name, config)| {
                    let n = i32::try_from(config.partitions).unwrap_or(i32::MAX);
                    (name.clone(), (0..n).collect())
                })
                .collect(),
        };
        let unclean = meta.version >= 1 && request.election_type != PREFERRED;
        let mut response = ElectLeadersResponse::default();
        for (topic, partitions) in wanted {
            let mut result = ReplicaElectionResult {
                topic: topic.clone(),
                partition_result: Vec::with_capacity(partitions.len()),
            };
            for partition_id in partitions {
                let outcome = match u32::try_from(partition_id) {
                    _ if unclean => Err((
                        code::INVALID_REQUEST,
                        "unclean elections can lose acknowledged records; Tidelog elects \
                         only in-sync replicas"
                            .to_owned(),
                    )),
                    Err(_) => Err((
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        "no such partition".to_owned(),
                    )),
                    Ok(p) => shard
                        .elect_preferred(&topic, p)
                        .await
                        .map_err(|e| (error_code(&e), e.to_string())),
                };
                let (error_code, error_message) = match outcome {
                    Ok(()) => (0, None),
                    Err((code, message)) => (code, Some(message)),
                };
                result.partition_result.push(PartitionResult {
                    partition_id,
                    error_code,
                    error_message,
                });
            }
            response.replica_election_results.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}

/// The node of a Kafka broker id as Metadata lists them (`node * SHARDS_MAX + shard`; any
/// shard of a node names the node: a partition lives on the shard it hashes to).
fn node_of_broker(broker: i32) -> Result<NodeId, ShardError> {
    let id = u64::try_from(broker).map_err(|_| {
        ShardError::InvalidReplicaAssignment(format!("broker id {broker} is negative"))
    })?;
    let node = id / crate::limits::SHARDS_MAX as u64;
    if node == 0 {
        return Err(ShardError::InvalidReplicaAssignment(format!(
            "broker id {broker} names no node (broker ids are node * {} + shard, as Metadata \
             lists them)",
            crate::limits::SHARDS_MAX
        )));
    }
    Ok(node)
}

impl KafkaConnection {
    /// Moves partitions' replicas (or cancels a move, with null replicas): each named
    /// partition gets its own result; a move is accepted once the metadata committed it,
    /// and completes when every new replica has caught up (ListPartitionReassignments shows
    /// it until then).
    pub(super) async fn alter_partition_reassignments(
        &mut self,
        meta: &RequestMeta,
        request: AlterPartitionReassignmentsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = AlterPartitionReassignmentsResponse::default();
        for topic in request.topics {
            let mut result = ReassignableTopicResponse {
                name: topic.name.clone(),
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            for p in topic.partitions {
                let outcome = async {
                    let partition = u32::try_from(p.partition_index)
                        .map_err(|_| ShardError::UnknownTopicOrPartition)?;
                    let target = match p.replicas {
                        None => None,
                        Some(ids) => Some(
                            ids.into_iter()
                                .map(node_of_broker)
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                    };
                    shard.reassign(&topic.name, partition, target).await
                }
                .await;
                let (error_code, error_message) = match outcome {
                    Ok(()) => (code::NONE, None),
                    Err(e) => (error_code(&e), Some(e.to_string())),
                };
                result.partitions.push(ReassignablePartitionResponse {
                    partition_index: p.partition_index,
                    error_code,
                    error_message,
                });
            }
            response.responses.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// The reassignments under way (of the named partitions, or all): each partition's
    /// replicas, and which of them are being added and removed, as broker ids.
    pub(super) async fn list_partition_reassignments(
        &mut self,
        meta: &RequestMeta,
        request: ListPartitionReassignmentsRequest,
    ) -> Result<(), KafkaConnError> {
        let view = self.shard().view();
        let mut response = ListPartitionReassignmentsResponse::default();
        if let Some(view) = view.as_deref() {
            let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
                Some(topics) => topics
                    .into_iter()
                    .map(|t| (t.name, Some(t.partition_indexes)))
                    .collect(),
                None => view
                    .state
                    .topics
                    .keys()
                    .map(|name| (name.clone(), None))
                    .collect(),
            };
            for (name, indexes) in wanted {
                let Some(topic) = view.state.topics.get(&name) else {
                    continue;
                };
                let broker = |p: u32, n: &NodeId| {
                    view.state.nodes.get(n).map_or(-1, |info| {
                        let s = crate::meta::shard_for(&name, p, info.shards());
                        crate::cluster::kafka_broker_id(*n, s)
                    })
                };
                let mut ongoing = OngoingTopicReassignment {
                    name: name.clone(),
                    partitions: Vec::new(),
                };
                for (p, part) in topic.partitions.iter().enumerate() {
                    let index = i32::try_from(p).unwrap_or(i32::MAX);
                    let asked = indexes.as_ref().is_none_or(|list| list.contains(&index));
                    if !asked || !part.reassigning() {
                        continue;
                    }
                    let ids =
                        |nodes: &[NodeId]| nodes.iter().map(|n| broker(p as u32, n)).collect();
                    ongoing.partitions.push(OngoingPartitionReassignment {
                        partition_index: index,
                        replicas: ids(&part.replicas),
                        adding_replicas: ids(&part.adding),
                        removing_replicas: ids(&part.removing),
                    });
                }
                if !ongoing.partitions.is_empty() {
                    response.topics.push(ongoing);
                }
            }
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}
