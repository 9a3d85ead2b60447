//! Cluster administration over the Kafka protocol: DescribeCluster and ElectLeaders.

use super::admin::{controller_id, CLUSTER_ID};
use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use tidelog_wire::kafka::generated::{
    describe_cluster_request::DescribeClusterRequest,
    describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse},
    elect_leaders_request::ElectLeadersRequest,
    elect_leaders_response::{ElectLeadersResponse, PartitionResult, ReplicaElectionResult},
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
